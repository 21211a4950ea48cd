/** What every portal action shares: who it acts for, idempotency keys, links and waiting. */
import { InputError } from '@backstage/errors';
import { ConsolePage, consoleUrl } from '@genai-portal/plugin-genai-portal-node';
import type { FieldRule, Identity, PortalClient } from '@genai-portal/plugin-genai-portal-node';

/** The options every action factory takes. */
export interface PortalActionOptions {
  client: PortalClient;
  /** Where people open the portal (links in outputs); defaults to the client's base URL. */
  publicUrl?: string;
  /** Forward the initiating user's Backstage token (X-Backstage-Token); refuse to act without it. */
  forwardUserToken?: boolean;
  /**
   * What the portal said at startup about forwarded user tokens (GET /api/v1/me), once it answered: a mismatch with
   * `forwardUserToken` makes every action refuse before calling, saying which setting to change.
   */
  portalCheck?: { problem?: string };
}

/** The minimum of an action context these helpers read. */
export interface IdentityContext {
  user?: { ref?: string };
  /** Whoever created, or last retried, the task (scaffolder 4.2 replaces it on retry; `user` stays the creator). */
  getInitiatorCredentials(): Promise<{ principal: unknown; token?: string }>;
  secrets?: { backstageToken?: string } & Record<string, string>;
  task: { id: string };
  step?: { id?: string };
}

/**
 * The user a task acts for. The portal authorizes that user against its own teams and roles, so an
 * action never acts as the bare service token: a task created by a service (no user) is refused.
 *
 * A retried task keeps `ctx.user` (its creator) but the scaffolder (4.2) gives it the retrier's
 * credentials and token. Acting then would let anyone allowed to retry the task act as its creator,
 * so the initiator must be a user principal and the same user as `ctx.user.ref`.
 */
export async function identityOf(ctx: IdentityContext, options: PortalActionOptions): Promise<Identity> {
  if (options.portalCheck?.problem) {
    throw new InputError(options.portalCheck.problem);
  }
  const userRef = ctx.user?.ref;
  if (!userRef) {
    throw new InputError(
      'This action acts for the Backstage user who started the task, and this task has none ' +
        '(it was created by a service, not a signed-in user); refusing to call the GenAI portal.',
    );
  }
  const credentials = await ctx.getInitiatorCredentials();
  const initiator = initiatorUserRef(credentials?.principal);
  if (!initiator || !sameEntityRef(initiator, userRef)) {
    throw new InputError(
      `This task was created by ${userRef} but is now being run by ${initiator ?? 'a principal that is not a user'} ` +
        `(a retry by someone else); it acts for ${userRef} in the GenAI portal, so only ${userRef} may retry it. ` +
        'Refusing to call the GenAI portal: run the template again yourself instead.',
    );
  }
  if (options.forwardUserToken) {
    const backstageToken = userTokenOf(credentials?.token) ?? userTokenOf(ctx.secrets?.backstageToken);
    if (!backstageToken) {
      throw new InputError(
        'genaiPortal.forwardUserToken is on but the task carries no Backstage user token for ' +
          `${userRef}; refusing to call the GenAI portal.`,
      );
    }
    return { userRef, backstageToken };
  }
  return { userRef };
}

/**
 * The token if it is a Backstage *user* token (JWT header `typ: vnd.backstage.user`), else undefined.
 *
 * On a retry, scaffolder-backend 4.2 (router.cjs.js, `POST /v2/tasks/:taskId/retry`) puts a *plugin* token in
 * `secrets.backstageToken` (`auth.getPluginRequestToken({ onBehalfOf, targetPluginId: 'catalog' })`, typ
 * `vnd.backstage.plugin`), which the portal cannot verify as the user; the retrier's own user token is in the
 * initiator credentials (`__initiatorCredentials` keeps `token` explicitly), and the caller has checked that the
 * retrier is the task's user. Tokens that are not JWTs (test doubles) pass as they are.
 */
export function userTokenOf(token: string | undefined): string | undefined {
  if (!token) return undefined;
  const [header] = token.split('.');
  if (token.split('.').length !== 3 || !header) return token;
  try {
    const typ = (JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as { typ?: unknown }).typ;
    return typ === undefined || typ === 'vnd.backstage.user' ? token : undefined;
  } catch {
    return token;
  }
}

/** The user entity ref of a BackstageUserPrincipal (`{ type: 'user', userEntityRef }`); undefined for any other principal. */
function initiatorUserRef(principal: unknown): string | undefined {
  if (principal && typeof principal === 'object') {
    const candidate = principal as { type?: unknown; userEntityRef?: unknown };
    if (candidate.type === 'user' && typeof candidate.userEntityRef === 'string' && candidate.userEntityRef) {
      return candidate.userEntityRef;
    }
  }
  return undefined;
}

/** Entity refs compare case-insensitively, as in the catalog. */
function sameEntityRef(a: string, b: string): boolean {
  return a.toLocaleLowerCase('en-US') === b.toLocaleLowerCase('en-US');
}

/**
 * An Idempotency-Key stable across retries of the same step of the same task: the portal replays
 * its first answer instead of acting twice, even when the scaffolder lost the checkpoint.
 */
export function idempotencyKey(ctx: IdentityContext, purpose: string): string {
  return `backstage:${ctx.task.id}:${ctx.step?.id ?? 'step'}:${purpose}`.slice(0, 255);
}

/** A console page of the portal for people to open (task outputs and messages), on genaiPortal.publicUrl. */
export function consoleLink(options: PortalActionOptions, page: ConsolePage): string {
  return consoleUrl(options.publicUrl ?? options.client.baseUrl, page);
}

/** What an action input's string schema offers (zod's, structurally), so the portal's rules can be applied to it. */
interface StringSchema<S> {
  min(length: number): S;
  max(length: number): S;
  regex(pattern: RegExp, message?: string): S;
}

/** What an action input's number schema offers (zod's, structurally). */
interface NumberSchema<N> {
  min(value: number): N;
  max(value: number): N;
}

/**
 * An action input checked by the portal's own rule of the field it is sent as (fieldRule, from the OpenAPI
 * document): a value the portal would refuse is refused before the task calls it, and the form says why.
 */
export function checkedString<S extends StringSchema<S>>(schema: S, rule: FieldRule): S {
  let checked = schema;
  if (rule.minLength !== undefined) checked = checked.min(rule.minLength);
  if (rule.maxLength !== undefined) checked = checked.max(rule.maxLength);
  if (rule.pattern !== undefined) checked = checked.regex(new RegExp(rule.pattern), `Must match ${rule.pattern} (the GenAI portal's rule)`);
  return checked;
}

/** An integer input within the range the portal states for the field it is sent as. */
export function checkedNumber<N extends NumberSchema<N>>(schema: N, rule: FieldRule): N {
  let checked = schema;
  if (rule.minimum !== undefined) checked = checked.min(rule.minimum);
  if (rule.maximum !== undefined) checked = checked.max(rule.maximum);
  return checked;
}

/** `resource:default/llama` or `llama` -> `llama`: templates may pass the picked entity ref. */
export function nameFromRef(value: string): string {
  const trimmed = value.trim();
  const slash = trimmed.lastIndexOf('/');
  const afterSlash = slash >= 0 ? trimmed.slice(slash + 1) : trimmed;
  const colon = afterSlash.indexOf(':');
  return colon >= 0 ? afterSlash.slice(colon + 1) : afterSlash;
}

/** Sleep that ends early, with an error, when the task is cancelled. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new Error('Cancelled'));
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new Error('Cancelled'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export function throwIfCancelled(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) {
    throw new Error(`Cancelled: ${what}`);
  }
}

/** A team slug, or a Backstage group ref resolved to the portal team linked to that group. */
export async function resolveTeam(
  client: PortalClient,
  teamOrGroupRef: string,
  identity: Identity,
  signal?: AbortSignal,
): Promise<string> {
  const value = teamOrGroupRef.trim();
  if (!value.toLowerCase().startsWith('group:')) {
    return value;
  }
  const wanted = normalizeGroupRef(value);
  const teams = await client.listTeams({ identity, signal });
  const linked = teams.find(team => team.backstage_group_ref && normalizeGroupRef(team.backstage_group_ref) === wanted);
  if (!linked) {
    throw new InputError(
      `No GenAI portal team of yours is linked to the Backstage group ${value}. ` +
        'Onboard the team first (template "Onboard a team to the GenAI platform") or ask a team admin to add you.',
    );
  }
  return linked.slug;
}

export function normalizeGroupRef(ref: string): string {
  const lowered = ref.trim().toLowerCase();
  const body = lowered.startsWith('group:') ? lowered.slice('group:'.length) : lowered;
  return `group:${body.includes('/') ? body : `default/${body}`}`;
}
