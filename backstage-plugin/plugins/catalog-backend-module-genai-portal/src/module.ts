/** The catalog backend module that adds the GenAI portal entity provider (new backend system). */
import {
  coreServices,
  createBackendModule,
  LoggerService,
  readSchedulerServiceTaskScheduleDefinitionFromConfig,
} from '@backstage/backend-plugin-api';
import { catalogProcessingExtensionPoint } from '@backstage/plugin-catalog-node';
import { portalClientFromConfig, readPortalConfig } from '@genai-portal/plugin-genai-portal-node';
import type { PortalClient } from '@genai-portal/plugin-genai-portal-node';
import { GenaiPortalEntityProvider } from './provider';

/** The portal scope the mirror reads with: every team, its deployments and the model catalog, nothing else. */
export const CATALOG_SCOPE = 'catalog:read';

/**
 * Ask the portal which scopes the catalog token has (`GET /api/v1/me`) and warn when `catalog:read` is
 * missing (the mirror would see only part of the portal, or nothing). Never throws: a portal that is down
 * at startup is the provider's business, and the mirror retries on its schedule.
 */
export async function checkCatalogTokenScopes(client: PortalClient, logger: LoggerService): Promise<void> {
  try {
    const { scopes } = await client.me();
    if (!scopes.includes(CATALOG_SCOPE)) {
      logger.error(
        `genaiPortal.catalog.token has the portal scopes [${scopes.join(', ')}], not '${CATALOG_SCOPE}': the catalog mirror ` +
          `refuses to run until it gets a portal service token with scope ${CATALOG_SCOPE} (manage.py issue_token ` +
          `--service backstage-catalog --scope ${CATALOG_SCOPE}); another token would see only part of the portal.`,
      );
    } else if (scopes.length > 1) {
      logger.warn(
        `genaiPortal.catalog.token has the portal scopes [${scopes.join(', ')}]; the catalog mirror needs only ` +
          `'${CATALOG_SCOPE}', so give it a token with that scope alone.`,
      );
    }
  } catch (error) {
    logger.warn(`Could not check the scopes of genaiPortal.catalog.token at startup (GET /api/v1/me): ${String(error)}`);
  }
}

export const catalogModuleGenaiPortal = createBackendModule({
  pluginId: 'catalog',
  moduleId: 'genai-portal',
  register(reg) {
    reg.registerInit({
      deps: {
        catalog: catalogProcessingExtensionPoint,
        config: coreServices.rootConfig,
        logger: coreServices.logger,
        scheduler: coreServices.scheduler,
      },
      async init({ catalog, config, logger, scheduler }) {
        const portal = readPortalConfig(config);
        const section = config.getOptionalConfig('genaiPortal.catalog');
        const token = section?.getOptionalString('token');
        if (!token) {
          // Never the actions' `backstage` token: it acts for users and cannot read every team.
          logger.warn(
            `genaiPortal.catalog.token is not set, so the GenAI portal catalog mirror is off (no models or deployments ` +
              `from ${portal.baseUrl} in the catalog). Set it to a portal service token with scope ${CATALOG_SCOPE} ` +
              `(manage.py issue_token --service backstage-catalog --scope ${CATALOG_SCOPE}).`,
          );
          return;
        }
        const schedule = section?.has('schedule')
          ? readSchedulerServiceTaskScheduleDefinitionFromConfig(section.getConfig('schedule'))
          : { frequency: { seconds: 60 }, timeout: { seconds: 50 } };
        const namespace = section?.getOptionalString('namespace') ?? 'default';
        const client = portalClientFromConfig(config, token);
        catalog.addEntityProvider(
          new GenaiPortalEntityProvider({
            client,
            logger,
            requiredScope: CATALOG_SCOPE,
            taskRunner: scheduler.createScheduledTaskRunner(schedule),
            mapping: {
              publicUrl: portal.publicUrl,
              namespace,
              modelOwner: section?.getOptionalString('modelOwner') ?? `group:${namespace}/genai-platform`,
              lifecycle: section?.getOptionalString('lifecycle') ?? 'production',
            },
          }),
        );
        // In the background: the backend does not wait for the portal to start.
        void checkCatalogTokenScopes(client, logger);
      },
    });
  },
});
