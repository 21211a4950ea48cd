import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { makeContext } from './support/context';
import { run, startPortalAndActions } from './support/setup';

describe('genai-portal:deployment:plan', () => {
  let env: Awaited<ReturnType<typeof startPortalAndActions>>;
  before(async () => {
    env = await startPortalAndActions();
    env.portal.addTeam('ml', { 'user:default/jane': 'developer' }, 'group:default/ml');
  });
  after(async () => env.portal.stop());
  const action = () => env.actions['genai-portal:deployment:plan'];
  const base = { team: 'group:default/ml', model: 'resource:default/qwen2-5-7b-instruct' };

  it('shows the plan in a dry run: fits, GPUs, monthly cost, break-even; creates nothing', async () => {
    const count = env.portal.requests.length;
    const ctx = makeContext(base, { isDryRun: true });
    await run(action(), ctx);
    const calls = env.portal.requests.slice(count).map(request => `${request.method} ${request.path}`);
    assert.ok(calls.includes('GET /api/v1/catalog/models/qwen2-5-7b-instruct'), calls.join('\n'));
    assert.ok(calls.includes('POST /api/v1/catalog/models/qwen2-5-7b-instruct/versions/v1/fit'), calls.join('\n'));
    assert.ok(calls.every(call => call.startsWith('GET ') || call.endsWith('/fit')), calls.join('\n'));
    const [fit] = env.portal.posts('/api/v1/catalog/models/qwen2-5-7b-instruct/versions/v1/fit');
    assert.deepEqual(fit.body, { team: 'ml', min_replicas: 1 });
    assert.deepEqual(ctx.outputs, {
      fits: true,
      cluster: 'sandbox',
      acceleratorType: 'nvidia-l4',
      gpusPerReplica: 1,
      tensorParallelSize: 1,
      monthlyCost: '584.00',
      currency: 'USD',
      summary:
        'qwen2-5-7b-instruct v1 needs 15.2 GB of weights and 57,344 bytes of KV cache per token (auto); sized for 8,192 tokens x 1 sequence(s). ' +
        'Fits on 1 x nvidia-l4 per replica on sandbox (tensor parallel 1, 3.8 GB to spare per GPU, up to 8 sequences at this context): ' +
        '584.00 USD a month for 1 replica(s), cheaper than gpt-4o-mini above 2,224,761,905 tokens a month.',
    });
    assert.match(ctx.logs[0].message, /^Dry run: Plan for 'qwen2-5-7b-instruct' \(team 'ml'\): .* Fits on 1 x nvidia-l4/);
  });

  it('passes the pool, GPU count, context and replicas asked for', async () => {
    const ctx = makeContext({ ...base, version: 'v1', acceleratorType: 'nvidia-l4', gpusPerReplica: 2, contextLength: 16384, minReplicas: 2 });
    await run(action(), ctx);
    const fit = env.portal.posts('/api/v1/catalog/models/qwen2-5-7b-instruct/versions/v1/fit').at(-1)!;
    assert.deepEqual(fit.body, { team: 'ml', min_replicas: 2, accelerator_type: 'nvidia-l4', gpus_per_replica: 2, context_length: 16384 });
    assert.equal(ctx.outputs.monthlyCost, '2336.00');
  });

  it('a model that fits nowhere fails the step before anything is created, with the shortfall', async () => {
    env.portal.tooBigModels.add('qwen2-5-7b-instruct');
    try {
      await assert.rejects(run(action(), makeContext({ ...base, gpusPerReplica: 1 }, { isDryRun: true })), (error: Error) => {
        assert.match(error.message, /It does not fit on any GPU pool the team may use\./);
        assert.match(error.message, /1 x nvidia-l4 on sandbox is short by 124\.3 GB per GPU\./);
        assert.match(error.message, /nothing was created/);
        return true;
      });
      assert.equal(env.portal.posts('/api/v1/teams/ml/deployments').length, 0);
    } finally {
      env.portal.tooBigModels.delete('qwen2-5-7b-instruct');
    }
  });

  it('an unknown model is the portal 404, readably', async () => {
    await assert.rejects(run(action(), makeContext({ ...base, model: 'nope' })), /Model 'nope' not found in the catalog/);
  });
});
