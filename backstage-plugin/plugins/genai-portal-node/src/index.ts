/**
 * What the GenAI portal's Backstage modules share: the portal's REST client (generated from the portal's OpenAPI
 * document; service token, the user it acts for, Idempotency-Key, problem details made readable), the input rules of
 * that document, the `genaiPortal` config (schema: config.d.ts) and links to the portal console on its public URL.
 */
export * from './portalClient';
export { fieldRule, inputRules } from './inputRules';
export type { FieldRule } from './inputRules';
export { readPortalConfig, portalClientFromConfig } from './config';
export type { PortalConfig } from './config';
export { consolePath, consoleUrl } from './links';
export type { ConsolePage } from './links';
