/**
 * The GenAI portal's catalog entity provider as a backend module (new backend system):
 * backend.add(import('@genai-portal/plugin-catalog-backend-module-genai-portal')).
 */
export { catalogModuleGenaiPortal as default } from './module';
export { catalogModuleGenaiPortal, checkCatalogTokenScopes, CATALOG_SCOPE } from './module';
export { GenaiPortalEntityProvider } from './provider';
export type { GenaiPortalEntityProviderOptions } from './provider';
export { deploymentToEntities, modelToEntity, openAiDefinition, apiRoutes, entityName } from './entities';
