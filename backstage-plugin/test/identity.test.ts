/** Whom the actions act for: the task's user, and only while the task runs with that user's credentials. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { makeContext } from './support/context';
import { run, startPortalAndActions } from './support/setup';

describe('identity of a task (all actions)', () => {
  let env: Awaited<ReturnType<typeof startPortalAndActions>>;
  before(async () => {
    env = await startPortalAndActions({ readyAfterPolls: 1 });
    env.portal.addTeam('ml', { 'user:default/jane': 'admin', 'user:default/bob': 'admin' });
  });
  after(async () => env.portal.stop());

  const cases: Array<[string, Record<string, unknown>]> = [
    ['genai-portal:team:onboard', { team: 'ml', displayName: 'ML' }],
    ['genai-portal:deployment:plan', { team: 'ml', model: 'qwen2-5-7b-instruct' }],
    ['genai-portal:deployment:create', { team: 'ml', model: 'qwen2-5-7b-instruct', name: 'who', pollIntervalSeconds: 0.05 }],
    ['genai-portal:deployment:delete', { team: 'ml', name: 'who' }],
    ['genai-portal:credential:create', { team: 'ml', name: 'who' }],
    ['genai-portal:quota:request', { team: 'ml', acceleratorType: 'nvidia-l4', gpus: 4, reason: 'who' }],
  ];

  for (const [id, input] of cases) {
    it(`${id}: a retry by another user (creator's ctx.user, retrier's credentials) is refused before any request`, async () => {
      const count = env.portal.requests.length;
      await assert.rejects(run(env.actions[id], makeContext(input, { user: 'user:default/jane', initiator: 'user:default/bob' })), (error: Error) => {
        assert.match(error.message, /created by user:default\/jane but is now being run by user:default\/bob/);
        assert.match(error.message, /only user:default\/jane may retry it/);
        return true;
      });
      assert.equal(env.portal.requests.length, count);
    });
  }

  it('a task now run by a service principal (or with no initiator credentials) is refused too', async () => {
    const count = env.portal.requests.length;
    const action = env.actions['genai-portal:deployment:create'];
    const input = { team: 'ml', model: 'qwen2-5-7b-instruct', name: 'svc', waitForReady: false };
    await assert.rejects(run(action, makeContext(input, { initiator: { type: 'service', subject: 'external:ci' } })), /is now being run by a principal that is not a user/);
    await assert.rejects(run(action, makeContext(input, { initiator: { type: 'none' } })), /is now being run by a principal that is not a user/);
    assert.equal(env.portal.requests.length, count);
  });

  it('the creator retrying (same user ref, any case) acts as before', async () => {
    const ctx = makeContext({ team: 'ml', model: 'qwen2-5-7b-instruct', name: 'mine', waitForReady: false }, { user: 'user:default/jane', initiator: 'user:default/Jane' });
    await run(env.actions['genai-portal:deployment:create'], ctx);
    assert.equal(ctx.outputs.name, 'mine');
    assert.equal(env.portal.posts('/api/v1/teams/ml/deployments').at(-1)?.headers['x-backstage-user'], 'user:default/jane');
  });
});
