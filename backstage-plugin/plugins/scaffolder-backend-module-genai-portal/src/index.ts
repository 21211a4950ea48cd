/**
 * The GenAI portal's scaffolder actions as a backend module (new backend system):
 * backend.add(import('@genai-portal/plugin-scaffolder-backend-module-genai-portal')).
 */
export { scaffolderModuleGenaiPortal as default } from './module';
export { scaffolderModuleGenaiPortal, createGenaiPortalActions, checkUserTokenSetting } from './module';
export { createOnboardTeamAction } from './actions/onboardTeam';
export { createDeployModelAction } from './actions/deployModel';
export { createPlanDeploymentAction } from './actions/planDeployment';
export { createDeleteDeploymentAction } from './actions/deleteDeployment';
export { createCredentialAction } from './actions/createCredential';
export { createRequestQuotaAction } from './actions/requestQuota';
export type { PortalActionOptions } from './actions/common';
