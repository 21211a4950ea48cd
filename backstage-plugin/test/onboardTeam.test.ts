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
    assert.deepEqual(ctx.outputs, { team: 'ml-team', created: true, role: 'admin', teamUrl: 'https://portal.example.com/console/teams/ml-team/' });
    const [post] = env.portal.posts('/api/v1/teams');
    assert.equal(post.headers['x-backstage-user'], 'user:default/jane');
    assert.equal(post.headers.authorization, `Bearer ${env.portal.token}`);
    assert.equal(post.headers['idempotency-key'], 'backstage:task-1:step-1:team.create.ml-team');
    assert.equal(post.body.backstage_group_ref, 'group:default/ml-team');
    assert.equal(env.portal.teams.get('ml-team')?.members.get('user:default/jane'), 'admin');
  });

  it('a retry of the same step does not post again (checkpoint), and a lost checkpoint is replayed by the portal', async () => {
    const key = 'backstage:task-r:step-1:team.create.retry-team';
    const checkpoints = new Map();
    const input = { team: 'retry-team', displayName: 'Retry', groupRef: 'group:default/retry' };
    const first = makeContext(input, { taskId: 'task-r', checkpoints });
    await run(action(), first);
    const again = makeContext(input, { taskId: 'task-r', checkpoints });
    await run(action(), again);
    assert.deepEqual(env.portal.postKeys.filter(post => post.key === key).map(post => [post.status, post.replayed]), [[201, false]]);
    assert.deepEqual(again.outputs, first.outputs);

    // The scaffolder died after the portal's answer and before storing the checkpoint: the retry posts
    // again with the same Idempotency-Key and gets the portal's replay of the first 201, not a second team.
    const lost = makeContext(input, { taskId: 'task-r' });
    await run(action(), lost);
    assert.deepEqual(env.portal.postKeys.filter(post => post.key === key).map(post => [post.status, post.replayed]), [[201, false], [201, true]]);
    const posts = env.portal.posts('/api/v1/teams').filter(post => post.headers['idempotency-key'] === key);
    assert.deepEqual(posts.map(post => post.body), [posts[0].body, posts[0].body]);
    assert.ok(lost.logs.some(line => /already created this team for an earlier attempt/.test(line.message)));
    assert.deepEqual(lost.outputs, first.outputs);
    assert.deepEqual(first.outputs, { team: 'retry-team', created: true, role: 'admin', teamUrl: 'https://portal.example.com/console/teams/retry-team/' });
    assert.deepEqual([...env.portal.teams.get('retry-team')!.members], [['user:default/jane', 'admin']]);
    assert.equal(env.portal.requests.filter(request => request.method === 'PATCH').length, 0);
  });

  it('confirms an existing team the user administers (the create answers 409, nothing is created)', async () => {
    env.portal.addTeam('existing', { 'user:default/jane': 'admin' });
    const ctx = makeContext({ team: 'existing', displayName: 'Existing' });
    await run(action(), ctx);
    assert.equal(ctx.outputs.created, false);
    assert.deepEqual(env.portal.postKeys.filter(post => post.key === 'backstage:task-1:step-1:team.create.existing').map(post => post.status), [409]);
    assert.equal(env.portal.teams.get('existing')?.display_name, 'existing');
    assert.match(ctx.logs.map(l => l.message).join('\n'), /already exists and user:default\/jane is its admin/);
  });

  it('links an existing team without a group to the requested group (PATCH as its admin)', async () => {
    env.portal.addTeam('unlinked', { 'user:default/jane': 'admin' });
    const ctx = makeContext({ team: 'unlinked', displayName: 'Unlinked', groupRef: 'group:default/Unlinked-Group' });
    await run(action(), ctx);
    assert.equal(ctx.outputs.created, false);
    const patches = env.portal.requests.filter(request => request.method === 'PATCH');
    assert.equal(patches.length, 1);
    assert.equal(patches[0].path, '/api/v1/teams/unlinked');
    assert.deepEqual(patches[0].body, { backstage_group_ref: 'group:default/unlinked-group' });
    assert.equal(patches[0].headers['x-backstage-user'], 'user:default/jane');
    assert.equal(env.portal.teams.get('unlinked')?.backstage_group_ref, 'group:default/unlinked-group');
    assert.ok(ctx.logs.some(line => /Linking team 'unlinked' to the Backstage group group:default\/unlinked-group/.test(line.message)));
    // Already linked to that group: nothing to change.
    await run(action(), makeContext({ team: 'unlinked', displayName: 'Unlinked', groupRef: 'group:Unlinked-Group' }, { taskId: 'again' }));
    assert.equal(env.portal.requests.filter(request => request.method === 'PATCH').length, 1);
  });

  it('refuses an existing team linked to another group, naming both, and changes nothing', async () => {
    env.portal.addTeam('linked', { 'user:default/jane': 'admin' }, 'group:default/old-group');
    const patches = env.portal.requests.filter(request => request.method === 'PATCH').length;
    await assert.rejects(run(action(), makeContext({ team: 'linked', displayName: 'Linked', groupRef: 'group:default/new-group' })), (error: Error) => {
      assert.match(error.message, /Team 'linked' is already linked to the Backstage group group:default\/old-group, not to group:default\/new-group/);
      return true;
    });
    assert.equal(env.portal.requests.filter(request => request.method === 'PATCH').length, patches);
    assert.equal(env.portal.teams.get('linked')?.backstage_group_ref, 'group:default/old-group');
  });

  it('a group already linked to another team is a readable refusal', async () => {
    env.portal.addTeam('holder', { 'user:default/bob': 'admin' }, 'group:default/shared');
    env.portal.addTeam('wants-shared', { 'user:default/jane': 'admin' });
    await assert.rejects(
      run(action(), makeContext({ team: 'wants-shared', displayName: 'W', groupRef: 'group:default/shared' })),
      /Team 'wants-shared' cannot be linked to group:default\/shared: another GenAI portal team is linked to that group/,
    );
    assert.equal(env.portal.teams.get('wants-shared')?.backstage_group_ref, null);
    await assert.rejects(
      run(action(), makeContext({ team: 'brand-new', displayName: 'B', groupRef: 'group:default/shared' })),
      /Another GenAI portal team is already linked to the Backstage group group:default\/shared/,
    );
    assert.ok(!env.portal.teams.has('brand-new'));
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

  it('dry run only reads: created is true for a team it would create, false for one it would confirm', async () => {
    const count = env.portal.requests.length;
    const ctx = makeContext({ team: 'dry', displayName: 'Dry' }, { isDryRun: true });
    await run(action(), ctx);
    assert.deepEqual(env.portal.requests.slice(count).map(request => `${request.method} ${request.path}`), ['GET /api/v1/teams/dry']);
    assert.deepEqual(ctx.outputs, { created: true, role: 'admin', team: 'dry', teamUrl: 'https://portal.example.com/console/teams/dry/' });
    assert.match(ctx.logs[0].message, /^Dry run: would create team 'dry'/);
    assert.equal(env.portal.teams.has('dry'), false);

    env.portal.addTeam('dry-exists', { 'user:default/jane': 'developer' });
    const existing = makeContext({ team: 'dry-exists', displayName: 'Dry' }, { isDryRun: true });
    await run(action(), existing);
    assert.equal(existing.outputs.created, false);
    assert.equal(existing.outputs.role, 'developer');
    assert.match(existing.logs[0].message, /^Dry run: team 'dry-exists' exists and user:default\/jane is its developer; it would be confirmed, not created/);
    assert.ok(env.portal.requests.slice(count).every(request => request.method === 'GET'));
  });
});
