import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mockServices, startTestBackend } from '@backstage/backend-test-utils';
import { scaffolderActionsExtensionPoint } from '@backstage/plugin-scaffolder-node';
import { catalogProcessingExtensionPoint } from '@backstage/plugin-catalog-node';
import { coreServices, createServiceFactory } from '@backstage/backend-plugin-api';
import { scaffolderModuleGenaiPortal } from '../plugins/scaffolder-backend-module-genai-portal/src';
import { catalogModuleGenaiPortal } from '../plugins/catalog-backend-module-genai-portal/src';
import { checkCatalogTokenScopes } from '../plugins/catalog-backend-module-genai-portal/src/module';
import { PortalClient } from '../plugins/genai-portal-node/src/portalClient';
import { FakePortal } from './support/fakePortal';
import scaffolderDefault from '../plugins/scaffolder-backend-module-genai-portal/src';
import catalogDefault from '../plugins/catalog-backend-module-genai-portal/src';

const config = { genaiPortal: { baseUrl: 'http://127.0.0.1:9/', token: 'service-token', catalog: { token: 'admin-token', schedule: { frequency: { minutes: 10 }, timeout: { minutes: 1 } } } } };

function recordingLogger() {
  const lines: Array<{ level: string; message: string }> = [];
  const logger: any = {
    info: (message: string) => lines.push({ level: 'info', message }),
    warn: (message: string) => lines.push({ level: 'warn', message }),
    error: (message: string) => lines.push({ level: 'error', message }),
    debug: () => {},
    child: () => logger,
  };
  return { lines, logger, factory: createServiceFactory({ service: coreServices.logger, deps: {}, factory: () => logger }) };
}

function catalogExtensionPoint(providers: any[]): [typeof catalogProcessingExtensionPoint, any] {
  return [
    catalogProcessingExtensionPoint,
    { addEntityProvider: (...p: any[]) => providers.push(...p.flat()), addProcessor: () => {}, setOnProcessingErrorHandler: () => {} },
  ];
}

describe('backend modules', () => {
  it('the scaffolder module registers the six actions', async () => {
    const added: any[] = [];
    const backend = await startTestBackend({
      extensionPoints: [[scaffolderActionsExtensionPoint, { addActions: (...actions: any[]) => added.push(...actions) }]],
      features: [scaffolderModuleGenaiPortal, mockServices.rootConfig.factory({ data: config })],
    });
    try {
      assert.deepEqual(added.map(action => action.id).sort(), [
        'genai-portal:credential:create',
        'genai-portal:deployment:create',
        'genai-portal:deployment:delete',
        'genai-portal:deployment:plan',
        'genai-portal:quota:request',
        'genai-portal:team:onboard',
      ]);
      assert.ok(added.every(action => action.supportsDryRun));
    } finally {
      await backend.stop();
    }
  });

  it('the catalog module adds the entity provider; default exports are the modules', async () => {
    const providers: any[] = [];
    const backend = await startTestBackend({
      extensionPoints: [
        [
          catalogProcessingExtensionPoint,
          {
            addEntityProvider: (...p: any[]) => providers.push(...p.flat()),
            addProcessor: () => {},
            setOnProcessingErrorHandler: () => {},
          },
        ],
      ],
      features: [catalogModuleGenaiPortal, mockServices.rootConfig.factory({ data: config })],
    });
    try {
      assert.equal(providers.length, 1);
      assert.equal(providers[0].getProviderName(), 'genai-portal');
    } finally {
      await backend.stop();
    }
    assert.equal(scaffolderDefault, scaffolderModuleGenaiPortal);
    assert.equal(catalogDefault, catalogModuleGenaiPortal);
  });

  it('without genaiPortal.catalog.token the mirror is off with a warning: the backstage token is never used for it', async () => {
    const providers: any[] = [];
    const log = recordingLogger();
    const { catalog: _catalog, ...withoutCatalog } = config.genaiPortal;
    for (const genaiPortal of [withoutCatalog, { ...withoutCatalog, catalog: { namespace: 'default' } }]) {
      const backend = await startTestBackend({
        extensionPoints: [catalogExtensionPoint(providers)],
        features: [catalogModuleGenaiPortal, log.factory, mockServices.rootConfig.factory({ data: { genaiPortal } })],
      });
      await backend.stop();
    }
    assert.equal(providers.length, 0);
    const warnings = log.lines.filter(line => line.level === 'warn').map(line => line.message);
    assert.equal(warnings.length, 2);
    assert.match(warnings[0], /genaiPortal\.catalog\.token is not set, so the GenAI portal catalog mirror is off/);
    assert.match(warnings[0], /portal service token with scope catalog:read/);
  });

  it('at startup, an error when the catalog token lacks the catalog:read scope', async () => {
    const portal = await new FakePortal({ adminScopes: ['admin'] }).start();
    const providers: any[] = [];
    const log = recordingLogger();
    try {
      const backend = await startTestBackend({
        extensionPoints: [catalogExtensionPoint(providers)],
        features: [
          catalogModuleGenaiPortal,
          log.factory,
          mockServices.rootConfig.factory({ data: { genaiPortal: { baseUrl: portal.url, token: portal.token, catalog: { token: portal.adminToken, schedule: { frequency: { minutes: 10 }, timeout: { minutes: 1 } } } } } }),
        ],
      });
      try {
        assert.equal(providers.length, 1);
        for (let i = 0; i < 100 && !log.lines.some(line => line.level === 'error'); i++) await new Promise(resolve => setTimeout(resolve, 20));
        const error = log.lines.find(line => line.level === 'error')?.message ?? '';
        assert.match(error, /genaiPortal\.catalog\.token has the portal scopes \[admin\], not 'catalog:read': the catalog mirror refuses to run/);
        const me = portal.requests.find(request => request.path === '/api/v1/me');
        assert.equal(me?.headers.authorization, `Bearer ${portal.adminToken}`);
        assert.equal(me?.headers['x-backstage-user'], undefined);
      } finally {
        await backend.stop();
      }
    } finally {
      await portal.stop();
    }
  });

  it('the scope check: quiet for catalog:read alone, warns for extra scopes or an unreachable portal', async () => {
    for (const [scopes, expected] of [
      [['catalog:read'], undefined],
      [['catalog:read', 'backstage'], /needs only 'catalog:read'/],
      [['backstage'], /\[backstage\], not 'catalog:read'/],
    ] as const) {
      const portal = await new FakePortal({ adminScopes: [...scopes] }).start();
      const log = recordingLogger();
      try {
        await checkCatalogTokenScopes(new PortalClient({ baseUrl: portal.url, token: portal.adminToken }), log.logger);
        const warnings = log.lines.filter(line => line.level === 'warn' || line.level === 'error').map(line => line.message);
        if (expected) assert.match(warnings.join('\n'), expected);
        else assert.deepEqual(warnings, []);
      } finally {
        await portal.stop();
      }
    }
    const log = recordingLogger();
    await checkCatalogTokenScopes(new PortalClient({ baseUrl: 'http://127.0.0.1:9', token: 't', timeoutMs: 2000 }), log.logger);
    assert.match(log.lines[0].message, /Could not check the scopes of genaiPortal\.catalog\.token at startup/);
  });

  it('a missing genaiPortal section stops the backend with the key named', async () => {
    await assert.rejects(
      startTestBackend({
        extensionPoints: [[scaffolderActionsExtensionPoint, { addActions: () => {} }]],
        features: [scaffolderModuleGenaiPortal, mockServices.rootConfig.factory({ data: {} })],
      }),
      /genaiPortal/,
    );
  });
});
