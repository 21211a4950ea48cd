/** The scaffolder backend module that registers the GenAI portal actions (new backend system). */
import { coreServices, createBackendModule, LoggerService } from '@backstage/backend-plugin-api';
import { scaffolderActionsExtensionPoint } from '@backstage/plugin-scaffolder-node';
import { portalClientFromConfig, readPortalConfig } from '@genai-portal/plugin-genai-portal-node';
import { createCredentialAction } from './actions/createCredential';
import { createDeleteDeploymentAction } from './actions/deleteDeployment';
import { createDeployModelAction } from './actions/deployModel';
import { createOnboardTeamAction } from './actions/onboardTeam';
import { createPlanDeploymentAction } from './actions/planDeployment';
import { createRequestQuotaAction } from './actions/requestQuota';
import type { PortalActionOptions } from './actions/common';
import type { PortalClient } from '@genai-portal/plugin-genai-portal-node';

/**
 * Ask the portal at startup (GET /api/v1/me with the service token) whether it verifies forwarded Backstage user
 * tokens (`backstage_user_token_required`: PORTAL_BACKSTAGE_JWKS_URL is set there) and compare with
 * genaiPortal.forwardUserToken. forwardUserToken: false against such a portal would fail every run with
 * `backstage_token_missing`: this logs an error once and makes every action refuse before calling, naming the
 * setting. The reverse (tokens forwarded to a portal that ignores them) is only a warning. A portal that does not
 * answer is a warning too (it may start later); the actions then explain a `backstage_token_missing` themselves.
 */
export async function checkUserTokenSetting(
  client: PortalClient,
  forwardUserToken: boolean,
  logger: LoggerService,
  check: { problem?: string },
): Promise<void> {
  let required: boolean | undefined;
  try {
    const me = await client.me();
    required = me.backstage_user_token_required;
    if (!me.scopes.includes('backstage')) {
      logger.warn(
        `genaiPortal.token has the portal scopes [${me.scopes.join(', ')}], not 'backstage': the portal will not let it act ` +
          'for Backstage users (manage.py issue_token --service backstage --scope backstage).',
      );
    }
  } catch (error) {
    logger.warn(`Could not ask the GenAI portal at ${client.baseUrl} about its settings at startup (GET /api/v1/me): ${String(error)}`);
    return;
  }
  if (required === true && !forwardUserToken) {
    check.problem =
      `The GenAI portal at ${client.baseUrl} verifies Backstage user tokens (PORTAL_BACKSTAGE_JWKS_URL is set there), ` +
      'but genaiPortal.forwardUserToken is false, so every call would be refused (backstage_token_missing). ' +
      'Set genaiPortal.forwardUserToken: true in app-config (or unset PORTAL_BACKSTAGE_JWKS_URL on the portal) and restart.';
    logger.error(check.problem);
  } else if (required === false && forwardUserToken) {
    logger.warn(
      `genaiPortal.forwardUserToken is on but the GenAI portal at ${client.baseUrl} does not verify Backstage user tokens ` +
        '(PORTAL_BACKSTAGE_JWKS_URL is unset there): the portal trusts X-Backstage-User from the service token alone.',
    );
  }
}

export function createGenaiPortalActions(options: PortalActionOptions) {
  return [
    createOnboardTeamAction(options),
    createPlanDeploymentAction(options),
    createDeployModelAction(options),
    createDeleteDeploymentAction(options),
    createCredentialAction(options),
    createRequestQuotaAction(options),
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
        const portalCheck: { problem?: string } = {};
        scaffolder.addActions(
          ...createGenaiPortalActions({
            client,
            publicUrl: portal.publicUrl,
            forwardUserToken: portal.forwardUserToken,
            portalCheck,
          }),
        );
        logger.info(`GenAI portal actions registered for ${portal.baseUrl}`);
        // In the background: the backend does not wait for the portal to start.
        void checkUserTokenSetting(client, portal.forwardUserToken, logger, portalCheck);
      },
    });
  },
});
