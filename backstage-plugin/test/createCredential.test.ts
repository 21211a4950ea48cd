import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { makeContext } from './support/context';
import { run, startPortalAndActions } from './support/setup';

describe('genai-portal:credential:create', () => {
  let env: Awaited<ReturnType<typeof startPortalAndActions>>;
  before(async () => {
    env = await startPortalAndActions();
    env.portal.addTeam('ml', { 'user:default/jane': 'developer' }, 'group:default/ml');
  });
  after(async () => env.portal.stop());
  const action = () => env.actions['genai-portal:credential:create'];

  it('asks for reveal-link delivery and outputs the link, never the key', async () => {
    const ctx = makeContext({ team: 'group:default/ml', name: 'my-app', allowedModels: ['resource:default/qwen2-5-7b-instruct'], expiresAt: '2027-01-01T00:00:00Z' });
    await run(action(), ctx);
    const [post] = env.portal.posts('/api/v1/teams/ml/credentials');
    assert.deepEqual(post.body, { name: 'my-app', allowed_models: ['qwen2-5-7b-instruct'], expires_at: '2027-01-01T00:00:00Z', delivery: 'reveal_link' });
    assert.equal(post.headers['idempotency-key'], 'backstage:task-1:step-1:credential.create.ml.my-app');
    const credential = env.portal.credentials[0];
    assert.equal(ctx.outputs.credentialId, '1');
    assert.equal(ctx.outputs.keyPrefix, credential.key.slice(0, 14));
    assert.equal(ctx.outputs.revealUrl, `https://portal.example.com/reveal/${credential.revealToken}`);
    assert.ok(ctx.outputs.revealExpiresAt);
    const everything = JSON.stringify({ outputs: ctx.outputs, logs: ctx.logs, checkpoints: [...ctx.checkpoints.values()] });
    assert.ok(!everything.includes(credential.key), 'the key must never reach outputs, logs or checkpoints');
    assert.ok(!everything.includes(credential.key.slice(14)), 'not even its secret part');
    // The link works once, for the same user only.
    const reveal = (user: string) =>
      fetch(`${env.portal.url}/reveal/${credential.revealToken}`, { headers: { Authorization: `Bearer ${env.portal.token}`, 'X-Backstage-User': user } });
    assert.equal((await reveal('user:default/bob')).status, 404);
    assert.equal(((await (await reveal('user:default/jane')).json()) as any).key, credential.key);
    assert.equal((await reveal('user:default/jane')).status, 404);
  });

  it('never copies unexpected fields of the answer, even a key the portal should not have sent', async () => {
    const { PortalClient } = await import('../plugins/genai-portal-node/src/portalClient');
    const { createCredentialAction } = await import('../plugins/scaffolder-backend-module-genai-portal/src/actions/createCredential');
    const leaky: typeof fetch = async () =>
      new Response(JSON.stringify({ id: 7, name: 'k', key: 'sk-LEAKED-SECRET', key_prefix: 'sk-abc', reveal_url: 'https://p/reveal/x', reveal_expires_at: 'soon' }), {
        status: 201,
        headers: { 'Content-Type': 'application/json' },
      });
    const action = createCredentialAction({ client: new PortalClient({ baseUrl: 'https://p', token: 't', fetchImpl: leaky }) });
    const ctx = makeContext({ team: 'ml', name: 'k' });
    await run(action, ctx);
    assert.ok(!JSON.stringify({ o: ctx.outputs, l: ctx.logs, c: [...ctx.checkpoints.values()] }).includes('LEAKED'));
    assert.equal(ctx.outputs.revealUrl, 'https://p/reveal/x');
  });

  it('refuses an answer without a reveal link', async () => {
    const { PortalClient } = await import('../plugins/genai-portal-node/src/portalClient');
    const { createCredentialAction } = await import('../plugins/scaffolder-backend-module-genai-portal/src/actions/createCredential');
    const plain: typeof fetch = async () => new Response(JSON.stringify({ id: 7, name: 'k', key: 'sk-PLAIN' }), { status: 201 });
    const action = createCredentialAction({ client: new PortalClient({ baseUrl: 'https://p', token: 't', fetchImpl: plain }) });
    const ctx = makeContext({ team: 'ml', name: 'k' });
    await assert.rejects(run(action, ctx), /did not answer with a reveal link/);
    assert.ok(!JSON.stringify({ o: ctx.outputs, l: ctx.logs }).includes('sk-PLAIN'));
  });

  it('retries create one key: checkpoint first, then the Idempotency-Key replay', async () => {
    const before = env.portal.credentials.length;
    const checkpoints = new Map();
    const input = { team: 'ml', name: 'retry-key' };
    const first = makeContext(input, { taskId: 'k', checkpoints });
    await run(action(), first);
    await run(action(), makeContext(input, { taskId: 'k', checkpoints }));
    const lost = makeContext(input, { taskId: 'k' });
    await run(action(), lost);
    assert.equal(env.portal.credentials.length - before, 1);
    assert.equal(lost.outputs.revealUrl, first.outputs.revealUrl);
  });

  it('refuses without a user; dry run creates nothing', async () => {
    const count = env.portal.credentials.length;
    await assert.rejects(run(action(), makeContext({ team: 'ml', name: 'x' }, { user: null })), /has none/);
    const ctx = makeContext({ team: 'ml', name: 'x' }, { isDryRun: true });
    await run(action(), ctx);
    assert.equal(env.portal.credentials.length, count);
    assert.equal(ctx.outputs.revealUrl, '');
  });

  it('declares the key name pattern and the datetime format', () => {
    const schema = action().schema?.input as any;
    assert.equal(schema.properties.expiresAt.format, 'date-time');
    assert.deepEqual([...schema.required].sort(), ['name', 'team']);
  });

  it('rewrites the link to the public URL only when it points at the portal it called', async () => {
    const { publicRevealUrl } = await import('../plugins/scaffolder-backend-module-genai-portal/src/actions/createCredential');
    assert.equal(publicRevealUrl('http://portal.internal:8000/api/v1/credential-reveals/abc', 'http://portal.internal:8000', 'https://genai.example.com/'), 'https://genai.example.com/api/v1/credential-reveals/abc');
    assert.equal(publicRevealUrl('https://elsewhere.example.com/r/abc', 'http://portal.internal:8000', 'https://genai.example.com'), 'https://elsewhere.example.com/r/abc');
    assert.equal(publicRevealUrl('http://portal.internal:8000/r/abc', 'http://portal.internal:8000'), 'http://portal.internal:8000/r/abc');
  });
});
