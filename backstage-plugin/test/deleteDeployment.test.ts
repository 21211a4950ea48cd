import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { makeContext } from './support/context';
import { run, startPortalAndActions } from './support/setup';

describe('genai-portal:deployment:delete', () => {
  let env: Awaited<ReturnType<typeof startPortalAndActions>>;
  before(async () => {
    env = await startPortalAndActions();
    env.portal.addTeam('ml', { 'user:default/jane': 'developer' }, 'group:default/ml');
  });
  after(async () => env.portal.stop());
  const action = () => env.actions['genai-portal:deployment:delete'];
  const create = async (name: string) =>
    run(env.actions['genai-portal:deployment:create'], makeContext({ team: 'ml', model: 'qwen2-5-7b-instruct', name, waitForReady: false }, { taskId: `c-${name}` }));

  it('deletes and waits until it is gone', async () => {
    await create('gone');
    const ctx = makeContext({ team: 'group:default/ml', name: 'gone', waitForDeletion: true, pollIntervalSeconds: 0.1 });
    await run(action(), ctx);
    assert.deepEqual(ctx.outputs, { team: 'ml', name: 'gone', deleted: true });
    assert.equal(env.portal.requests.filter(r => r.method === 'DELETE').length, 1);
    assert.ok(!env.portal.deployments.has('ml/gone'));
    assert.ok(ctx.logs.some(l => /is gone/.test(l.message)));
  });

  it('is a no-op for a deployment that does not exist, and a retry does not delete again', async () => {
    const checkpoints = new Map();
    const ctx = makeContext({ team: 'ml', name: 'missing' }, { checkpoints });
    await run(action(), ctx);
    assert.equal(ctx.outputs.deleted, false);
    await create('once');
    const deletes = () => env.portal.requests.filter(r => r.method === 'DELETE' && r.path.endsWith('/once')).length;
    const retry = new Map();
    await run(action(), makeContext({ team: 'ml', name: 'once' }, { checkpoints: retry, taskId: 'd' }));
    await run(action(), makeContext({ team: 'ml', name: 'once' }, { checkpoints: retry, taskId: 'd' }));
    assert.equal(deletes(), 1);
  });

  it('a team the user is not in reads as not found', async () => {
    await assert.rejects(run(action(), makeContext({ team: 'elsewhere', name: 'x' })), /HTTP 404\) \[team_not_found\]/);
  });

  it('refuses without a user and does nothing in a dry run', async () => {
    const count = env.portal.requests.length;
    await assert.rejects(run(action(), makeContext({ team: 'ml', name: 'x' }, { user: null })), /refusing to call the GenAI portal/);
    const ctx = makeContext({ team: 'ml', name: 'x' }, { isDryRun: true });
    await run(action(), ctx);
    assert.equal(env.portal.requests.length, count);
    assert.equal(ctx.outputs.deleted, false);
  });
});
