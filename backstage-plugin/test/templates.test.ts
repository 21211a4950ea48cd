/** Each software template run end to end in an in-process scaffolder backend against a fake portal. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mockCredentials, mockServices, startTestBackend, TestBackend } from '@backstage/backend-test-utils';
import { catalogServiceMock } from '@backstage/plugin-catalog-node/testUtils';
import { scaffolderModuleGenaiPortal } from '../plugins/scaffolder-backend-module-genai-portal/src';
import { FakePortal } from './support/fakePortal';
import { runTask, waitForTask } from './support/scaffolder';
import { loadTemplate, templateRef, TEMPLATE_FILES } from './support/templates';

const onboard = loadTemplate('onboard-team.yaml');
const deploy = loadTemplate('deploy-model.yaml');
const apiKey = loadTemplate('request-api-key.yaml');
const quota = loadTemplate('request-gpu-quota.yaml');

describe('software templates in a scaffolder backend', () => {
  let portal: FakePortal;
  let backend: TestBackend;
  let url: string;

  before(async () => {
    portal = await new FakePortal({ readyAfterPolls: 2 }).start();
    backend = await startTestBackend({
      features: [
        import('@backstage/plugin-scaffolder-backend'),
        scaffolderModuleGenaiPortal,
        catalogServiceMock.factory({ entities: TEMPLATE_FILES.map(loadTemplate) }),
        mockServices.rootConfig.factory({ data: { genaiPortal: { baseUrl: portal.url, publicUrl: 'https://portal.example.com', token: portal.token } } }),
        mockServices.httpAuth.factory({ defaultCredentials: mockCredentials.user('user:default/jane') }),
      ],
    });
    const address = backend.server.address();
    url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  });
  after(async () => {
    await backend?.stop();
    await portal?.stop();
  });

  it('the templates are v1beta3 with titled, validated parameters and output links', () => {
    for (const template of [onboard, deploy, apiKey, quota]) {
      assert.equal(template.apiVersion, 'scaffolder.backstage.io/v1beta3');
      assert.ok(template.metadata.title);
      const pages = (template.spec as any).parameters as any[];
      for (const page of pages) {
        assert.ok(page.title);
        for (const [name, property] of Object.entries<any>(page.properties)) {
          assert.ok(property.title, `${template.metadata.name}: ${name} has a title`);
          if (property.type === 'string') assert.ok(property.pattern || property.maxLength || property.format, `${name} is validated`);
        }
      }
      assert.ok((template.spec as any).output.links.length > 0);
    }
  });

  it('onboard a team: creates it as the user, linked to the group', async () => {
    const result = await runTask(url, {
      templateRef: templateRef(onboard),
      values: { group: 'group:default/ml', team: 'ml', displayName: 'Machine learning', description: 'Models' },
    });
    assert.equal(result.status, 'completed', result.logs.join('\n'));
    assert.equal(portal.teams.get('ml')?.backstage_group_ref, 'group:default/ml');
    assert.equal(portal.teams.get('ml')?.members.get('user:default/jane'), 'admin');
    const [post] = portal.posts('/api/v1/teams');
    assert.equal(post.headers['x-backstage-user'], 'user:default/jane');
    assert.deepEqual(result.output.links[0], { title: 'Team in the GenAI portal', url: 'https://portal.example.com/console/teams/ml/' });
    assert.match(result.output.text[0].content, /Team \*\*ml\*\* is ready and you are its \*\*admin\*\*/);
  });

  it('the REST API refuses values that break a parameter pattern', async () => {
    const response = await fetch(`${url}/api/scaffolder/v2/tasks`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ templateRef: templateRef(onboard), values: { group: 'group:default/ml', team: 'Not A Slug', displayName: 'x' } }),
    });
    assert.equal(response.status, 400);
    // A deployment name with a leading digit: the portal refuses it, so the form does (pattern from the document).
    const posts = portal.posts('/api/v1/teams/ml/deployments').length;
    const leadingDigit = await fetch(`${url}/api/scaffolder/v2/tasks`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        templateRef: templateRef(deploy),
        values: { team: 'group:default/ml', model: 'resource:default/qwen2-5-7b-instruct', name: '1chat', timeoutSeconds: 60 },
      }),
    });
    assert.equal(leadingDigit.status, 400, await leadingDigit.text());
    assert.equal(portal.posts('/api/v1/teams/ml/deployments').length, posts);
  });

  it('deploy a model: team from the group, model from the catalog entity, waits until Ready', async () => {
    const result = await runTask(url, {
      templateRef: templateRef(deploy),
      values: { team: 'group:default/ml', model: 'resource:default/qwen2-5-7b-instruct', name: 'chat', cluster: 'sandbox', acceleratorType: 'nvidia-l4', minReplicas: 1, maxReplicas: 2, scaleToZero: false, timeoutSeconds: 60 },
    });
    assert.equal(result.status, 'completed', result.logs.join('\n'));
    const [post] = portal.posts('/api/v1/teams/ml/deployments');
    assert.deepEqual(post.body, { name: 'chat', model: 'qwen2-5-7b-instruct', min_replicas: 1, max_replicas: 2, scale_to_zero: false, cluster: 'sandbox', accelerator_type: 'nvidia-l4' });
    assert.ok(result.logs.some(line => /Deployment 'chat' is Ready at http:\/\/chat/.test(line)), result.logs.join('\n'));
    assert.equal(result.output.links[0].url, 'https://portal.example.com/console/teams/ml/deployments/chat/');
    assert.deepEqual(result.output.links[1], { title: 'Model in the catalog', icon: 'catalog', entityRef: 'resource:default/qwen2-5-7b-instruct' });
    assert.match(result.output.text[0].content, /is\s+\*\*Ready\*\*/);
    assert.match(result.output.text[0].content, /"model": "ml-chat"/);
    const [fit] = portal.posts('/api/v1/catalog/models/qwen2-5-7b-instruct/versions/v1/fit');
    assert.deepEqual(fit.body, { team: 'ml', min_replicas: 1, cluster: 'sandbox', accelerator_type: 'nvidia-l4' });
    assert.equal(result.output.text[1].title, 'The plan');
    assert.match(result.output.text[1].content, /\*\*1 x nvidia-l4\*\* per replica on\n\*\*sandbox\*\*, \*\*584\.00 USD\*\*/);
  });

  it('a failed deploy task retried by the scaffolder does not deploy twice (checkpoint), then completes', async () => {
    portal.failingModels.add('gpt-4o');
    const first = await runTask(url, {
      templateRef: templateRef(deploy),
      values: { team: 'group:default/ml', model: 'resource:default/gpt-4o', name: 'flaky', minReplicas: 1, maxReplicas: 1, scaleToZero: false, timeoutSeconds: 60 },
    });
    assert.equal(first.status, 'failed');
    assert.match(first.rawEvents, /Deployment 'flaky' failed: storage URI could not be loaded/);
    portal.failingModels.delete('gpt-4o'); // the platform team fixed the model
    const retried = await fetch(`${url}/api/scaffolder/v2/tasks/${first.id}/retry`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: '{}',
    });
    assert.equal(retried.status, 201, await retried.clone().text());
    const second = await waitForTask(url, first.id);
    assert.equal(second.status, 'completed', second.rawEvents);
    assert.equal(portal.posts('/api/v1/teams/ml/deployments').filter(post => post.body.name === 'flaky').length, 1);
  });

  it('a failed task retried by another user is refused: it would act as its creator in the portal', async () => {
    portal.failingModels.add('gpt-4o');
    const first = await runTask(url, {
      templateRef: templateRef(deploy),
      values: { team: 'group:default/ml', model: 'resource:default/gpt-4o', name: 'not-yours', minReplicas: 1, maxReplicas: 1, scaleToZero: false, timeoutSeconds: 60 },
    });
    assert.equal(first.status, 'failed');
    portal.failingModels.delete('gpt-4o');
    const before = portal.requests.length;
    const bob = mockCredentials.user.header('user:default/bob');
    const retried = await fetch(`${url}/api/scaffolder/v2/tasks/${first.id}/retry`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: bob },
      body: '{}',
    });
    assert.equal(retried.status, 201, await retried.clone().text());
    const second = await waitForTask(url, first.id);
    assert.equal(second.status, 'failed', second.rawEvents);
    assert.match(second.rawEvents, /created by user:default\/jane but is now being run by user:default\/bob/);
    assert.equal(portal.requests.length, before, 'no request to the portal on behalf of jane');
  });

  it('deploy a model: the portal refusal is readable in the task log', async () => {
    const result = await runTask(url, {
      templateRef: templateRef(deploy),
      values: { team: 'group:default/ml', model: 'resource:default/unknown-model', name: 'nope', minReplicas: 1, maxReplicas: 1, scaleToZero: false, timeoutSeconds: 60 },
    });
    assert.equal(result.status, 'failed');
    // The plan step asks first, so nothing is posted to deployments.
    assert.match(result.rawEvents, /The GenAI portal refused GET \/api\/v1\/catalog\/models\/unknown-model: .*\(HTTP 404\)/);
    assert.match(result.rawEvents, /Model 'unknown-model' not found in the catalog/);
    assert.ok(!portal.posts('/api/v1/teams/ml/deployments').some(post => post.body.name === 'nope'));
  });

  it('request an API key: outputs the one-time reveal link; the key is in no log or output', async () => {
    const result = await runTask(url, {
      templateRef: templateRef(apiKey),
      values: { team: 'group:default/ml', name: 'my-app', allowedModels: ['resource:default/qwen2-5-7b-instruct'] },
    });
    assert.equal(result.status, 'completed', result.logs.join('\n'));
    const credential = portal.credentials.at(-1)!;
    assert.equal(result.output.links[0].title, 'Reveal the key (once)');
    assert.equal(result.output.links[0].url, `https://portal.example.com/reveal/${credential.revealToken}`);
    assert.match(result.output.text[0].content, new RegExp(`prefix \`${credential.key.slice(0, 14)}\``));
    assert.ok(portal.issuedKeys.length > 0);
    for (const key of portal.issuedKeys) {
      assert.ok(!result.rawEvents.includes(key), 'the key must not appear in the task events');
      assert.ok(!result.rawEvents.includes(key.slice(14)), 'nor its secret part');
    }
    const task = await (await fetch(`${url}/api/scaffolder/v2/tasks/${result.id}`)).text();
    for (const key of portal.issuedKeys) assert.ok(!task.includes(key), 'nor in the stored task');
  });

  it('request GPU quota: the team from the group, GPU totals asked as the user, the request named in the output', async () => {
    const result = await runTask(url, {
      templateRef: templateRef(quota),
      values: { team: 'group:default/ml', acceleratorType: 'nvidia-l4', gpus: 6, reason: 'a second model' },
    });
    assert.equal(result.status, 'completed', result.logs.join('\n'));
    const asked = portal.quotaRequests.at(-1)!;
    assert.deepEqual([asked.team, asked.gpus, asked.max_deployments, asked.requested_by], ['ml', { 'nvidia-l4': 6 }, null, 'user:default/jane']);
    assert.deepEqual(result.output.links[0], { title: 'Team in the GenAI portal', url: 'https://portal.example.com/console/teams/ml/' });
    assert.match(result.output.text[0].content, new RegExp(`Quota request \\*\\*${asked.id}\\*\\* of team \\*\\*ml\\*\\* is\\s+\\*\\*pending\\*\\*`));
  });

  it('dry run of each template creates nothing in the portal; the deploy template shows its plan', async () => {
    const before = portal.requests.length;
    const logs: string[] = [];
    for (const [template, values] of [
      [onboard, { group: 'group:default/dry', team: 'dry', displayName: 'Dry' }],
      [deploy, { team: 'group:default/ml', model: 'resource:default/qwen2-5-7b-instruct', name: 'dry', minReplicas: 1, maxReplicas: 1, scaleToZero: false, timeoutSeconds: 60 }],
      [apiKey, { team: 'group:default/ml', name: 'dry' }],
    ] as const) {
      const response = await fetch(`${url}/api/scaffolder/v2/dry-run`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ template, values, directoryContents: [] }),
      });
      const body: any = await response.json();
      assert.equal(response.status, 200, JSON.stringify(body));
      const messages = body.log.map((entry: any) => entry.body.message).join('\n');
      assert.match(messages, /Dry run: (would |team )/, messages);
      logs.push(messages);
    }
    // Only reads and the fit (which creates nothing): the team, the model, the plan.
    const calls = portal.requests.slice(before).map(request => `${request.method} ${request.path}`);
    assert.deepEqual(calls, [
      'GET /api/v1/teams/dry',
      'GET /api/v1/teams',
      'GET /api/v1/catalog/models/qwen2-5-7b-instruct',
      'POST /api/v1/catalog/models/qwen2-5-7b-instruct/versions/v1/fit',
    ]);
    assert.match(logs[1], /Dry run: Plan for 'qwen2-5-7b-instruct' \(team 'ml'\): .*Fits on 1 x nvidia-l4 per replica on sandbox .*584\.00 USD a month/);
    assert.match(logs[1], /Dry run: would deploy model 'qwen2-5-7b-instruct' as 'dry' .*"accelerator_type":"nvidia-l4"/);
  });

  it('cancelling a deploy task stops its wait: the action honours the abort signal', async () => {
    const slowPortal = await new FakePortal({ readyAfterPolls: 100_000 }).start();
    slowPortal.addTeam('ml', { 'user:default/jane': 'admin' }, 'group:default/ml');
    const slow = await startTestBackend({
      features: [
        import('@backstage/plugin-scaffolder-backend'),
        scaffolderModuleGenaiPortal,
        catalogServiceMock.factory({ entities: TEMPLATE_FILES.map(loadTemplate) }),
        mockServices.rootConfig.factory({ data: { genaiPortal: { baseUrl: slowPortal.url, token: slowPortal.token } } }),
        mockServices.httpAuth.factory({ defaultCredentials: mockCredentials.user('user:default/jane') }),
      ],
    });
    try {
      const address = slow.server.address();
      const slowUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
      const created = await fetch(`${slowUrl}/api/scaffolder/v2/tasks`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({
          templateRef: templateRef(deploy),
          values: { team: 'group:default/ml', model: 'resource:default/qwen2-5-7b-instruct', name: 'slow', minReplicas: 1, maxReplicas: 1, scaleToZero: false, timeoutSeconds: 600 },
        }),
      });
      const { id } = (await created.json()) as any;
      // Wait until the action is polling, then cancel.
      const polls = () => slowPortal.requests.filter(r => r.method === 'GET' && r.path === '/api/v1/teams/ml/deployments/slow').length;
      const deadline = Date.now() + 20_000;
      while (polls() === 0 && Date.now() < deadline) await new Promise(r => setTimeout(r, 100));
      assert.ok(polls() > 0, 'the action started waiting');
      const cancelled = await fetch(`${slowUrl}/api/scaffolder/v2/tasks/${id}/cancel`, { method: 'POST' });
      assert.equal(cancelled.status, 200);
      const result = await waitForTask(slowUrl, id, {}, 20_000);
      // scaffolder-backend 4.2 records the cancellation as an event and ends the task as failed
      // with the action's own error, which says it stopped because it was cancelled.
      assert.ok(['cancelled', 'failed'].includes(result.status), result.status);
      assert.ok(result.events.some(event => event.type === 'cancelled'), result.rawEvents);
      assert.match(result.rawEvents, /Cancelled while waiting for deployment 'slow' to become Ready/);
      const after = polls();
      await new Promise(r => setTimeout(r, 6_000)); // longer than the 5 s poll interval
      assert.equal(polls(), after, 'no polling after the cancellation');
    } finally {
      await slow.stop();
      await slowPortal.stop();
    }
  });
});
