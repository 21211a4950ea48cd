import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { makeContext } from './support/context';
import { run, startPortalAndActions } from './support/setup';

describe('genai-portal:deployment:create', () => {
  let env: Awaited<ReturnType<typeof startPortalAndActions>>;
  before(async () => {
    env = await startPortalAndActions({ readyAfterPolls: 3, failingModels: ['gpt-4o'] });
    env.portal.addTeam('ml', { 'user:default/jane': 'developer', 'user:default/vic': 'viewer' }, 'group:default/ml');
  });
  after(async () => env.portal.stop());
  const action = () => env.actions['genai-portal:deployment:create'];
  const base = { team: 'ml', model: 'resource:default/qwen2-5-7b-instruct', pollIntervalSeconds: 0.1 };

  it('deploys, logs progress and waits until Ready; outputs endpoint and served model name', async () => {
    const ctx = makeContext({ ...base, name: 'chat', acceleratorType: 'nvidia-l4' });
    await run(action(), ctx);
    const [post] = env.portal.posts('/api/v1/teams/ml/deployments');
    assert.deepEqual(post.body, { name: 'chat', model: 'qwen2-5-7b-instruct', min_replicas: 1, max_replicas: 1, scale_to_zero: false, accelerator_type: 'nvidia-l4' });
    assert.equal(post.headers['idempotency-key'], 'backstage:task-1:step-1:deployment.create.ml.chat');
    assert.deepEqual(ctx.outputs, {
      team: 'ml',
      name: 'chat',
      model: 'qwen2-5-7b-instruct',
      phase: 'Ready',
      endpoint: 'http://chat.team-ml.svc.cluster.local',
      servedModelName: 'ml-chat',
      deploymentUrl: 'https://portal.example.com/console/teams/ml/deployments/chat/',
    });
    const messages = ctx.logs.map(line => line.message);
    assert.ok(messages.some(m => /is Provisioning: predictor starting/.test(m)), messages.join('\n'));
    assert.ok(messages.some(m => /is Ready at http:\/\/chat/.test(m)));
  });

  it('resolves the team from a Backstage group ref', async () => {
    const ctx = makeContext({ ...base, team: 'group:default/ml', name: 'by-group', waitForReady: false });
    await run(action(), ctx);
    assert.equal(ctx.outputs.team, 'ml');
    await assert.rejects(
      run(action(), makeContext({ ...base, team: 'group:default/other', name: 'x', waitForReady: false })),
      /No GenAI portal team of yours is linked to the Backstage group group:default\/other/,
    );
  });

  it('is idempotent: a retried step never posts twice, a lost checkpoint gets the portal replay', async () => {
    const checkpoints = new Map();
    const input = { ...base, name: 'retry', waitForReady: false };
    await run(action(), makeContext(input, { taskId: 't-retry', checkpoints }));
    await run(action(), makeContext(input, { taskId: 't-retry', checkpoints }));
    const posts = env.portal.posts('/api/v1/teams/ml/deployments').filter(p => p.body.name === 'retry');
    assert.equal(posts.length, 1);
    const lost = makeContext(input, { taskId: 't-retry' });
    await run(action(), lost);
    assert.ok(lost.logs.some(l => /already accepted this deployment for an earlier attempt/.test(l.message)));
    assert.equal([...env.portal.deployments.keys()].filter(k => k === 'ml/retry').length, 1);
  });

  it('a name taken by another deployment is a readable conflict', async () => {
    await assert.rejects(run(action(), makeContext({ ...base, name: 'chat', waitForReady: false }, { taskId: 'other' })), (error: Error) => {
      assert.match(error.message, /Team 'ml' already has a deployment named 'chat'/);
      assert.match(error.message, /HTTP 409\) \[deployment_exists\]/);
      return true;
    });
  });

  it('a retry after a refusal (409 fixed by the user) sends the request again: the portal remembers only 2xx', async () => {
    await run(action(), makeContext({ ...base, name: 'busy', waitForReady: false }, { taskId: 'owner-of-busy' }));
    const checkpoints = new Map();
    const input = { ...base, name: 'busy', waitForReady: false };
    await assert.rejects(run(action(), makeContext(input, { taskId: 't-409', checkpoints })), /already has a deployment named 'busy'/);
    env.portal.deployments.delete('ml/busy'); // the user deletes the old deployment, then retries the task
    const retried = makeContext(input, { taskId: 't-409', checkpoints });
    await run(action(), retried);
    const attempts = env.portal.postKeys.filter(post => post.key === 'backstage:t-409:step-1:deployment.create.ml.busy');
    assert.deepEqual(attempts.map(post => [post.status, post.replayed]), [[409, false], [201, false]]);
    assert.ok(!retried.logs.some(l => /earlier attempt/.test(l.message)));
    assert.equal(retried.outputs.name, 'busy');
    assert.ok(env.portal.deployments.has('ml/busy'));
  });

  it('an unknown model reports the field error', async () => {
    await assert.rejects(run(action(), makeContext({ ...base, model: 'nope', name: 'n1' })), /  - model: no model 'nope' in the catalog/);
  });

  it('a viewer is refused by the portal, readably', async () => {
    await assert.rejects(
      run(action(), makeContext({ ...base, name: 'v1' }, { user: 'user:default/vic' })),
      /This needs the 'developer' role in team 'ml'; you are 'viewer'/,
    );
  });

  it('a Failed deployment fails the step with the portal message', async () => {
    await assert.rejects(run(action(), makeContext({ ...base, model: 'gpt-4o', name: 'broken' })), /Deployment 'broken' failed: storage URI could not be loaded/);
  });

  it('times out with the last phase', async () => {
    const slow = await startPortalAndActions({ readyAfterPolls: 1000 });
    slow.portal.addTeam('ml', { 'user:default/jane': 'admin' });
    try {
      await assert.rejects(
        run(slow.actions['genai-portal:deployment:create'], makeContext({ ...base, name: 'slow', timeoutSeconds: 1, pollIntervalSeconds: 0.2 })),
        /was not Ready within 1 s \(last: Provisioning: predictor starting\)/,
      );
    } finally {
      await slow.portal.stop();
    }
  });

  it('honours cancellation while waiting', async () => {
    const slow = await startPortalAndActions({ readyAfterPolls: 1000 });
    slow.portal.addTeam('ml', { 'user:default/jane': 'admin' });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    const started = Date.now();
    try {
      await assert.rejects(
        run(slow.actions['genai-portal:deployment:create'], makeContext({ ...base, name: 'cancel', pollIntervalSeconds: 60 }, { signal: controller.signal })),
        /Cancelled while waiting for deployment 'cancel'/,
      );
      assert.ok(Date.now() - started < 5000);
    } finally {
      await slow.portal.stop();
    }
  });

  it('an already cancelled task calls nothing', async () => {
    const controller = new AbortController();
    controller.abort();
    const count = env.portal.requests.length;
    await assert.rejects(run(action(), makeContext({ ...base, name: 'never' }, { signal: controller.signal })), /Cancelled/);
    assert.equal(env.portal.requests.length, count);
  });

  it('forwards the Backstage token when configured, and refuses without one', async () => {
    const forwarding = await startPortalAndActions({ forwardUserToken: true });
    forwarding.portal.addTeam('ml', { 'user:default/jane': 'admin' });
    try {
      const ctx = makeContext({ ...base, name: 'fwd', waitForReady: false }, { secrets: { backstageToken: 'eyJ.user.token' } });
      await run(forwarding.actions['genai-portal:deployment:create'], ctx);
      assert.equal(forwarding.portal.posts('/api/v1/teams/ml/deployments')[0].headers['x-backstage-token'], 'eyJ.user.token');
      await assert.rejects(run(forwarding.actions['genai-portal:deployment:create'], makeContext({ ...base, name: 'fwd2' })), /forwardUserToken is on/);
      assert.ok(!ctx.logs.some(line => line.message.includes('eyJ.user.token')));
    } finally {
      await forwarding.portal.stop();
    }
  });

  it('the forwarded user token expiring mid-wait stops the wait with where to watch the deployment', async () => {
    const forwarding = await startPortalAndActions({ forwardUserToken: true, readyAfterPolls: 1000 });
    forwarding.portal.addTeam('ml', { 'user:default/jane': 'admin' });
    forwarding.portal.expireUserTokenAfterPolls = 3; // the portal answers 401 backstage_token_expired from the 4th poll on
    try {
      const ctx = makeContext({ ...base, name: 'long', timeoutSeconds: 3600, pollIntervalSeconds: 0.05 }, { secrets: { backstageToken: 'eyJ.user.token' } });
      await assert.rejects(run(forwarding.actions['genai-portal:deployment:create'], ctx), (error: Error) => {
        assert.match(error.message, /^Stopped waiting for deployment 'long' of team 'ml' \(last: Provisioning: predictor starting\)/);
        assert.match(error.message, /Backstage user token forwarded to the GenAI portal expired/);
        assert.match(error.message, /goes on in the portal; watch it at https:\/\/portal\.example\.com\/console\/teams\/ml\/deployments\/long\//);
        assert.match(error.message, /genaiPortal\.forwardUserToken: false/);
        assert.doesNotMatch(error.message, /HTTP 401/);
        return true;
      });
      assert.ok(forwarding.portal.deployments.has('ml/long'), 'the deployment stays');
    } finally {
      await forwarding.portal.stop();
    }
  });

  it('caps timeoutSeconds at 3600 s when the user token is forwarded (schema and handler), 86400 s otherwise', async () => {
    const forwarding = await startPortalAndActions({ forwardUserToken: true });
    try {
      const capped = forwarding.actions['genai-portal:deployment:create'];
      const schema = (capped.schema?.input as any).properties.timeoutSeconds;
      assert.equal(schema.maximum, 3600);
      assert.match(schema.description, /longer waits need forwardUserToken: false/);
      assert.equal((action().schema?.input as any).properties.timeoutSeconds.maximum, 86_400);
      const count = forwarding.portal.requests.length;
      await assert.rejects(
        run(capped, makeContext({ ...base, name: 'too-long', timeoutSeconds: 7200 }, { secrets: { backstageToken: 'eyJ.user.token' } })),
        /timeoutSeconds \(7200\) exceeds 3600 s: the forwarded Backstage user token expires after about an hour/,
      );
      assert.equal(forwarding.portal.requests.length, count);
    } finally {
      await forwarding.portal.stop();
    }
  });

  it('dry run posts nothing and validates replicas', async () => {
    const count = env.portal.requests.length;
    const ctx = makeContext({ ...base, name: 'dry', scaleToZero: true }, { isDryRun: true });
    await run(action(), ctx);
    assert.equal(env.portal.requests.length, count);
    assert.equal(ctx.outputs.phase, 'DryRun');
    assert.match(ctx.logs[0].message, /"min_replicas":0,"max_replicas":1,"scale_to_zero":true/);
    await assert.rejects(run(action(), makeContext({ ...base, name: 'bad', minReplicas: 3, maxReplicas: 2 }, { isDryRun: true })), /minReplicas \(3\) must not exceed maxReplicas \(2\)/);
  });
});
