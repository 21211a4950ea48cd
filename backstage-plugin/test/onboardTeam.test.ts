import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { makeContext } from './support/context';
import { run, startPortalAndActions } from './support/setup';

describe('genai-portal:team:onboard', () => {
  let env: Awaited<ReturnType<typeof startPortalAndActions>>;
  before(async () => {
    env = await startPortalAndActions();
  });
  after(async () => env.portal.stop());
  const action = () => env.actions['genai-portal:team:onboard'];

  it('declares its input schema (slug pattern, required fields)', () => {
    const schema = action().schema?.input as any;
    assert.deepEqual([...schema.required].sort(), ['displayName', 'team']);
    assert.equal(schema.properties.team.pattern, '^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$');
  });

  it('creates the team as the user, linked to the group, with an Idempotency-Key', async () => {
    const ctx = makeContext({ team: 'ml-team', displayName: 'ML team', groupRef: 'group:default/ML-Team' }, { user: 'user:default/jane' });
    await run(action(), ctx);
    assert.deepEqual(ctx.outputs, { team: 'ml-team', created: true, role: 'admin', teamUrl: 'https://portal.example.com/api/v1/teams/ml-team' });
    const [post] = env.portal.posts('/api/v1/teams');
    assert.equal(post.headers['x-backstage-user'], 'user:default/jane');
    assert.equal(post.headers.authorization, `Bearer ${env.portal.token}`);
    assert.equal(post.headers['idempotency-key'], 'backstage:task-1:step-1:team.create.ml-team');
    assert.equal(post.body.backstage_group_ref, 'group:default/ml-team');
    assert.equal(env.portal.teams.get('ml-team')?.members.get('user:default/jane'), 'admin');
  });

  it('a retry of the same step does not post again (checkpoint), and a lost checkpoint is replayed by the portal', async () => {
    const before = env.portal.posts('/api/v1/teams').length;
    const checkpoints = new Map();
    const input = { team: 'retry-team', displayName: 'Retry' };
    await run(action(), makeContext(input, { taskId: 'task-r', checkpoints }));
    await run(action(), makeContext(input, { taskId: 'task-r', checkpoints }));
    assert.equal(env.portal.posts('/api/v1/teams').length - before, 1);
    // The scaffolder crashed after the POST and before storing the checkpoint: the team exists now,
    // and the user is its admin, so the action confirms it instead of failing.
    const ctx = makeContext(input, { taskId: 'task-r' });
    await run(action(), ctx);
    assert.equal(ctx.outputs.created, false);
    assert.equal(ctx.outputs.role, 'admin');
  });

  it('confirms an existing team the user administers', async () => {
    env.portal.addTeam('existing', { 'user:default/jane': 'admin' });
    const ctx = makeContext({ team: 'existing', displayName: 'Existing' });
    const before = env.portal.posts('/api/v1/teams').length;
    await run(action(), ctx);
    assert.equal(ctx.outputs.created, false);
    assert.equal(env.portal.posts('/api/v1/teams').length, before);
    assert.match(ctx.logs.map(l => l.message).join('\n'), /already exists and user:default\/jane is its admin/);
  });

  it('refuses when the user is only a developer of the existing team, and checks again on retry', async () => {
    env.portal.addTeam('devs', { 'user:default/jane': 'developer' });
    const checkpoints = new Map();
    await assert.rejects(run(action(), makeContext({ team: 'devs', displayName: 'Devs' }, { checkpoints })), /is its developer, not an admin/);
    env.portal.teams.get('devs')!.members.set('user:default/jane', 'admin');
    const ctx = makeContext({ team: 'devs', displayName: 'Devs' }, { checkpoints });
    await run(action(), ctx);
    assert.equal(ctx.outputs.role, 'admin');
  });

  it("reports a team the user cannot see as taken, readably", async () => {
    env.portal.addTeam('taken', { 'user:default/bob': 'admin' });
    await assert.rejects(run(action(), makeContext({ team: 'taken', displayName: 'T' })), (error: Error) => {
      assert.match(error.message, /Team 'taken' already exists in the GenAI portal and user:default\/jane is not a member/);
      return true;
    });
  });

  it('reports the portal problem details with each field', async () => {
    await assert.rejects(run(action(), makeContext({ team: 'Bad_Slug', displayName: 'x' })), (error: Error) => {
      assert.match(error.message, /The GenAI portal refused POST \/api\/v1\/teams: Invalid input \(HTTP 400\) \[validation_failed\]/);
      assert.match(error.message, /  - slug: must be a DNS-1123 label/);
      return true;
    });
  });

  it('refuses to act without an initiating user, before any request', async () => {
    const count = env.portal.requests.length;
    await assert.rejects(run(action(), makeContext({ team: 'nouser', displayName: 'x' }, { user: null })), /has none/);
    assert.equal(env.portal.requests.length, count);
  });

  it('dry run calls nothing', async () => {
    const count = env.portal.requests.length;
    const ctx = makeContext({ team: 'dry', displayName: 'Dry' }, { isDryRun: true });
    await run(action(), ctx);
    assert.equal(env.portal.requests.length, count);
    assert.equal(ctx.outputs.created, false);
    assert.match(ctx.logs[0].message, /^Dry run: would create team 'dry'/);
  });
});
