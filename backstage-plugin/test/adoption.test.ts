/**
 * What an adopting platform team met (issue 18), one test each: retries with forwarded user tokens, status polls that
 * survive a portal hiccup, the forwardUserToken/JWKS mismatch caught at startup, a catalog token of the wrong scope,
 * embeddings models' API, links to the console on the public URL, and the messages that say what to do next.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { deploymentToEntities, openAiDefinition } from '../plugins/catalog-backend-module-genai-portal/src/entities';
import { GenaiPortalEntityProvider } from '../plugins/catalog-backend-module-genai-portal/src/provider';
import { consolePath, consoleUrl } from '../plugins/genai-portal-node/src/links';
import { PortalClient } from '../plugins/genai-portal-node/src/portalClient';
import { userTokenOf } from '../plugins/scaffolder-backend-module-genai-portal/src/actions/common';
import { checkUserTokenSetting, createGenaiPortalActions } from '../plugins/scaffolder-backend-module-genai-portal/src/module';
import { makeContext } from './support/context';
import { FakePortal } from './support/fakePortal';
import { run, startPortalAndActions } from './support/setup';

/** A JWT-shaped token with the given header `typ` (the signature is not checked by the plugin). */
function jwt(typ: string, sub = 'user:default/jane'): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${part({ alg: 'ES256', typ })}.${part({ sub })}.c2lnbmF0dXJl`;
}

function recordingLogger() {
  const lines: Array<{ level: string; message: string }> = [];
  const log = (level: string) => (message: string) => void lines.push({ level, message });
  const logger: any = { info: log('info'), warn: log('warn'), error: log('error'), debug: log('debug'), child: () => logger };
  return { lines, logger };
}

describe('links shown to people: console pages on the public URL', () => {
  it('builds the shapes the console serves, in one place', () => {
    assert.equal(consolePath(), '/console/');
    assert.equal(consolePath({ fleet: true }), '/console/fleet/');
    assert.equal(consolePath({ team: 'ml' }), '/console/teams/ml/');
    assert.equal(consolePath({ team: 'ml', deployment: 'chat' }), '/console/teams/ml/deployments/chat/');
    assert.equal(consolePath({ model: 'qwen2-5-7b-instruct' }), '/console/models/qwen2-5-7b-instruct/');
    assert.equal(consoleUrl('https://genai.example.com/', { team: 'a/b' }), 'https://genai.example.com/console/teams/a%2Fb/');
  });

  it('deployment entities link to the console (view-url included), never to the JSON API', () => {
    const deployment: any = {
      name: 'emb', team: 'ml', model: 'bge-m3', version: 'v1', cluster: 'sandbox', accelerator_type: 'nvidia-l4',
      served_model_name: 'ml--emb', generation: 1,
      status: { phase: 'Ready', endpoint: 'http://gw/openai/v1', message: '', observed_generation: 1, conditions: [], observed_replicas: 1, last_reconciled_at: null },
    };
    const mapping = { baseUrl: 'http://portal.internal:8000', publicUrl: 'https://genai.example.com', namespace: 'default', modelOwner: 'group:default/p', lifecycle: 'production', providerName: 'genai-portal' };
    const [component, api] = deploymentToEntities(deployment, undefined, mapping, { capabilities: ['embeddings'] } as any);
    for (const entity of [component, api]) {
      assert.equal(entity.metadata.annotations?.['backstage.io/view-url'], 'https://genai.example.com/console/teams/ml/deployments/emb/');
      assert.deepEqual(entity.metadata.links?.map(link => link.url).slice(0, 2), [
        'https://genai.example.com/console/teams/ml/deployments/emb/',
        'https://genai.example.com/console/teams/ml/',
      ]);
      // The location stays the API on the internal URL (what the provider read), only links change.
      assert.equal(entity.metadata.annotations?.['backstage.io/managed-by-location'], 'url:http://portal.internal:8000/api/v1/teams/ml/deployments/emb');
    }
    // An embeddings model's API declares /embeddings only (not chat or completions).
    const paths = Object.keys(JSON.parse((api.spec as any).definition).paths);
    assert.deepEqual(paths, ['/embeddings']);
    assert.deepEqual(api.metadata.tags, ['openai', 'embeddings']);
    const chat = Object.keys(JSON.parse(openAiDefinition(deployment, ['chat', 'tool_calling'])).paths);
    assert.deepEqual(chat, ['/chat/completions']);
    assert.deepEqual(Object.keys(JSON.parse(openAiDefinition(deployment)).paths), ['/chat/completions', '/completions']);
  });
});

describe('identity on a scaffolder 4.2 retry with forwardUserToken', () => {
  let env: Awaited<ReturnType<typeof startPortalAndActions>>;
  before(async () => {
    env = await startPortalAndActions({ forwardUserToken: true, readyAfterPolls: 1 });
    env.portal.addTeam('ml', { 'user:default/jane': 'admin' });
  });
  after(async () => env.portal.stop());

  it("forwards the retrier's own user token, not the plugin token the retry route puts in secrets", async () => {
    const userToken = jwt('vnd.backstage.user');
    const pluginToken = jwt('vnd.backstage.plugin');
    const ctx = makeContext(
      { team: 'ml', model: 'qwen2-5-7b-instruct', name: 'retried', waitForReady: false },
      { secrets: { backstageToken: pluginToken }, initiatorToken: userToken },
    );
    await run(env.actions['genai-portal:deployment:create'], ctx);
    const [post] = env.portal.posts('/api/v1/teams/ml/deployments');
    assert.equal(post.headers['x-backstage-token'], userToken);
    assert.equal(userTokenOf(pluginToken), undefined);
    assert.equal(userTokenOf(jwt('vnd.backstage.limited-user')), undefined);
  });

  it('with only a plugin token, refuses before any request and says why', async () => {
    const count = env.portal.requests.length;
    const ctx = makeContext({ team: 'ml', name: 'x' }, { secrets: { backstageToken: jwt('vnd.backstage.plugin') } });
    await assert.rejects(run(env.actions['genai-portal:credential:create'], ctx), /forwardUserToken is on but the task carries no Backstage user token for user:default\/jane/);
    assert.equal(env.portal.requests.length, count);
  });
});

describe('waiting for Ready through transient failures', () => {
  let env: Awaited<ReturnType<typeof startPortalAndActions>>;
  before(async () => {
    env = await startPortalAndActions({ readyAfterPolls: 2 });
    env.portal.addTeam('ml', { 'user:default/jane': 'developer' });
  });
  after(async () => env.portal.stop());
  const base = { team: 'ml', model: 'qwen2-5-7b-instruct', pollIntervalSeconds: 0.05 };

  it('a few failed status reads are retried with back-off and the wait ends Ready', async () => {
    env.portal.failStatusReads = 3;
    const ctx = makeContext({ ...base, name: 'hiccup' });
    await run(env.actions['genai-portal:deployment:create'], ctx);
    assert.equal(ctx.outputs.phase, 'Ready');
    const warnings = ctx.logs.filter(line => line.level === 'warn').map(line => line.message);
    assert.equal(warnings.length, 3, warnings.join('\n'));
    assert.match(warnings[0], /Could not read the status of deployment 'hiccup' \(attempt 1: .*HTTP 503.*\); trying again in 0\.1 s\. The deployment goes on in the portal meanwhile\./);
    assert.match(warnings[2], /attempt 3: .*trying again in 0\.4 s/);
    assert.ok(ctx.logs.some(line => /works again after 3 failed attempt\(s\)/.test(line.message)));
  });

  it('failures until the deadline stop the wait saying the deployment goes on and where to watch it', async () => {
    env.portal.failStatusReads = 1000;
    const ctx = makeContext({ ...base, name: 'outage', timeoutSeconds: 1 });
    await assert.rejects(run(env.actions['genai-portal:deployment:create'], ctx), (error: Error) => {
      assert.match(error.message, /^Stopped waiting for deployment 'outage' of team 'ml' after 1 s: the last \d+ status read\(s\) failed/);
      assert.match(error.message, /The deployment was accepted and goes on in the portal; watch it at https:\/\/portal\.example\.com\/console\/teams\/ml\/deployments\/outage\//);
      return true;
    });
    env.portal.failStatusReads = 0;
    assert.ok(env.portal.deployments.has('ml/outage'));
  });

  it('a failed deployment says it is left behind and how to clear it', async () => {
    const failing = await startPortalAndActions({ readyAfterPolls: 1, failingModels: ['gpt-4o'] });
    failing.portal.addTeam('ml', { 'user:default/jane': 'developer' });
    try {
      await assert.rejects(run(failing.actions['genai-portal:deployment:create'], makeContext({ ...base, model: 'gpt-4o', name: 'broken' })), (error: Error) => {
        assert.match(error.message, /Deployment 'broken' failed: .*It is still in the portal \(https:\/\/portal\.example\.com\/console\/teams\/ml\/deployments\/broken\/\) and keeps its name: delete it/);
        return true;
      });
    } finally {
      await failing.portal.stop();
    }
  });

  it('a refused deploy for GPU quota says how to ask for more', async () => {
    const { formatProblem } = await import('../plugins/genai-portal-node/src/portalClient');
    const message = formatProblem('POST', '/api/v1/teams/ml/deployments', 409, { title: 'GPU quota exceeded', code: 'gpu_quota_exceeded', detail: "Team 'ml' may hold 0 nvidia-l4 GPUs" });
    assert.match(message, /Ask for more with the template "Request GPU quota" \(a platform admin approves it\), then retry this task/);
  });
});

describe('forwardUserToken against what the portal verifies, checked at startup', () => {
  it('forwardUserToken: false with a portal that verifies user tokens: an error at startup, and every action refuses before calling', async () => {
    const portal = await new FakePortal({ requireUserToken: true }).start();
    portal.addTeam('ml', { 'user:default/jane': 'admin' });
    try {
      const client = new PortalClient({ baseUrl: portal.url, token: portal.token });
      const log = recordingLogger();
      const check: { problem?: string } = {};
      await checkUserTokenSetting(client, false, log.logger, check);
      assert.deepEqual(log.lines.map(line => line.level), ['error']);
      assert.match(log.lines[0].message, /verifies Backstage user tokens \(PORTAL_BACKSTAGE_JWKS_URL is set there\), but genaiPortal\.forwardUserToken is false/);
      assert.match(log.lines[0].message, /Set genaiPortal\.forwardUserToken: true/);
      const actions = Object.fromEntries(createGenaiPortalActions({ client, forwardUserToken: false, portalCheck: check }).map(action => [action.id, action]));
      const count = portal.requests.length;
      await assert.rejects(run(actions['genai-portal:team:onboard'], makeContext({ team: 'ml', displayName: 'ML' })), /forwardUserToken is false/);
      assert.equal(portal.requests.length, count);
      // Had the portal been down at startup, the refusal itself names the setting.
      const unchecked = Object.fromEntries(createGenaiPortalActions({ client, forwardUserToken: false }).map(action => [action.id, action]));
      await assert.rejects(run(unchecked['genai-portal:team:onboard'], makeContext({ team: 'ml', displayName: 'ML' })), /backstage_token_missing[\s\S]*set genaiPortal\.forwardUserToken: true/);
    } finally {
      await portal.stop();
    }
  });

  it('matching settings are quiet; tokens forwarded to a portal that ignores them is a warning', async () => {
    for (const [requireUserToken, forward, levels] of [
      [true, true, []],
      [false, false, []],
      [false, true, ['warn']],
    ] as const) {
      const portal = await new FakePortal({ requireUserToken }).start();
      try {
        const log = recordingLogger();
        const check: { problem?: string } = {};
        await checkUserTokenSetting(new PortalClient({ baseUrl: portal.url, token: portal.token }), forward, log.logger, check);
        assert.deepEqual(log.lines.map(line => line.level), levels);
        assert.equal(check.problem, undefined);
      } finally {
        await portal.stop();
      }
    }
  });
});

describe('the catalog mirror with a token of the wrong scope', () => {
  it('a backstage-scoped catalog token mirrors nothing (no mutation): it refuses, naming the scope it needs', async () => {
    const portal = await new FakePortal({ adminScopes: ['backstage'] }).start();
    portal.addTeam('ml', { 'user:default/jane': 'admin' });
    try {
      const mutations: unknown[] = [];
      const provider = new GenaiPortalEntityProvider({
        client: new PortalClient({ baseUrl: portal.url, token: portal.adminToken }),
        logger: recordingLogger().logger,
        requiredScope: 'catalog:read',
        mapping: { publicUrl: 'https://genai.example.com', namespace: 'default', modelOwner: 'group:default/p', lifecycle: 'production' },
      });
      await provider.connect({ applyMutation: async (mutation: unknown) => void mutations.push(mutation), refresh: async () => {} } as any);
      await assert.rejects(provider.refresh(), /refusing to mirror the GenAI portal: genaiPortal\.catalog\.token has the portal scopes \[backstage\], not 'catalog:read'/);
      assert.deepEqual(mutations, []);
      assert.deepEqual(portal.requests.map(request => request.path), ['/api/v1/me']);
    } finally {
      await portal.stop();
    }
  });
});

describe('messages that say what to do next', () => {
  let env: Awaited<ReturnType<typeof startPortalAndActions>>;
  before(async () => {
    env = await startPortalAndActions();
    env.portal.addTeam('taken', { 'user:default/ana': 'admin', 'user:default/bo': 'admin', 'user:default/cy': 'developer' });
    env.portal.addTeam('ml', { 'user:default/jane': 'developer' });
  });
  after(async () => env.portal.stop());

  it('a team that exists and is not yours names its admins', async () => {
    await assert.rejects(
      run(env.actions['genai-portal:team:onboard'], makeContext({ team: 'taken', displayName: 'Taken' })),
      /Team 'taken' already exists in the GenAI portal and user:default\/jane is not a member\. Ask one of its admins \(user:default\/ana, user:default\/bo\) to add you, or pick another slug\./,
    );
  });

  it('a key name already taken suggests rotating it or another name', async () => {
    await run(env.actions['genai-portal:credential:create'], makeContext({ team: 'ml', name: 'app' }, { taskId: 'first' }));
    await assert.rejects(run(env.actions['genai-portal:credential:create'], makeContext({ team: 'ml', name: 'app' }, { taskId: 'second' })), (error: Error) => {
      assert.match(error.message, /^Team 'ml' already has a current API key named 'app'\. For a new key under that name, rotate it in the portal \(https:\/\/portal\.example\.com\/console\/teams\/ml\/:/);
      assert.match(error.message, /or run this template again with another name \(e\.g\. 'app-2'\)/);
      return true;
    });
  });
});

describe('genai-portal:quota:request (self-service quota)', () => {
  let env: Awaited<ReturnType<typeof startPortalAndActions>>;
  before(async () => {
    env = await startPortalAndActions();
    env.portal.addTeam('ml', { 'user:default/jane': 'developer' }, 'group:default/ml');
  });
  after(async () => env.portal.stop());
  const action = () => env.actions['genai-portal:quota:request'];

  it('asks the portal for GPU totals as the user, once across retries; a second pending request says what to do', async () => {
    const ctx = makeContext({ team: 'group:default/ml', acceleratorType: 'nvidia-l4', gpus: 6, maxDeployments: 8, reason: 'batch scoring' });
    await run(action(), ctx);
    const [post] = env.portal.posts('/api/v1/teams/ml/quota-requests');
    assert.deepEqual(post.body, { gpus: { 'nvidia-l4': 6 }, max_deployments: 8, reason: 'batch scoring' });
    assert.equal(post.headers['x-backstage-user'], 'user:default/jane');
    assert.equal(post.headers['idempotency-key'], 'backstage:task-1:step-1:quota.request.ml');
    assert.deepEqual(ctx.outputs, { team: 'ml', requestId: 1, status: 'pending', teamUrl: 'https://portal.example.com/console/teams/ml/' });
    await run(action(), makeContext(ctx.input, { checkpoints: ctx.checkpoints })); // a retry: the stored result
    assert.equal(env.portal.posts('/api/v1/teams/ml/quota-requests').length, 1);
    await assert.rejects(run(action(), makeContext({ team: 'ml', maxDeployments: 9, reason: 'more' }, { taskId: 'other' })), /already has a pending quota request \(1\): wait for a platform admin to decide it, or withdraw it/);
  });

  it('refuses an empty or half request before any call', async () => {
    const count = env.portal.requests.length;
    await assert.rejects(run(action(), makeContext({ team: 'ml', reason: 'x' })), /Ask for GPUs \(acceleratorType and gpus\), for maxDeployments, or for both/);
    await assert.rejects(run(action(), makeContext({ team: 'ml', gpus: 2, reason: 'x' })), /acceleratorType and gpus go together/);
    assert.equal(env.portal.requests.length, count);
  });
});
