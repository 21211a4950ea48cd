/** config.d.ts is the plugin's config schema: Backstage's own loader compiles it and validates app-config with it. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { loadConfigSchema } from '@backstage/config-loader';

const valid = {
  genaiPortal: {
    baseUrl: 'http://portal:8000',
    publicUrl: 'https://genai.example.com',
    token: 'service-token',
    forwardUserToken: true,
    requestTimeoutSeconds: 20,
    catalog: { token: 'admin-token', namespace: 'default', schedule: { frequency: { minutes: 1 }, timeout: { seconds: 50 } } },
  },
};

describe('config schema (config.d.ts)', () => {
  it('accepts a full genaiPortal section, refuses a wrong type, and keeps the tokens secret', { timeout: 120_000 }, async () => {
    const schema = await loadConfigSchema({
      dependencies: [],
      packagePaths: [resolve(__dirname, '..', 'plugins', 'genai-portal-node', 'package.json')],
      excludePackageDependencies: true,
    });
    const processed = schema.process([{ data: valid, context: 'app-config.yaml' }], { visibility: ['frontend', 'backend', 'secret'] });
    assert.deepEqual(processed[0].data, valid);

    assert.throws(
      () => schema.process([{ data: { genaiPortal: { ...valid.genaiPortal, forwardUserToken: 'yes' } }, context: 'app-config.yaml' }]),
      /forwardUserToken/,
    );
    assert.throws(() => schema.process([{ data: { genaiPortal: { baseUrl: 'http://portal' } }, context: 'app-config.yaml' }]), /token/);

    // What a frontend would get: no token, no secret of the catalog.
    const frontend = schema.process([{ data: valid, context: 'app-config.yaml' }], { visibility: ['frontend'] });
    const visible = JSON.stringify(frontend);
    assert.ok(!visible.includes('service-token') && !visible.includes('admin-token'), visible);
    const secrets = schema.process([{ data: valid, context: 'app-config.yaml' }], { visibility: ['secret'] });
    assert.deepEqual((secrets[0].data as any).genaiPortal.token, 'service-token');
    assert.deepEqual((secrets[0].data as any).genaiPortal.catalog.token, 'admin-token');
  });
});
