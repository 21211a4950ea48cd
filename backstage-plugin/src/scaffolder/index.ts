/** Default export for backend.add(import('.../scaffolder')). */
export { scaffolderModuleGenaiPortal as default } from './module';
