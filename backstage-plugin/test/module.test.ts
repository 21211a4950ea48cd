import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mockServices, startTestBackend } from '@backstage/backend-test-utils';
import { scaffolderActionsExtensionPoint } from '@backstage/plugin-scaffolder-node';
import { catalogProcessingExtensionPoint } from '@backstage/plugin-catalog-node';
import { scaffolderModuleGenaiPortal, catalogModuleGenaiPortal } from '../src';
import scaffolderDefault from '../src/scaffolder';
import catalogDefault from '../src/catalog';

const config = { genaiPortal: { baseUrl: 'http://127.0.0.1:9/', token: 'service-token', catalog: { token: 'admin-token', schedule: { frequency: { minutes: 10 }, timeout: { minutes: 1 } } } } };

describe('backend modules', () => {
  it('the scaffolder module registers the four actions', async () => {
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
