/** The scaffolder backend module that registers the GenAI portal actions (new backend system). */
import { coreServices, createBackendModule } from '@backstage/backend-plugin-api';
import { scaffolderActionsExtensionPoint } from '@backstage/plugin-scaffolder-node';
import { portalClientFromConfig, readPortalConfig } from '../config';
import { createCredentialAction } from './actions/createCredential';
import { createDeleteDeploymentAction } from './actions/deleteDeployment';
import { createDeployModelAction } from './actions/deployModel';
import { createOnboardTeamAction } from './actions/onboardTeam';
import { createPlanDeploymentAction } from './actions/planDeployment';
import type { PortalActionOptions } from './actions/common';
import type { PortalClient } from '../portalClient';

export function createGenaiPortalActions(options: PortalActionOptions) {
  return [
    createOnboardTeamAction(options),
    createPlanDeploymentAction(options),
    createDeployModelAction(options),
    createDeleteDeploymentAction(options),
    createCredentialAction(options),
  ];
}

export const scaffolderModuleGenaiPortal = createBackendModule({
  pluginId: 'scaffolder',
  moduleId: 'genai-portal',
  register(reg) {
    reg.registerInit({
      deps: {
        scaffolder: scaffolderActionsExtensionPoint,
        config: coreServices.rootConfig,
        logger: coreServices.logger,
      },
      async init({ scaffolder, config, logger }) {
        const portal = readPortalConfig(config);
        const client: PortalClient = portalClientFromConfig(config);
        scaffolder.addActions(
          ...createGenaiPortalActions({
            client,
            publicUrl: portal.publicUrl,
            forwardUserToken: portal.forwardUserToken,
          }),
        );
        logger.info(`GenAI portal actions registered for ${portal.baseUrl}`);
      },
    });
  },
});
