import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PortalClient } from '../plugins/genai-portal-node/src/portalClient';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FakePortal } from './support/fakePortal';

describe('PortalClient: links the portal answers', () => {
  let portal: FakePortal;
  let trap: FakePortal; // another server, where a forged `next` link points: it must never see a token
  before(async () => {
    portal = await new FakePortal().start();
    trap = await new FakePortal().start();
  });
  after(async () => {
    await portal.stop();
    await trap.stop();
  });

  const client = () => new PortalClient({ baseUrl: `${portal.url}/`, token: portal.adminToken, timeoutMs: 5000 });

  it('follows same-origin absolute `next` links, rebuilt on baseUrl', async () => {
    portal.nextOrigin = undefined;
    const models = await client().listModels({ pageSize: 1 });
    assert.deepEqual(models.map(model => model.slug), ['qwen2-5-7b-instruct', 'gpt-4o']);
    const pages = portal.requests.filter(request => request.path === '/api/v1/catalog/models');
    assert.equal(pages.length, 2);
  });

  it('refuses a `next` link to another origin and sends it no credentials', async () => {
    portal.nextOrigin = trap.url.replace('127.0.0.1', 'localhost'); // another host (and port) than baseUrl
    try {
      await assert.rejects(client().listModels({ pageSize: 1 }), (error: Error) => {
        assert.match(error.message, /answered a link to http:\/\/localhost:\d+\/api\/v1\/catalog\/models, outside the configured genaiPortal.baseUrl/);
        assert.match(error.message, /refusing to send the portal credentials there/);
        return true;
      });
      assert.equal(trap.requests.length, 0);
    } finally {
      portal.nextOrigin = undefined;
    }
  });

  it('refuses a `next` link with another scheme (https -> http downgrade or the reverse)', async () => {
    portal.nextOrigin = portal.url.replace('http://', 'https://');
    try {
      await assert.rejects(client().listModels({ pageSize: 1 }), /answered a link to https:\/\/127\.0\.0\.1:\d+\/api\/v1\/catalog\/models, outside/);
    } finally {
      portal.nextOrigin = undefined;
    }
  });

  it('follows a `next` link only to the list it is reading, even on the portal origin', async () => {
    portal.nextPath = '/api/v1/tokens';
    const before = portal.requests.filter(request => request.path === '/api/v1/tokens').length;
    try {
      await assert.rejects(client().listModels({ pageSize: 1 }), /answered a next link to \/api\/v1\/tokens while listing \/api\/v1\/catalog\/models; refusing/);
      assert.equal(portal.requests.filter(request => request.path === '/api/v1/tokens').length, before);
    } finally {
      portal.nextPath = undefined;
    }
  });

  it('never sends a request with credentials to an absolute URL elsewhere, nor outside the baseUrl path', async () => {
    const before = trap.requests.length;
    assert.throws(() => client().resolve(`${trap.url}/api/v1/me`), /outside the configured genaiPortal.baseUrl/);
    assert.throws(() => client().resolve(`//localhost:1/api/v1/me`), /outside the configured genaiPortal.baseUrl/);
    const prefixed = new PortalClient({ baseUrl: `${portal.url}/portal`, token: portal.adminToken });
    assert.throws(() => prefixed.resolve(`${portal.url}/admin/`), /outside the configured genaiPortal.baseUrl/);
    assert.equal(prefixed.resolve(`${portal.url}/portal/api/v1/teams?page=2#x`), `${portal.url}/portal/api/v1/teams?page=2`);
    assert.equal(prefixed.resolve('/api/v1/teams'), `${portal.url}/portal/api/v1/teams`);
    assert.equal(trap.requests.length, before);
  });
});

describe('PortalClient: a connection closed before the answer', () => {
  /** A server that closes the connection of its first request without answering, then answers every other. */
  async function closingOnce(): Promise<{ url: string; requests: string[]; close: () => Promise<void> }> {
    const requests: string[] = [];
    const server = createServer((req, res) => {
      requests.push(`${req.method} ${req.url} ${req.headers['idempotency-key'] ?? ''}`.trim());
      if (requests.length === 1) {
        req.socket.destroy();
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ user: { ref: 'user:default/jane' }, platform_admin: false, acting_through: null, scopes: [], backstage_user_token_required: false, teams: [] }));
    });
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return { url, requests, close: () => new Promise(resolve => server.close(() => resolve())) };
  }

  it('sends a read again once (the server closed an idle keep-alive connection as it was reused)', async () => {
    const server = await closingOnce();
    try {
      const me = await new PortalClient({ baseUrl: server.url, token: 't' }).me();
      assert.deepEqual(me.scopes, []);
      assert.deepEqual(server.requests, ['GET /api/v1/me', 'GET /api/v1/me']);
    } finally {
      await server.close();
    }
  });

  it('never sends a POST without an Idempotency-Key twice; one with a key goes again under the same key', async () => {
    const server = await closingOnce();
    try {
      const client = new PortalClient({ baseUrl: server.url, token: 't' });
      const identity = { userRef: 'user:default/jane' };
      await assert.rejects(client.fitModel('m', 'v1', { concurrency: 1 }, identity), /Could not reach the GenAI portal .*\(POST \/api\/v1\/catalog\/models\/m\/versions\/v1\/fit\): TypeError: fetch failed \(other side closed\)/);
      assert.deepEqual(server.requests, ['POST /api/v1/catalog/models/m/versions/v1/fit']);
    } finally {
      await server.close();
    }
    const keyed = await closingOnce();
    try {
      const client = new PortalClient({ baseUrl: keyed.url, token: 't' });
      await client.createQuotaRequest('ml', { reason: 'r' }, { userRef: 'user:default/jane' }, 'key-1');
      assert.deepEqual(keyed.requests, ['POST /api/v1/teams/ml/quota-requests key-1', 'POST /api/v1/teams/ml/quota-requests key-1']);
    } finally {
      await keyed.close();
    }
  });
});
