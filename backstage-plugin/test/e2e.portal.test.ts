/**
 * End to end: a real Backstage backend (catalog, scaffolder, guest sign-in, our two modules) against
 * the real Django portal (web, worker, beat, sandbox cluster) started here, which verifies the
 * forwarded Backstage user token against this backend's JWKS. The templates onboard a team and deploy
 * a model that becomes Ready; the catalog mirrors it; the portal's team sync reads this catalog; an API
 * key is delivered by a reveal link and never appears in the task, its log, its output or the
 * backend's own log; the deployment is deleted and leaves the catalog; a user-less task is refused.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { freePort, missingPrerequisite, PYTHON, REPO_ROOT, RealPortal, startRealPortal } from './e2e/realPortal';
import { RealBackstage, startRealBackstage } from './e2e/realBackstage';
import { runTask, waitForTask } from './support/scaffolder';

const USER = 'user:default/e2e-dev';
const runPython = (args: string[], env: NodeJS.ProcessEnv) => promisify(execFile)(PYTHON, args, { cwd: REPO_ROOT, env });
const GROUP = 'group:default/e2e-team';
const skip = missingPrerequisite();
if (skip) {
  // Loud, not silent: the reason is printed and the suite reports a skip.
  console.warn(`# SKIP end-to-end test with the real portal: ${skip}`);
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise(r => setTimeout(r, 500));
  }
}

describe('Backstage templates against the real portal', { skip, timeout: 600_000 }, () => {
  let portal: RealPortal;
  let backstage: RealBackstage;
  let userToken: string;
  const team = `e2e-${Date.now().toString(36)}`;
  const auth = () => ({ Authorization: `Bearer ${userToken}` });
  const started = Date.now();

  before(async () => {
    const backstagePort = await freePort();
    portal = await startRealPortal({
      // A new team may use the sandbox's L4 GPUs; the portal verifies the forwarded Backstage token.
      PORTAL_DEFAULT_GPU_QUOTA: 'nvidia-l4:2',
      PORTAL_BACKSTAGE_JWKS_URL: `http://localhost:${backstagePort}/api/auth/.well-known/jwks.json`,
      PORTAL_BACKSTAGE_ISSUER: `http://localhost:${backstagePort}/api/auth`,
    });
    console.log(`# portal up after ${((Date.now() - started) / 1000).toFixed(1)} s at ${portal.url}`);
    backstage = await startRealBackstage({
      port: backstagePort,
      portalUrl: portal.url,
      serviceToken: portal.serviceToken,
      catalogToken: portal.catalogToken,
      userEntityRef: USER,
      forwardUserToken: true,
    });
    console.log(`# backstage up after ${((Date.now() - started) / 1000).toFixed(1)} s at ${backstage.url}`);
    // Sign in once the catalog knows the user (so the token carries its groups).
    await waitFor('the org in the catalog', async () => {
      const response = await fetch(`${backstage.url}/api/catalog/entities/by-name/user/default/e2e-dev`, {
        headers: { Authorization: `Bearer ${backstage.externalToken}` },
      });
      return response.ok ? true : undefined;
    });
    const refresh = await fetch(`${backstage.url}/api/auth/guest/refresh`, { headers: { 'X-Requested-With': 'XMLHttpRequest' } });
    assert.equal(refresh.status, 200, await refresh.clone().text());
    userToken = ((await refresh.json()) as any).backstageIdentity.token;
  });

  after(async () => {
    await backstage?.stop();
    await portal?.stop();
  });

  it('the catalog mirrors the portal models as ai-model Resources', async () => {
    const model = await waitFor('the mirrored model', async () => {
      const response = await fetch(`${backstage.url}/api/catalog/entities/by-name/resource/default/qwen2-5-7b-instruct`, { headers: auth() });
      return response.ok ? ((await response.json()) as any) : undefined;
    });
    assert.equal(model.spec.type, 'ai-model');
    // Links people open go to the console on the portal's public URL (the demo's: PORTAL_PUBLIC_URL).
    assert.equal(model.metadata.annotations['genai-portal.dev/url'], `${portal.url}/console/models/qwen2-5-7b-instruct/`);
    assert.equal(model.metadata.annotations['backstage.io/view-url'], `${portal.url}/console/models/qwen2-5-7b-instruct/`);
  });

  it('onboard a team, then deploy a model that becomes Ready, acting as the signed-in user', async () => {
    const onboard = await runTask(
      backstage.url,
      { templateRef: 'template:default/genai-onboard-team', values: { group: GROUP, team, displayName: 'E2E team', description: 'made by the e2e test' } },
      auth(),
      120_000,
    );
    assert.equal(onboard.status, 'completed', onboard.rawEvents);
    assert.equal(onboard.output.links[0].url, `${portal.url}/console/teams/${team}/`);

    // The portal knows the team, linked to the group, with the Backstage user as its admin.
    const members = await fetch(`${portal.url}/api/v1/teams/${team}/members`, { headers: { Authorization: `Bearer ${portal.adminToken}` } });
    assert.equal(members.status, 200);
    const body = (await members.json()) as any;
    assert.deepEqual(body.results.map((m: any) => [m.user, m.role]), [[USER, 'admin']]);
    const teamBody = (await (await fetch(`${portal.url}/api/v1/teams/${team}`, { headers: { Authorization: `Bearer ${portal.catalogToken}` } })).json()) as any;
    assert.equal(teamBody.backstage_group_ref, GROUP);

    const deployStarted = Date.now();
    const deploy = await runTask(
      backstage.url,
      {
        templateRef: 'template:default/genai-deploy-model',
        values: { team: GROUP, model: 'resource:default/qwen2-5-7b-instruct', name: 'chat', cluster: 'sandbox', acceleratorType: 'nvidia-l4', minReplicas: 1, maxReplicas: 1, scaleToZero: false, timeoutSeconds: 240 },
      },
      auth(),
      300_000,
    );
    console.log(`# deploy template completed in ${((Date.now() - deployStarted) / 1000).toFixed(1)} s`);
    assert.equal(deploy.status, 'completed', deploy.rawEvents);
    assert.ok(deploy.logs.some(line => /Deployment 'chat' is Ready at /.test(line)), deploy.logs.join('\n'));
    assert.match(deploy.output.text[0].content, /\*\*Ready\*\*/);

    const deployment = (await (
      await fetch(`${portal.url}/api/v1/teams/${team}/deployments/chat`, { headers: { Authorization: `Bearer ${portal.catalogToken}` } })
    ).json()) as any;
    assert.equal(deployment.status.phase, 'Ready');
    assert.ok(deployment.status.endpoint);
    assert.match(deploy.output.text[0].content, new RegExp(`"model": "${deployment.served_model_name}"`));

    // The catalog mirrors the deployment, owned by the group, depending on its model, providing its API.
    const component = await waitFor('the mirrored deployment', async () => {
      const response = await fetch(`${backstage.url}/api/catalog/entities/by-name/component/default/${team}.chat`, { headers: auth() });
      const entity = response.ok ? ((await response.json()) as any) : undefined;
      // The mirror runs every 2 s: wait for the one taken after the deployment became Ready.
      return entity?.metadata.annotations['genai-portal.dev/phase'] === 'Ready' ? entity : undefined;
    });
    assert.equal(component.spec.type, 'model-server');
    assert.equal(component.spec.owner, GROUP);
    assert.deepEqual(component.spec.dependsOn, ['resource:default/qwen2-5-7b-instruct']);
    assert.equal(component.metadata.annotations['genai-portal.dev/endpoint'], deployment.status.endpoint);
    const relations = component.relations.map((r: any) => `${r.type}:${r.targetRef}`);
    assert.ok(relations.includes(`ownedBy:${GROUP}`), relations.join(', '));
    assert.ok(relations.includes(`providesApi:api:default/${team}.chat`), relations.join(', '));
  });

  it('self-service quota: a deploy refused for GPU quota, a quota request, a platform admin approves, the retried task deploys (forwardUserToken on)', async () => {
    // The new team got the default quota (2 L4 GPUs) and 'chat' holds one: two more replicas do not fit.
    const values = { team: GROUP, model: 'resource:default/qwen2-5-7b-instruct', name: 'batch', cluster: 'sandbox', acceleratorType: 'nvidia-l4', minReplicas: 1, maxReplicas: 2, scaleToZero: false, timeoutSeconds: 240 };
    const refused = await runTask(backstage.url, { templateRef: 'template:default/genai-deploy-model', values }, auth(), 120_000);
    assert.equal(refused.status, 'failed', refused.rawEvents);
    assert.match(refused.rawEvents, /gpu_quota_exceeded/);
    assert.match(refused.rawEvents, /Request GPU quota/);

    const asked = await runTask(
      backstage.url,
      { templateRef: 'template:default/genai-request-gpu-quota', values: { team: GROUP, acceleratorType: 'nvidia-l4', gpus: 4, reason: 'batch scoring' } },
      auth(),
      120_000,
    );
    assert.equal(asked.status, 'completed', asked.rawEvents);
    const queue = (await (await fetch(`${portal.url}/api/v1/quota-requests`, { headers: { Authorization: `Bearer ${portal.adminToken}` } })).json()) as any;
    const request = queue.results.find((entry: any) => entry.team === team);
    assert.deepEqual([request.gpus, request.requested_by, request.status], [{ 'nvidia-l4': 4 }, USER, 'pending']);
    const approved = await fetch(`${portal.url}/api/v1/teams/${team}/quota-requests/${request.id}/approve`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${portal.adminToken}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ note: 'approved by the e2e' }),
    });
    assert.equal(approved.status, 200, await approved.clone().text());

    // The user retries the refused task (scaffolder 4.2 hands the action a plugin token in secrets; the action
    // forwards the user's own token, which the portal verifies against this Backstage's JWKS).
    const retry = await fetch(`${backstage.url}/api/scaffolder/v2/tasks/${refused.id}/retry`, {
      method: 'POST',
      headers: { ...auth(), 'Content-Type': 'application/json' },
      body: '{}',
    });
    assert.equal(retry.status, 201, await retry.clone().text());
    const retried = await waitForTask(backstage.url, refused.id, auth(), 300_000);
    assert.equal(retried.status, 'completed', retried.rawEvents);
    assert.doesNotMatch(retried.rawEvents, /backstage_token_invalid/);
    const deployment = (await (
      await fetch(`${portal.url}/api/v1/teams/${team}/deployments/batch`, { headers: { Authorization: `Bearer ${portal.catalogToken}` } })
    ).json()) as any;
    assert.equal(deployment.status.phase, 'Ready');
    assert.equal(retried.output.links[0].url, `${portal.url}/console/teams/${team}/deployments/batch/`);
  });

  it("the portal's team sync reads the real Backstage catalog: the group's other member joins the team", async () => {
    const environment = {
      ...portal.environment,
      PORTAL_BACKSTAGE_URL: backstage.url,
      PORTAL_BACKSTAGE_CATALOG_TOKEN: backstage.externalToken,
    };
    const { stdout } = await runPython(
      ['manage.py', 'shell', '-c', 'from workers.tasks.tenancy import sync_backstage_teams; import json; print(json.dumps(sync_backstage_teams()))'],
      environment,
    );
    const summary = JSON.parse(stdout.trim().split('\n').pop()!);
    assert.ok(summary.groups >= 2, stdout);
    assert.equal(summary.problems, 0, stdout);
    const members = (await (
      await fetch(`${portal.url}/api/v1/teams/${team}/members`, { headers: { Authorization: `Bearer ${portal.adminToken}` } })
    ).json()) as any;
    assert.deepEqual(
      members.results.map((m: any) => [m.user, m.role]).sort(),
      [
        ['user:default/e2e-colleague', 'developer'],
        [USER, 'admin'],
      ],
    );
  });

  it('request an API key: the task carries only the one-time reveal link; the key is never in the task', async () => {
    const result = await runTask(
      backstage.url,
      { templateRef: 'template:default/genai-request-api-key', values: { team: GROUP, name: 'e2e-app', allowedModels: ['resource:default/qwen2-5-7b-instruct'] } },
      auth(),
      120_000,
    );
    assert.equal(result.status, 'completed', result.rawEvents);
    const revealUrl: string = result.output.links[0].url;
    assert.match(revealUrl, new RegExp(`^${portal.url}/reveal/`));
    // The user opens the link in a browser: no portal identity, a page that describes the link, then the key
    // once on confirmation; a second use is gone.
    const preview = await fetch(revealUrl);
    assert.equal(preview.status, 200, await preview.clone().text());
    assert.ok(!(await preview.text()).includes('gpk_'), 'opening the link does not show the key yet');
    const revealed = await fetch(revealUrl, { method: 'POST' });
    assert.equal(revealed.status, 200, await revealed.clone().text());
    const key = ((await revealed.text()).match(/gpk_[A-Za-z0-9_-]+/) ?? [''])[0];
    assert.ok(key.length >= 20, 'the page shows the key once');
    const again = await fetch(revealUrl, { method: 'POST' });
    assert.equal(again.status, 410, `a second reveal must fail, got ${again.status}`);
    assert.ok(!(await again.text()).includes(key));
    const task = await (await fetch(`${backstage.url}/api/scaffolder/v2/tasks/${result.id}`, { headers: auth() })).text();
    const secretPart = key.slice(-16);
    for (const text of [result.rawEvents, JSON.stringify(result.output), task, backstage.output.join('\n')]) {
      assert.ok(!text.includes(key), 'the key must not appear in any task log, output or the stored task');
      assert.ok(!text.includes(secretPart), 'nor any part of its secret');
    }
    assert.match(result.output.text[0].content, /prefix `/);

    // The loop closes: the revealed key calls the team's deployment through the gateway once its policy is applied.
    const deployment = (await (
      await fetch(`${portal.url}/api/v1/teams/${team}/deployments/chat`, { headers: { Authorization: `Bearer ${portal.catalogToken}` } })
    ).json()) as any;
    const completion = await waitFor('the key to work at the gateway', async () => {
      const response = await fetch(`${portal.gatewayUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ model: deployment.served_model_name, messages: [{ role: 'user', content: 'hello from Backstage' }], max_tokens: 8 }),
      });
      return response.status === 200 ? ((await response.json()) as any) : undefined;
    });
    assert.equal(completion.model, deployment.served_model_name);
    assert.equal(completion.usage.completion_tokens, 8);
  });

  it('delete the deployment: the portal removes it and the catalog mirror drops its entities', async () => {
    const result = await runTask(
      backstage.url,
      { templateRef: 'template:default/genai-e2e-delete-deployment', values: { team: GROUP, name: 'chat' } },
      auth(),
      240_000,
    );
    assert.equal(result.status, 'completed', result.rawEvents);
    assert.equal(result.output.text[0].content, 'deleted: true');
    assert.ok(result.logs.some(line => /Deployment 'chat' is gone/.test(line)), result.logs.join('\n'));
    const gone = await fetch(`${portal.url}/api/v1/teams/${team}/deployments/chat`, { headers: { Authorization: `Bearer ${portal.catalogToken}` } });
    assert.equal(gone.status, 404);
    await waitFor('the mirrored deployment to disappear', async () => {
      const [component, api] = await Promise.all(
        ['component', 'api'].map(kind => fetch(`${backstage.url}/api/catalog/entities/by-name/${kind}/default/${team}.chat`, { headers: auth() })),
      );
      return component.status === 404 && api.status === 404 ? true : undefined;
    });
  });

  it('a task created by a service (no user) is refused by the action', async () => {
    const result = await runTask(
      backstage.url,
      { templateRef: 'template:default/genai-onboard-team', values: { group: GROUP, team: `${team}-svc`, displayName: 'No user' } },
      { Authorization: `Bearer ${backstage.externalToken}` },
      60_000,
    );
    assert.equal(result.status, 'failed');
    assert.match(result.rawEvents, /acts for the Backstage user who started the task, and this task has none/);
    const check = await fetch(`${portal.url}/api/v1/teams/${team}-svc`, { headers: { Authorization: `Bearer ${portal.adminToken}` } });
    assert.equal(check.status, 404);
  });
});
