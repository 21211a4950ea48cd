/**
 * Links shown to people: the portal console's pages on the portal's public URL (genaiPortal.publicUrl), in one place.
 * The console serves exactly these paths; the portal builds the same shapes (portal/core/links.py):
 * `/console/`, `/console/fleet/`, `/console/teams/<team>/`, `/console/teams/<team>/deployments/<deployment>/`,
 * `/console/models/<model>/`.
 */

export type ConsolePage = { team: string; deployment?: string } | { model: string } | { fleet: true } | Record<string, never>;

export function consolePath(page: ConsolePage = {}): string {
  const segment = (value: string) => encodeURIComponent(value);
  if ('model' in page) return `/console/models/${segment(page.model)}/`;
  if ('team' in page) {
    return page.deployment
      ? `/console/teams/${segment(page.team)}/deployments/${segment(page.deployment)}/`
      : `/console/teams/${segment(page.team)}/`;
  }
  if ('fleet' in page) return '/console/fleet/';
  return '/console/';
}

export function consoleUrl(publicUrl: string, page: ConsolePage = {}): string {
  return `${publicUrl.replace(/\/+$/, '')}${consolePath(page)}`;
}
