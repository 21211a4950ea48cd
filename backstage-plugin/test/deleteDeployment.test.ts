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

  it('waiting for the deletion survives a few failed status reads (back-off), and says where to watch when they last', async () => {
    await create('flaky');
    env.portal.failStatusReads = 2;
    const ctx = makeContext({ team: 'ml', name: 'flaky', waitForDeletion: true, pollIntervalSeconds: 0.05 });
    await run(action(), ctx);
    assert.equal(ctx.outputs.deleted, true);
    const warnings = ctx.logs.filter(line => line.level === 'warn').map(line => line.message);
    assert.equal(warnings.length, 2, warnings.join('\n'));
    assert.match(warnings[0], /Could not read deployment 'flaky' \(attempt 1: .*HTTP 503.*\); trying again in 0\.1 s\. The deletion goes on in the portal meanwhile\./);

    await create('outage');
    env.portal.failStatusReads = 1000;
    try {
      await assert.rejects(
        run(action(), makeContext({ team: 'ml', name: 'outage', waitForDeletion: true, timeoutSeconds: 1, pollIntervalSeconds: 0.05 }, { taskId: 'outage' })),
        /Stopped waiting for deployment 'outage' of team 'ml' to be deleted: the last \d+ status read\(s\) failed .*The deletion goes on in the portal; watch it at https:\/\/portal\.example\.com\/console\/teams\/ml\/deployments\/outage\//s,
      );
    } finally {
      env.portal.failStatusReads = 0;
    }
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
  it('with the user token forwarded: waits are capped at 3600 s, and a token expiring mid-wait says the deletion continues', async () => {
    const forwarding = await startPortalAndActions({ forwardUserToken: true });
    forwarding.portal.addTeam('ml', { 'user:default/jane': 'admin' });
    const secrets = { backstageToken: 'eyJ.user.token' };
    try {
      const del = forwarding.actions['genai-portal:deployment:delete'];
      assert.equal((del.schema?.input as any).properties.timeoutSeconds.maximum, 3600);
      await assert.rejects(run(del, makeContext({ team: 'ml', name: 'x', waitForDeletion: true, timeoutSeconds: 7200 }, { secrets })), /timeoutSeconds \(7200\) exceeds 3600 s/);
      await run(forwarding.actions['genai-portal:deployment:create'], makeContext({ team: 'ml', model: 'qwen2-5-7b-instruct', name: 'slow-delete', waitForReady: false }, { secrets, taskId: 'c' }));
      forwarding.portal.expireUserTokenAfterPolls = 0;
      await assert.rejects(
        run(del, makeContext({ team: 'ml', name: 'slow-delete', waitForDeletion: true, pollIntervalSeconds: 0.05 }, { secrets })),
        /Stopped waiting for deployment 'slow-delete' of team 'ml' to be deleted: the Backstage user token forwarded to the GenAI portal expired.*continues in the portal; watch it at https:\/\/portal\.example\.com\/console\/teams\/ml\/deployments\/slow-delete\//s,
      );
    } finally {
      await forwarding.portal.stop();
    }
  });
});
