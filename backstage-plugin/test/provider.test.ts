import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  apiEntityV1alpha1Validator,
  componentEntityV1alpha1Validator,
  Entity,
  EntityPolicies,
  FieldFormatEntityPolicy,
  NoForeignRootFieldsEntityPolicy,
  resourceEntityV1alpha1Validator,
  SchemaValidEntityPolicy,
} from '@backstage/catalog-model';
import { GenaiPortalEntityProvider } from '../plugins/catalog-backend-module-genai-portal/src/provider';
import { entityName, tag } from '../plugins/catalog-backend-module-genai-portal/src/entities';
import { PortalClient } from '../plugins/genai-portal-node/src/portalClient';
import { FakePortal } from './support/fakePortal';
import { makeContext } from './support/context';
import { run, startPortalAndActions } from './support/setup';

const logger: any = { info() {}, warn() {}, error() {}, debug() {}, child: () => logger };

function connection() {
  const mutations: any[] = [];
  return { mutations, applyMutation: async (mutation: any) => void mutations.push(mutation), refresh: async () => {} };
}

const policy = EntityPolicies.allOf([new SchemaValidEntityPolicy(), new FieldFormatEntityPolicy(), new NoForeignRootFieldsEntityPolicy()]);

async function assertValid(entity: Entity): Promise<void> {
  assert.ok(await policy.enforce(entity), `${entity.kind} ${entity.metadata.name} violates the entity policies`);
  const validator = { Resource: resourceEntityV1alpha1Validator, Component: componentEntityV1alpha1Validator, API: apiEntityV1alpha1Validator }[entity.kind];
  assert.ok(validator, `unexpected kind ${entity.kind}`);
  assert.equal(await validator!.check(entity), true, `${entity.kind} ${entity.metadata.name} is not a valid ${entity.kind}`);
}

describe('GenaiPortalEntityProvider', () => {
  let env: Awaited<ReturnType<typeof startPortalAndActions>>;
  let portal: FakePortal;
  before(async () => {
    env = await startPortalAndActions({ readyAfterPolls: 1 });
    portal = env.portal;
    portal.addTeam('ml', { 'user:default/jane': 'admin' }, 'group:default/ml-group');
    portal.addTeam('nolink', { 'user:default/jane': 'admin' });
    for (const [team, name] of [['ml', 'chat'], ['nolink', 'a-very-long-deployment-name-that-is-long-xyz']]) {
      await run(env.actions['genai-portal:deployment:create'], makeContext({ team, model: 'qwen2-5-7b-instruct', name, pollIntervalSeconds: 0.05 }, { taskId: name }));
    }
  });
  after(async () => portal.stop());

  const provider = (conn: any) => {
    const p = new GenaiPortalEntityProvider({
      client: new PortalClient({ baseUrl: portal.url, token: portal.adminToken }),
      logger,
      mapping: { publicUrl: 'https://portal.example.com', namespace: 'default', modelOwner: 'group:default/genai-platform', lifecycle: 'production' },
    });
    return p.connect(conn).then(() => p);
  };

  it('mirrors models as ai-model Resources, deployments as model-server Components with an API (full mutation)', async () => {
    const conn = connection();
    const p = await provider(conn);
    assert.equal(p.getProviderName(), 'genai-portal');
    assert.equal(await p.refresh(), 2 + 2 * 2);
    const [mutation] = conn.mutations;
    assert.equal(mutation.type, 'full');
    const entities: Entity[] = mutation.entities.map((e: any) => e.entity);
    for (const { locationKey } of mutation.entities) assert.equal(locationKey, `genai-portal:${portal.url}`);
    for (const entity of entities) await assertValid(entity);

    const model = entities.find(e => e.kind === 'Resource' && e.metadata.name === 'qwen2-5-7b-instruct')!;
    assert.equal(model.spec?.type, 'ai-model');
    assert.equal(model.spec?.owner, 'group:default/genai-platform');
    assert.deepEqual(model.metadata.tags, ['chat', 'tool-calling', 'self-hosted']);
    assert.equal(model.metadata.annotations?.['genai-portal.dev/url'], 'https://portal.example.com/console/models/qwen2-5-7b-instruct/');
    // The page people open from the entity: the console on the public URL, not the JSON API on the internal one.
    assert.equal(model.metadata.annotations?.['backstage.io/view-url'], 'https://portal.example.com/console/models/qwen2-5-7b-instruct/');
    assert.equal(model.metadata.annotations?.['backstage.io/managed-by-location'], `url:${portal.url}/api/v1/catalog/models/qwen2-5-7b-instruct`);
    // The model carries its sizing: what one replica must hold.
    assert.equal(model.metadata.annotations?.['genai-portal.dev/parameters'], '7615616512');
    assert.equal(model.metadata.annotations?.['genai-portal.dev/weight-dtype'], 'bf16');
    assert.equal(model.metadata.annotations?.['genai-portal.dev/weight-bytes'], '15231233024');
    assert.equal(model.metadata.annotations?.['genai-portal.dev/kv-cache-bytes-per-token'], '57344');
    assert.equal(model.metadata.annotations?.['genai-portal.dev/attention'], 'gqa');
    assert.equal(model.metadata.annotations?.['genai-portal.dev/sizing-version'], 'v1');
    const managed = entities.find(e => e.kind === 'Resource' && e.metadata.name === 'gpt-4o')!;
    assert.equal(managed.metadata.annotations?.['genai-portal.dev/weight-bytes'], undefined);

    const component = entities.find(e => e.kind === 'Component' && e.metadata.name === 'ml.chat')!;
    assert.deepEqual(component.spec, {
      type: 'model-server',
      lifecycle: 'production',
      owner: 'group:default/ml-group',
      dependsOn: ['resource:default/qwen2-5-7b-instruct'],
      providesApis: ['api:default/ml.chat'],
    });
    assert.equal(component.metadata.annotations?.['genai-portal.dev/phase'], 'Ready');
    assert.equal(component.metadata.annotations?.['genai-portal.dev/served-model-name'], 'ml-chat');
    const api = entities.find(e => e.kind === 'API' && e.metadata.name === 'ml.chat')!;
    assert.equal(api.spec?.owner, 'group:default/ml-group');
    const definition = JSON.parse(String(api.spec?.definition));
    assert.equal(definition.servers[0].url, 'http://chat.team-ml.svc.cluster.local/openai/v1');
    assert.deepEqual(definition.paths['/chat/completions'].post.requestBody.content['application/json'].schema.properties.model.enum, ['ml-chat']);

    // A team without a group link owns its deployments as group:<namespace>/<team>; long names stay unique and valid.
    const long = entities.find(e => e.kind === 'Component' && e.metadata.annotations?.['genai-portal.dev/team'] === 'nolink')!;
    assert.equal(long.spec?.owner, 'group:default/nolink');
    assert.ok(long.metadata.name.length <= 63);
  });

  it('a deleted deployment disappears with the next full mutation', async () => {
    const conn = connection();
    const p = await provider(conn);
    await p.refresh();
    portal.deployments.delete('ml/chat');
    await p.refresh();
    const names = (m: any) => m.entities.map((e: any) => `${e.entity.kind}:${e.entity.metadata.name}`);
    assert.ok(names(conn.mutations[0]).includes('Component:ml.chat'));
    assert.ok(!names(conn.mutations[1]).includes('Component:ml.chat'));
    assert.ok(!names(conn.mutations[1]).includes('API:ml.chat'));
  });

  it('a failed read applies no mutation, so the catalog keeps the last mirror', async () => {
    const conn = connection();
    const broken = new GenaiPortalEntityProvider({
      client: new PortalClient({ baseUrl: portal.url, token: 'wrong-token' }),
      logger,
      mapping: { publicUrl: 'https://p', namespace: 'default', modelOwner: 'group:default/x', lifecycle: 'production' },
    });
    await broken.connect(conn as any);
    await assert.rejects(broken.refresh(), /HTTP 401\) \[invalid_token\]/);
    assert.equal(conn.mutations.length, 0);
  });

  it('runs on its schedule through the task runner', async () => {
    const conn = connection();
    let scheduled: { id: string; fn: () => Promise<void> } | undefined;
    const p = new GenaiPortalEntityProvider({
      client: new PortalClient({ baseUrl: portal.url, token: portal.adminToken }),
      logger,
      taskRunner: { run: async (task: any) => void (scheduled = task) },
      mapping: { publicUrl: 'https://p', namespace: 'default', modelOwner: 'group:default/x', lifecycle: 'production' },
    });
    await p.connect(conn as any);
    assert.equal(scheduled?.id, 'genai-portal:refresh');
    await scheduled!.fn();
    assert.equal(conn.mutations.length, 1);
  });

  it('names and tags follow the catalog rules', () => {
    assert.equal(entityName('team', 'chat'), 'team.chat');
    const long = entityName('a'.repeat(40), 'b'.repeat(40));
    assert.equal(long.length, 63);
    assert.notEqual(long, entityName('a'.repeat(40), `${'b'.repeat(39)}c`));
    assert.equal(tag('Tool_Calling'), 'tool-calling');
  });
});
