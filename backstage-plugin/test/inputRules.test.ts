/**
 * The plugin checks what the portal checks, from the portal's OpenAPI document: the actions' inputs and the templates'
 * parameters that are sent to the portal carry the document's patterns, lengths and ranges. A deployment name with a
 * leading digit, which the portal refuses (KServe names an InferenceService with a DNS-1035 label), is refused here.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fieldRule, PortalClient } from '../plugins/genai-portal-node/src';
import type { FieldRule } from '../plugins/genai-portal-node/src';
import { createGenaiPortalActions } from '../plugins/scaffolder-backend-module-genai-portal/src/module';
import { loadTemplate } from './support/templates';

const DOCUMENT = JSON.parse(readFileSync(join(__dirname, '..', 'plugins', 'genai-portal-node', 'openapi.json'), 'utf8'));
const actions = Object.fromEntries(
  createGenaiPortalActions({ client: new PortalClient({ baseUrl: 'http://portal.invalid', token: 't' }) }).map(action => [action.id, action]),
);

/** Action input -> the request field of the portal it is sent as. */
const SENT_AS: Array<[action: string, input: string, schema: string, field: string]> = [
  ['genai-portal:deployment:create', 'name', 'DeploymentCreateInputRequest', 'name'],
  ['genai-portal:deployment:create', 'minReplicas', 'DeploymentCreateInputRequest', 'min_replicas'],
  ['genai-portal:deployment:create', 'maxReplicas', 'DeploymentCreateInputRequest', 'max_replicas'],
  ['genai-portal:deployment:delete', 'name', 'DeploymentCreateInputRequest', 'name'],
  ['genai-portal:deployment:plan', 'gpusPerReplica', 'FitInputRequest', 'gpus_per_replica'],
  ['genai-portal:deployment:plan', 'contextLength', 'FitInputRequest', 'context_length'],
  ['genai-portal:deployment:plan', 'concurrency', 'FitInputRequest', 'concurrency'],
  ['genai-portal:team:onboard', 'team', 'TeamCreateInputRequest', 'slug'],
  ['genai-portal:team:onboard', 'displayName', 'TeamCreateInputRequest', 'display_name'],
  ['genai-portal:team:onboard', 'description', 'TeamCreateInputRequest', 'description'],
  ['genai-portal:team:onboard', 'costCenter', 'TeamCreateInputRequest', 'cost_center'],
  ['genai-portal:credential:create', 'name', 'CredentialCreateInputRequest', 'name'],
  ['genai-portal:quota:request', 'reason', 'QuotaRequestCreateInputRequest', 'reason'],
  ['genai-portal:quota:request', 'maxDeployments', 'QuotaRequestCreateInputRequest', 'max_deployments'],
];

/** The document's own statement of a request field (not the generated rules: they are what is under test). */
function documented(schema: string, field: string): FieldRule {
  const property = DOCUMENT.components.schemas[schema].properties[field];
  assert.ok(property, `${schema}.${field} is in the document`);
  const { minLength, maxLength, pattern, minimum, maximum } = property;
  return Object.fromEntries(Object.entries({ minLength, maxLength, pattern, minimum, maximum }).filter(([, value]) => value !== undefined));
}

/** The same keys of an action input's JSON schema (zod's min/max on a string become minLength/maxLength). */
function stated(property: Record<string, unknown>): FieldRule {
  const { minLength, maxLength, pattern, minimum, maximum } = property as FieldRule;
  return Object.fromEntries(Object.entries({ minLength, maxLength, pattern, minimum, maximum }).filter(([, value]) => value !== undefined));
}

function inputProperty(actionId: string, input: string): Record<string, unknown> {
  const property = (actions[actionId].schema?.input as any)?.properties?.[input];
  assert.ok(property, `${actionId} has the input ${input}`);
  return property;
}

describe("input rules from the portal's OpenAPI document", () => {
  it('a deployment name with a leading digit is refused, as the portal refuses it', () => {
    const rule = fieldRule('DeploymentCreateInputRequest', 'name');
    assert.equal(rule.pattern, '^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$');
    for (const actionId of ['genai-portal:deployment:create', 'genai-portal:deployment:delete']) {
      const pattern = new RegExp(String(inputProperty(actionId, 'name').pattern));
      assert.equal(pattern.test('1llama'), false, `${actionId} refuses a leading digit`);
      assert.equal(pattern.test('llama-3'), true);
      assert.equal(pattern.test('l'), true);
      assert.equal(pattern.test('llama-'), false);
    }
    const template = (loadTemplate('deploy-model.yaml').spec as any).parameters.find((page: any) => page.properties.name).properties.name;
    assert.equal(template.pattern, rule.pattern);
    assert.equal(template.maxLength, rule.maxLength);
  });

  it("every action input sent to the portal carries the document's rules of that field", () => {
    for (const [actionId, input, schema, field] of SENT_AS) {
      assert.deepEqual(stated(inputProperty(actionId, input)), documented(schema, field), `${actionId} ${input} (sent as ${schema}.${field})`);
    }
  });

  it("the templates' parameters sent to the portal state no pattern or length other than the document's", () => {
    const parameters: Array<[template: string, parameter: string, schema: string, field: string]> = [
      ['deploy-model.yaml', 'name', 'DeploymentCreateInputRequest', 'name'],
      ['deploy-model.yaml', 'minReplicas', 'DeploymentCreateInputRequest', 'min_replicas'],
      ['deploy-model.yaml', 'maxReplicas', 'DeploymentCreateInputRequest', 'max_replicas'],
      ['onboard-team.yaml', 'team', 'TeamCreateInputRequest', 'slug'],
      ['onboard-team.yaml', 'displayName', 'TeamCreateInputRequest', 'display_name'],
    ];
    for (const [file, parameter, schema, field] of parameters) {
      const pages = (loadTemplate(file).spec as any).parameters as any[];
      const property = pages.map(page => page.properties?.[parameter]).find(Boolean);
      assert.ok(property, `${file} has the parameter ${parameter}`);
      const rule = documented(schema, field);
      for (const key of ['pattern', 'minimum', 'maximum'] as const) {
        if (property[key] !== undefined || rule[key] !== undefined) {
          assert.equal(property[key], rule[key], `${file} ${parameter}.${key} (sent as ${schema}.${field})`);
        }
      }
      if (property.maxLength !== undefined) {
        assert.ok(rule.maxLength !== undefined && property.maxLength <= rule.maxLength, `${file} ${parameter}.maxLength`);
      }
    }
  });
});
