/**
 * A real Backstage backend (new backend system) with the catalog, the scaffolder, guest sign-in and
 * the two GenAI portal modules, as an adopter would assemble it. Run: node --import tsx backend.ts --config <file>
 */
import { createBackend } from '@backstage/backend-defaults';

const backend = createBackend();
backend.add(import('@backstage/plugin-auth-backend'));
backend.add(import('@backstage/plugin-auth-backend-module-guest-provider'));
backend.add(import('@backstage/plugin-catalog-backend'));
backend.add(import('@backstage/plugin-catalog-backend-module-scaffolder-entity-model'));
backend.add(import('@backstage/plugin-scaffolder-backend'));
backend.add(import('@genai-portal/plugin-scaffolder-backend-module-genai-portal'));
backend.add(import('@genai-portal/plugin-catalog-backend-module-genai-portal'));
backend.start();
