/**
 * What the GenAI portal's Backstage modules share: the portal's REST client (service token, the user it acts for,
 * Idempotency-Key, problem details made readable), the `genaiPortal` config (schema: config.d.ts) and links to the
 * portal console on its public URL.
 */
export * from './portalClient';
export { readPortalConfig, portalClientFromConfig } from './config';
export type { PortalConfig } from './config';
export { consolePath, consoleUrl } from './links';
export type { ConsolePage } from './links';
