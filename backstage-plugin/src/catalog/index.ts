/** Default export for backend.add(import('.../catalog')). */
export { catalogModuleGenaiPortal as default } from './module';
