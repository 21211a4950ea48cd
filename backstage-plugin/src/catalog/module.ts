/** The catalog backend module that adds the GenAI portal entity provider (new backend system). */
import {
  coreServices,
  createBackendModule,
  readSchedulerServiceTaskScheduleDefinitionFromConfig,
} from '@backstage/backend-plugin-api';
import { catalogProcessingExtensionPoint } from '@backstage/plugin-catalog-node';
import { portalClientFromConfig, readPortalConfig } from '../config';
import { GenaiPortalEntityProvider } from './provider';

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
        const schedule = section?.has('schedule')
          ? readSchedulerServiceTaskScheduleDefinitionFromConfig(section.getConfig('schedule'))
          : { frequency: { seconds: 60 }, timeout: { seconds: 50 } };
        const namespace = section?.getOptionalString('namespace') ?? 'default';
        catalog.addEntityProvider(
          new GenaiPortalEntityProvider({
            client: portalClientFromConfig(config, section?.getOptionalString('token')),
            logger,
            taskRunner: scheduler.createScheduledTaskRunner(schedule),
            mapping: {
              publicUrl: portal.publicUrl,
              namespace,
              modelOwner: section?.getOptionalString('modelOwner') ?? `group:${namespace}/genai-platform`,
              lifecycle: section?.getOptionalString('lifecycle') ?? 'production',
            },
          }),
        );
      },
    });
  },
});
