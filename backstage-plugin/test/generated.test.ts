/**
 * The client's generated files are what scripts/generate-client.ts makes of the committed OpenAPI document now: a
 * document regenerated from the portal without regenerating the types fails here (the portal's own test,
 * tests/portal/api/test_openapi_document.py, fails when the document is older than the portal).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { DOCUMENT, REGENERATE, RULES, TYPES, generate } from '../scripts/generate-client';

describe('the client generated from the portal OpenAPI document', () => {
  it('is not stale: regenerating from openapi.json gives the committed types and input rules', async () => {
    // Regenerated into a temporary directory, kept when they differ so that the difference can be read.
    const dir = mkdtempSync(join(tmpdir(), 'genai-portal-generated-'));
    const { types, rules } = await generate();
    for (const [committed, text] of [[TYPES, types], [RULES, rules]] as const) {
      const regenerated = join(dir, basename(committed));
      writeFileSync(regenerated, text);
      assert.ok(
        readFileSync(committed, 'utf8') === readFileSync(regenerated, 'utf8'),
        `${relative(process.cwd(), committed)} is stale: it differs from what openapi.json generates now ` +
          `(diff it with ${regenerated}). Run ${REGENERATE}, and commit.`,
      );
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('fails when the document changes under the committed files', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'genai-portal-document-'));
    try {
      const document = JSON.parse(readFileSync(DOCUMENT, 'utf8'));
      document.components.schemas.DeploymentCreateInputRequest.properties.name.pattern = '^[a-z0-9]+$';
      const changed = join(dir, 'openapi.json');
      writeFileSync(changed, JSON.stringify(document));
      const { rules } = await generate(changed);
      assert.notEqual(rules, readFileSync(RULES, 'utf8'));
      assert.match(rules, /"pattern": "\^\[a-z0-9\]\+\$"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
