/**
 * Backstage backend modules for the GenAI platform portal: scaffolder actions and a catalog provider.
 * Add them with backend.add(import('@genai-portal/backstage-plugin/scaffolder')) and .../catalog,
 * or import the named modules from here.
 */
export { scaffolderModuleGenaiPortal, createGenaiPortalActions } from './scaffolder/module';
export { catalogModuleGenaiPortal } from './catalog/module';
export { GenaiPortalEntityProvider } from './catalog/provider';
export { PortalClient, PortalError, formatProblem } from './portalClient';
export { createOnboardTeamAction } from './scaffolder/actions/onboardTeam';
export { createDeployModelAction } from './scaffolder/actions/deployModel';
export { createPlanDeploymentAction } from './scaffolder/actions/planDeployment';
export { createDeleteDeploymentAction } from './scaffolder/actions/deleteDeployment';
export { createCredentialAction } from './scaffolder/actions/createCredential';
export { createRequestQuotaAction } from './scaffolder/actions/requestQuota';
