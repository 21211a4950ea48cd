/**
 * The GenAI portal's REST API (v1) client: openapi-fetch over the types generated from the portal's OpenAPI document
 * (./generated, `npm run generate`), and a thin layer of our own: service-token authentication, the Backstage user it
 * acts for, Idempotency-Key on POST, `next` links followed only on the configured origin, cancellation and timeouts,
 * and problem details made readable errors.
 */
import createClient, { type Client } from 'openapi-fetch';
import type { components, paths } from './generated/portalApi';

/**
 * RFC 9457 problem details, as the portal answers every error (its document's ProblemOutput); one this client makes
 * of an answer that was no problem (a proxy's HTML page) may lack members.
 */
export type Problem = Partial<components['schemas']['ProblemOutput']> & {
  /** Extra members some problems carry (e.g. `admins` of a team that exists). */
  [extra: string]: unknown;
};

/** The portal refused or failed a request; `message` is written for a person reading a task log. */
export class PortalError extends Error {
  readonly status: number;
  readonly code: string;
  readonly problem: Problem;

  constructor(method: string, path: string, status: number, problem: Problem) {
    super(formatProblem(method, path, status, problem));
    this.name = 'PortalError';
    this.status = status;
    this.code = problem.code ?? `http_${status}`;
    this.problem = problem;
  }
}

export function formatProblem(method: string, path: string, status: number, problem: Problem): string {
  const title = problem.title ?? 'Request failed';
  const code = problem.code ? ` [${problem.code}]` : '';
  const lines = [`The GenAI portal refused ${method} ${path}: ${title} (HTTP ${status})${code}`];
  if (problem.detail && problem.detail !== title) {
    lines.push(problem.detail);
  }
  for (const entry of problem.errors ?? []) {
    const field = entry.field ? `${entry.field}: ` : '';
    lines.push(`  - ${field}${entry.message ?? entry.code ?? 'invalid'}`);
  }
  const hint = PROBLEM_HINTS[problem.code ?? ''];
  if (hint) {
    lines.push(hint);
  }
  return lines.join('\n');
}

/** What a person can do about some refusals, added to the message. */
const PROBLEM_HINTS: Record<string, string> = {
  backstage_token_missing:
    'The portal verifies Backstage user tokens (PORTAL_BACKSTAGE_JWKS_URL): set genaiPortal.forwardUserToken: true in app-config.',
  gpu_quota_exceeded:
    "Ask for more with the template \"Request GPU quota\" (a platform admin approves it), then retry this task: it does not deploy twice.",
};

/** Whom a request acts for: the initiating Backstage user, and optionally their Backstage token. */
export interface Identity {
  userRef: string;
  backstageToken?: string;
}

/** The portal's answers, as its OpenAPI document describes them. */
type Schemas = components['schemas'];
export type Team = Schemas['TeamOutput'];
export type Me = Schemas['MeOutput'];
export type Deployment = Schemas['DeploymentOutput'];
export type DeploymentCreated = Schemas['DeploymentCreatedOutput'];
export type DeploymentStatus = Deployment['status'];
export type CatalogModel = Schemas['CatalogModelSummaryOutput'];
export type CatalogModelDetail = Schemas['CatalogModelDetailOutput'];
export type ModelSizing = NonNullable<CatalogModel['sizing']>;
export type ModelVersionSummary = CatalogModelDetail['versions'][number];
export type FitPlan = Schemas['FitOutput'];
export type Placement = FitPlan['placements'][number];
export type FitFigures = Placement['fit'];
/** What the portal answers to a credential created with `delivery: reveal_link`: never the key. */
export type CredentialCreated = Schemas['CredentialIssuedOutput'];
export type QuotaRequest = Schemas['QuotaRequestOutput'];
/** What the plugin sends: the request bodies of the document. */
export type TeamInput = Schemas['TeamCreateInputRequest'];
export type TeamChanges = Schemas['PatchedTeamUpdateInputRequest'];
export type DeploymentInput = Schemas['DeploymentCreateInputRequest'];
export type FitInput = Schemas['FitInputRequest'];
export type CredentialInput = Omit<Schemas['CredentialCreateInputRequest'], 'delivery'>;
export type QuotaRequestInput = Schemas['QuotaRequestCreateInputRequest'];

export interface PortalResponse<T> {
  status: number;
  body: T;
  replayed: boolean;
}

export interface PortalClientOptions {
  baseUrl: string;
  token: string;
  timeoutMs?: number;
  fetchImpl?: typeof fetch;
}

/** Options of the calls that list: who asks, cancellation, and how many items a page asks for (default 200). */
export interface ListOptions {
  identity?: Identity;
  signal?: AbortSignal;
  pageSize?: number;
}

/** What the layer adds to each call of the generated client: headers of ours and a signal with the timeout. */
interface CallInit {
  headers: Record<string, string>;
  signal: AbortSignal;
}

interface CallOptions {
  identity?: Identity;
  idempotencyKey?: string;
  signal?: AbortSignal;
  /** Statuses that are answers, not errors (e.g. 404 when checking whether something exists). */
  accept?: number[];
}

/** What openapi-fetch answers: the parsed body on success, the parsed error body otherwise. */
interface Answer<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** An answer, or the problem of a status the caller accepted. */
interface Outcome<T> {
  status: number;
  body?: T;
  problem?: Problem;
  replayed: boolean;
}

interface Page<T> {
  next?: string | null;
  results: T[];
}

/**
 * Whether fetch failed because the connection closed before any answer: a keep-alive connection the portal's server
 * closed while idle can be reused just as it closes, and undici's fetch does not send the request again itself
 * (SocketError `other side closed`, ECONNRESET). The portal's gunicorn closes idle connections after 2 s (`keepalive`,
 * gunicorn.config, 27.0.1 in uv.lock) and sends no Keep-Alive timeout hint; undici keeps them 4 s (`keepAliveTimeout`
 * 4e3, undici docs/api/Client.md).
 */
function closedUnderUs(error: unknown): boolean {
  const code = error instanceof TypeError ? (error.cause as { code?: unknown } | undefined)?.code : undefined;
  return code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE';
}

export class PortalClient {
  readonly baseUrl: string;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;
  private readonly api: Client<paths>;

  constructor(options: PortalClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.fetchImpl = options.fetchImpl ?? fetch;
    this.api = createClient<paths>({
      baseUrl: this.baseUrl,
      headers: { Authorization: `Bearer ${options.token}`, Accept: 'application/json, application/problem+json' },
      fetch: request => this.fetchImpl(request),
    });
  }

  /**
   * An absolute URL for a portal path, for links shown to people (never fetched with credentials here):
   * a URL the portal already made absolute is returned as it is.
   */
  url(path: string): string {
    if (/^https?:\/\//i.test(path)) {
      return path;
    }
    return `${this.baseUrl}${path.startsWith('/') ? '' : '/'}${path}`;
  }

  /**
   * The URL a request with the service token (and the user's token) may go to. A path is put under baseUrl.
   * An absolute URL (a `next` link, anything the portal answered) is rebuilt on baseUrl from its path and
   * query only, and refused unless it has baseUrl's origin (scheme, host and port) and stays under its
   * path: a link elsewhere must never receive the tokens.
   */
  resolve(pathOrUrl: string): string {
    if (!/^[a-z][a-z0-9+.-]*:/i.test(pathOrUrl) && !pathOrUrl.startsWith('//')) {
      return this.url(pathOrUrl);
    }
    const base = new URL(`${this.baseUrl}/`);
    let link: URL;
    try {
      link = new URL(pathOrUrl, base); // a scheme-relative //host/... takes baseUrl's scheme, and its own host
    } catch {
      throw new Error(`The GenAI portal answered a link that is not a URL (${pathOrUrl.slice(0, 200)}); refusing to follow it`);
    }
    const basePath = base.pathname.replace(/\/+$/, '');
    if (link.origin !== base.origin || (basePath && link.pathname !== basePath && !link.pathname.startsWith(`${basePath}/`))) {
      throw new Error(
        `The GenAI portal answered a link to ${link.origin}${link.pathname}, outside the configured genaiPortal.baseUrl ` +
          `(${this.baseUrl}); refusing to send the portal credentials there. If the portal builds its links with another ` +
          'scheme or host (e.g. behind a TLS proxy), make it see the address Backstage uses (trusted X-Forwarded-Proto/Host), ' +
          'or set genaiPortal.baseUrl to the address the portal names.',
      );
    }
    return `${base.origin}${link.pathname}${link.search}`;
  }

  /**
   * One call of the generated client (`send`), with our headers, the timeout and cancellation; a problem answer
   * becomes a PortalError unless its status is accepted. `method` and `path` only name the call in messages.
   */
  private async call<T>(
    method: string,
    path: string,
    send: (init: CallInit) => Promise<Answer<T>>,
    options: CallOptions = {},
  ): Promise<Outcome<T>> {
    const headers: Record<string, string> = {};
    if (options.identity) {
      headers['X-Backstage-User'] = options.identity.userRef;
      if (options.identity.backstageToken) {
        headers['X-Backstage-Token'] = options.identity.backstageToken;
      }
    }
    if (options.idempotencyKey) {
      headers['Idempotency-Key'] = options.idempotencyKey;
    }
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    // Sent again once when the connection closed under it: safe for reads, deletes and keyed POSTs (the portal
    // replays its first answer to an Idempotency-Key), never for a POST without one.
    const repeatable = method === 'GET' || method === 'DELETE' || options.idempotencyKey !== undefined;
    let answer: Answer<T> | undefined;
    for (let attempt = 1; !answer; attempt += 1) {
      try {
        answer = await send({ headers, signal });
      } catch (error) {
        if (repeatable && attempt === 1 && closedUnderUs(error) && !signal.aborted) {
          continue;
        }
        throw this.unreachable(method, path, error, options.signal, timeout);
      }
    }
    const { response } = answer;
    const replayed = response.headers.get('Idempotent-Replayed') === 'true';
    if (response.ok) {
      return { status: response.status, body: answer.data, replayed };
    }
    const problem: Problem =
      answer.error && typeof answer.error === 'object'
        ? (answer.error as Problem)
        : { title: response.statusText || 'Error', detail: String(answer.error ?? '').slice(0, 300) };
    if (!(options.accept ?? []).includes(response.status)) {
      throw new PortalError(method, path, response.status, problem);
    }
    return { status: response.status, problem, replayed };
  }

  /** The error of a call that got no answer: cancelled, timed out, a body that is not JSON, or the portal unreachable. */
  private unreachable(method: string, path: string, error: unknown, cancel: AbortSignal | undefined, timeout: AbortSignal): Error {
    if (cancel?.aborted) {
      return new Error(`Cancelled while calling the GenAI portal (${method} ${path})`);
    }
    if (timeout.aborted) {
      return new Error(`The GenAI portal did not answer ${method} ${path} within ${this.timeoutMs} ms`);
    }
    if (error instanceof SyntaxError) {
      return new Error(`The GenAI portal answered ${method} ${path} with a body that is not JSON: ${error.message}`);
    }
    // fetch's own TypeError ('fetch failed') names its reason only in `cause` (ECONNREFUSED, a closed socket...).
    const cause = error instanceof Error && error.cause ? ` (${String((error.cause as Error).message ?? error.cause)})` : '';
    return new Error(`Could not reach the GenAI portal at ${this.baseUrl} (${method} ${path}): ${String(error)}${cause}`);
  }

  /** The body of a successful answer; an answer without one is an error (the document promises one). */
  private bodyOf<T>(method: string, path: string, outcome: Outcome<T>): T {
    if (outcome.body === undefined) {
      throw new Error(`The GenAI portal answered ${method} ${path} (HTTP ${outcome.status}) without a body`);
    }
    return outcome.body;
  }

  /**
   * Every item of a paginated list: the first page from `path` with `page_size`, then each `next` link. The portal
   * makes those absolute; one is followed only on baseUrl's origin and under its path (see `resolve`), and only to
   * the same list (`path`): its query becomes the query of the same typed call.
   */
  private async listAll<T>(
    path: string,
    // A list answers JSON or, asked for it, CSV (the portal's `?format=csv`); this client never asks for CSV.
    send: (query: Record<string, string | number>, init: CallInit) => Promise<Answer<Page<T> | string>>,
    options: ListOptions,
  ): Promise<T[]> {
    const items: T[] = [];
    let query: Record<string, string | number> | undefined = { page_size: options.pageSize ?? 200 };
    const listUrl = new URL(this.resolve(path));
    while (query) {
      const current: Record<string, string | number> = query;
      const page = this.bodyOf('GET', path, await this.call('GET', path, init => send(current, init), options));
      if (typeof page === 'string') {
        throw new Error(`The GenAI portal answered CSV, not JSON, while listing ${path}`);
      }
      items.push(...page.results);
      query = undefined;
      if (page.next) {
        const next = new URL(this.resolve(page.next));
        if (next.pathname.replace(/\/+$/, '') !== listUrl.pathname.replace(/\/+$/, '')) {
          throw new Error(`The GenAI portal answered a next link to ${next.pathname} while listing ${path}; refusing to follow it`);
        }
        query = Object.fromEntries(next.searchParams);
      }
    }
    return items;
  }

  /** Who the caller is: the service principal alone, or the user it acts for (`identity`). */
  async me(identity?: Identity, signal?: AbortSignal): Promise<Me> {
    const path = '/api/v1/me';
    return this.bodyOf('GET', path, await this.call('GET', path, init => this.api.GET('/api/v1/me', { ...init }), { identity, signal }));
  }

  /** The team, or undefined when it does not exist for this user (the portal answers 404 either way). */
  async getTeam(slug: string, identity: Identity, signal?: AbortSignal): Promise<Team | undefined> {
    const outcome = await this.call(
      'GET',
      `/api/v1/teams/${slug}`,
      init => this.api.GET('/api/v1/teams/{team}', { params: { path: { team: slug } }, ...init }),
      { identity, signal, accept: [404] },
    );
    return outcome.status === 404 ? undefined : this.bodyOf('GET', `/api/v1/teams/${slug}`, outcome);
  }

  async listTeams(options: ListOptions = {}): Promise<Team[]> {
    return this.listAll('/api/v1/teams', (query, init) => this.api.GET('/api/v1/teams', { params: { query }, ...init }), options);
  }

  async createTeam(input: TeamInput, identity: Identity, idempotencyKey: string, signal?: AbortSignal): Promise<PortalResponse<Team>> {
    const path = '/api/v1/teams';
    const outcome = await this.call('POST', path, init => this.api.POST('/api/v1/teams', { body: input, ...init }), {
      identity,
      idempotencyKey,
      signal,
    });
    return { status: outcome.status, body: this.bodyOf('POST', path, outcome), replayed: outcome.replayed };
  }

  /** PATCH a team's descriptive fields (team admins). */
  async updateTeam(slug: string, changes: TeamChanges, identity: Identity, signal?: AbortSignal): Promise<Team> {
    const path = `/api/v1/teams/${slug}`;
    const outcome = await this.call(
      'PATCH',
      path,
      init => this.api.PATCH('/api/v1/teams/{team}', { params: { path: { team: slug } }, body: changes, ...init }),
      { identity, signal },
    );
    return this.bodyOf('PATCH', path, outcome);
  }

  async createDeployment(
    team: string,
    input: DeploymentInput,
    identity: Identity,
    idempotencyKey: string,
    signal?: AbortSignal,
  ): Promise<PortalResponse<DeploymentCreated>> {
    const path = `/api/v1/teams/${team}/deployments`;
    const outcome = await this.call(
      'POST',
      path,
      init => this.api.POST('/api/v1/teams/{team}/deployments', { params: { path: { team } }, body: input, ...init }),
      { identity, idempotencyKey, signal },
    );
    return { status: outcome.status, body: this.bodyOf('POST', path, outcome), replayed: outcome.replayed };
  }

  async getDeployment(team: string, name: string, identity: Identity, signal?: AbortSignal): Promise<Deployment | undefined> {
    const path = `/api/v1/teams/${team}/deployments/${name}`;
    const outcome = await this.call(
      'GET',
      path,
      init => this.api.GET('/api/v1/teams/{team}/deployments/{name}', { params: { path: { team, name } }, ...init }),
      { identity, signal, accept: [404] },
    );
    return this.missingDeploymentAsUndefined('GET', path, outcome);
  }

  async deleteDeployment(team: string, name: string, identity: Identity, signal?: AbortSignal): Promise<Deployment | undefined> {
    const path = `/api/v1/teams/${team}/deployments/${name}`;
    const outcome = await this.call(
      'DELETE',
      path,
      init => this.api.DELETE('/api/v1/teams/{team}/deployments/{name}', { params: { path: { team, name } }, ...init }),
      { identity, signal, accept: [404] },
    );
    return this.missingDeploymentAsUndefined('DELETE', path, outcome);
  }

  /** A missing deployment is an answer (undefined); a team the user cannot see stays an error. */
  private missingDeploymentAsUndefined(method: string, path: string, outcome: Outcome<Deployment>): Deployment | undefined {
    if (outcome.status !== 404) {
      return this.bodyOf(method, path, outcome);
    }
    if (outcome.problem?.code === 'team_not_found') {
      throw new PortalError(method, path, 404, outcome.problem);
    }
    return undefined;
  }

  async listDeployments(team: string, options: ListOptions = {}): Promise<Deployment[]> {
    return this.listAll(
      `/api/v1/teams/${encodeURIComponent(team)}/deployments`,
      (query, init) => this.api.GET('/api/v1/teams/{team}/deployments', { params: { path: { team }, query }, ...init }),
      options,
    );
  }

  async listModels(options: ListOptions = {}): Promise<CatalogModel[]> {
    return this.listAll('/api/v1/catalog/models', (query, init) => this.api.GET('/api/v1/catalog/models', { params: { query }, ...init }), options);
  }

  async getModel(slug: string, identity: Identity, signal?: AbortSignal): Promise<CatalogModelDetail> {
    const path = `/api/v1/catalog/models/${slug}`;
    const outcome = await this.call(
      'GET',
      path,
      init => this.api.GET('/api/v1/catalog/models/{model}', { params: { path: { model: slug } }, ...init }),
      { identity, signal },
    );
    return this.bodyOf('GET', path, outcome);
  }

  /** Size a version on the team's pools (read-only: nothing is created, so dry runs may call it). */
  async fitModel(model: string, version: string, input: FitInput, identity: Identity, signal?: AbortSignal): Promise<FitPlan> {
    const path = `/api/v1/catalog/models/${model}/versions/${version}/fit`;
    const outcome = await this.call(
      'POST',
      path,
      init =>
        this.api.POST('/api/v1/catalog/models/{model}/versions/{version}/fit', {
          params: { path: { model, version } },
          body: input,
          ...init,
        }),
      { identity, signal },
    );
    return this.bodyOf('POST', path, outcome);
  }

  async createCredential(
    team: string,
    input: CredentialInput,
    identity: Identity,
    idempotencyKey: string,
    signal?: AbortSignal,
  ): Promise<PortalResponse<CredentialCreated>> {
    const path = `/api/v1/teams/${team}/credentials`;
    const outcome = await this.call(
      'POST',
      path,
      init =>
        this.api.POST('/api/v1/teams/{team}/credentials', {
          params: { path: { team } },
          body: { ...input, delivery: 'reveal_link' },
          ...init,
        }),
      { identity, idempotencyKey, signal },
    );
    return { status: outcome.status, body: this.bodyOf('POST', path, outcome), replayed: outcome.replayed };
  }

  /** Ask the platform admins for more quota (a request they approve or reject). */
  async createQuotaRequest(
    team: string,
    input: QuotaRequestInput,
    identity: Identity,
    idempotencyKey: string,
    signal?: AbortSignal,
  ): Promise<PortalResponse<QuotaRequest>> {
    const path = `/api/v1/teams/${team}/quota-requests`;
    const outcome = await this.call(
      'POST',
      path,
      init => this.api.POST('/api/v1/teams/{team}/quota-requests', { params: { path: { team } }, body: input, ...init }),
      { identity, idempotencyKey, signal },
    );
    return { status: outcome.status, body: this.bodyOf('POST', path, outcome), replayed: outcome.replayed };
  }
}
