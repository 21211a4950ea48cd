/** Reading the `genaiPortal` section of app-config (its schema is config.d.ts). */
import type { Config } from '@backstage/config';
import { PortalClient } from './portalClient';

export interface PortalConfig {
  baseUrl: string;
  publicUrl: string;
  token: string;
  forwardUserToken: boolean;
  timeoutMs: number;
}

export function readPortalConfig(config: Config): PortalConfig {
  const section = config.getConfig('genaiPortal');
  const baseUrl = section.getString('baseUrl').replace(/\/+$/, '');
  return {
    baseUrl,
    publicUrl: (section.getOptionalString('publicUrl') ?? baseUrl).replace(/\/+$/, ''),
    token: section.getString('token'),
    forwardUserToken: section.getOptionalBoolean('forwardUserToken') ?? false,
    timeoutMs: (section.getOptionalNumber('requestTimeoutSeconds') ?? 30) * 1000,
  };
}

export function portalClientFromConfig(config: Config, token?: string): PortalClient {
  const portal = readPortalConfig(config);
  return new PortalClient({ baseUrl: portal.baseUrl, token: token ?? portal.token, timeoutMs: portal.timeoutMs });
}
