/**
 * A small client for the GenAI portal's REST API (v1): service-token authentication, the Backstage
 * user it acts for, Idempotency-Key on POST, cancellation, and problem-details errors made readable.
 */

/** RFC 9457 problem details, as the portal answers every error. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  code?: string;
  errors?: Array<{ field?: string; code?: string; message?: string }>;
  /** Extra members some problems carry (e.g. `admins` of a team that exists). */
  [extra: string]: unknown;
}

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

export interface RequestOptions {
  identity?: Identity;
  body?: unknown;
  idempotencyKey?: string;
  signal?: AbortSignal;
  query?: Record<string, string | number | undefined>;
  /** Statuses that are answers, not errors (e.g. 404 when checking whether something exists). */
  accept?: number[];
}

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

export interface Page<T> {
  count: number;
  next: string | null;
  previous: string | null;
  results: T[];
}

export interface Team {
  slug: string;
  display_name: string;
  description: string;
  backstage_group_ref: string | null;
  cost_center: string;
  status: string;
}

export interface Me {
  user: { ref: string; username: string; kind: string };
  platform_admin: boolean;
  acting_through: string | null;
  teams: Array<{ team: string; display_name: string; role: string }>;
}

export interface DeploymentStatus {
  phase: string;
  observed_generation: number;
  conditions: Array<Record<string, unknown>>;
  message: string;
  endpoint: string;
  observed_replicas: number;
  last_reconciled_at: string | null;
}

export interface Deployment {
  name: string;
  team: string;
  model: string;
  version: string;
  cluster: string;
  accelerator_type: string;
  served_model_name: string;
  min_replicas: number;
  max_replicas: number;
  scale_to_zero: boolean;
  gpus_per_replica: number;
  generation: number;
  status: DeploymentStatus;
  warnings?: string[];
}

export interface CatalogModel {
  slug: string;
  display_name: string;
  publisher: string;
  description: string;
  license: string;
  capabilities: string[];
  context_window: number;
  lifecycle: string;
  hosting: string;
  visibility: string;
  /** Sizing of the version a deployment gets by default; null for managed models or unknown architectures. */
  sizing?: ModelSizing | null;
}

/** Right-sizing of a self-hosted model version (catalog/sizing.py in the portal). */
export interface ModelSizing {
  version: string;
  parameters: number;
  weight_dtype: string;
  attention: string;
  max_context: number;
  weight_bytes: number;
  kv_cache_bytes_per_token: number;
}

export interface ModelVersionSummary {
  version: string;
  lifecycle: string;
  created_at: string;
}

export interface CatalogModelDetail extends CatalogModel {
  versions: ModelVersionSummary[];
}

export interface FitFigures {
  gpu_memory_gb: number;
  tensor_parallel_size: number;
  usable_bytes_per_gpu: number;
  weight_bytes_per_gpu: number;
  kv_cache_bytes_per_gpu: number;
  needed_bytes_per_gpu: number;
  margin_bytes_per_gpu: number;
  fits: boolean;
  problem: string | null;
  max_context_at_concurrency: number;
  max_concurrency_at_context: number;
}

export interface Placement {
  cluster: string;
  accelerator_type: string;
  gpus_per_replica: number;
  tensor_parallel_size: number;
  replicas: number;
  monthly_cost: string;
  currency: string;
  fit: FitFigures;
  break_even: Array<{ model: string; blended_price_per_million: string; monthly_tokens: number | null }>;
}

/** The answer of POST /api/v1/catalog/models/{model}/versions/{version}/fit. */
export interface FitPlan {
  model: string;
  version: string;
  context_length: number;
  concurrency: number;
  kv_cache_dtype: string;
  weight_bytes: number;
  kv_cache_bytes_per_token: number;
  kv_cache_bytes: number;
  fits: boolean;
  evaluated: Placement[];
  placements: Placement[];
}

/** What the portal answers to a credential created with `delivery: reveal_link`: never the key. */
export interface CredentialCreated {
  id: string | number;
  name: string;
  key_prefix?: string;
  prefix?: string;
  allowed_models?: string[];
  expires_at?: string | null;
  reveal_url: string;
  /** The same one-time link as a page a browser opens (portals from this release on); preferred for people. */
  reveal_page_url?: string;
  reveal_expires_at: string;
}

export class PortalClient {
  readonly baseUrl: string;
  private readonly token: string;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;

  constructor(options: PortalClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.token = options.token;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.fetchImpl = options.fetchImpl ?? fetch;
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
   * The URL a request with the service token (and the user's token) goes to. A path is put under baseUrl.
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

  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<PortalResponse<T>> {
    const headers: Record<string, string> = {
      Authorization: `Bearer ${this.token}`,
      Accept: 'application/json, application/problem+json',
    };
    if (options.identity) {
      headers['X-Backstage-User'] = options.identity.userRef;
      if (options.identity.backstageToken) {
        headers['X-Backstage-Token'] = options.identity.backstageToken;
      }
    }
    if (options.idempotencyKey) {
      headers['Idempotency-Key'] = options.idempotencyKey;
    }
    let payload: string | undefined;
    if (options.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(options.body);
    }
    let target = this.resolve(path);
    const query = Object.entries(options.query ?? {}).filter(([, value]) => value !== undefined);
    if (query.length > 0) {
      const search = new URLSearchParams(query.map(([key, value]) => [key, String(value)]));
      target += (target.includes('?') ? '&' : '?') + search.toString();
    }
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    let response: Response;
    try {
      response = await this.fetchImpl(target, { method, headers, body: payload, signal });
    } catch (error) {
      if (options.signal?.aborted) {
        throw new Error(`Cancelled while calling the GenAI portal (${method} ${path})`);
      }
      if (timeout.aborted) {
        throw new Error(`The GenAI portal did not answer ${method} ${path} within ${this.timeoutMs} ms`);
      }
      throw new Error(`Could not reach the GenAI portal at ${this.baseUrl} (${method} ${path}): ${String(error)}`);
    }
    const text = await response.text();
    let body: unknown = undefined;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        body = undefined;
      }
    }
    const accepted = response.ok || (options.accept ?? []).includes(response.status);
    if (!accepted) {
      const problem: Problem =
        body && typeof body === 'object'
          ? (body as Problem)
          : { title: response.statusText || 'Error', detail: text.slice(0, 300) };
      throw new PortalError(method, path, response.status, problem);
    }
    return {
      status: response.status,
      body: body as T,
      replayed: response.headers.get('Idempotent-Replayed') === 'true',
    };
  }

  /**
   * Every item of a paginated list, following `next` links. The portal makes them absolute; each one is
   * rebuilt on baseUrl (path and query only) and refused when it points elsewhere (see `resolve`).
   */
  async listAll<T>(path: string, options: RequestOptions = {}): Promise<T[]> {
    const items: T[] = [];
    let next: string | null = path;
    let query: RequestOptions['query'] = { page_size: 200, ...(options.query ?? {}) };
    while (next) {
      const page: PortalResponse<Page<T>> = await this.request<Page<T>>('GET', next, { ...options, query });
      items.push(...page.body.results);
      next = page.body.next ? this.resolve(page.body.next) : null;
      query = undefined; // the `next` link carries the query already
    }
    return items;
  }

  async me(identity: Identity, signal?: AbortSignal): Promise<Me> {
    return (await this.request<Me>('GET', '/api/v1/me', { identity, signal })).body;
  }

  /** The team, or undefined when it does not exist for this user (the portal answers 404 either way). */
  async getTeam(slug: string, identity: Identity, signal?: AbortSignal): Promise<Team | undefined> {
    const response = await this.request<Team>('GET', `/api/v1/teams/${encodeURIComponent(slug)}`, {
      identity,
      signal,
      accept: [404],
    });
    return response.status === 404 ? undefined : response.body;
  }

  async listTeams(options: { identity?: Identity; signal?: AbortSignal } = {}): Promise<Team[]> {
    return this.listAll<Team>('/api/v1/teams', options);
  }

  async createTeam(
    input: { slug: string; display_name: string; description?: string; backstage_group_ref?: string; cost_center?: string },
    identity: Identity,
    idempotencyKey: string,
    signal?: AbortSignal,
  ): Promise<PortalResponse<Team>> {
    return this.request<Team>('POST', '/api/v1/teams', { identity, body: input, idempotencyKey, signal });
  }

  /** PATCH a team's descriptive fields (team admins). */
  async updateTeam(
    slug: string,
    changes: { display_name?: string; description?: string; backstage_group_ref?: string | null; cost_center?: string },
    identity: Identity,
    signal?: AbortSignal,
  ): Promise<Team> {
    return (await this.request<Team>('PATCH', `/api/v1/teams/${encodeURIComponent(slug)}`, { identity, body: changes, signal })).body;
  }

  async createDeployment(
    team: string,
    input: Record<string, unknown>,
    identity: Identity,
    idempotencyKey: string,
    signal?: AbortSignal,
  ): Promise<PortalResponse<Deployment>> {
    return this.request<Deployment>('POST', `/api/v1/teams/${encodeURIComponent(team)}/deployments`, {
      identity,
      body: input,
      idempotencyKey,
      signal,
    });
  }

  async getDeployment(team: string, name: string, identity: Identity, signal?: AbortSignal): Promise<Deployment | undefined> {
    const path = `/api/v1/teams/${encodeURIComponent(team)}/deployments/${encodeURIComponent(name)}`;
    return this.missingDeploymentAsUndefined('GET', path, await this.request<Deployment>('GET', path, { identity, signal, accept: [404] }));
  }

  async deleteDeployment(team: string, name: string, identity: Identity, signal?: AbortSignal): Promise<Deployment | undefined> {
    const path = `/api/v1/teams/${encodeURIComponent(team)}/deployments/${encodeURIComponent(name)}`;
    return this.missingDeploymentAsUndefined('DELETE', path, await this.request<Deployment>('DELETE', path, { identity, signal, accept: [404] }));
  }

  /** A missing deployment is an answer (undefined); a team the user cannot see stays an error. */
  private missingDeploymentAsUndefined(method: string, path: string, response: PortalResponse<Deployment>): Deployment | undefined {
    if (response.status !== 404) {
      return response.body;
    }
    const problem = (response.body ?? {}) as unknown as Problem;
    if (problem.code === 'team_not_found') {
      throw new PortalError(method, path, 404, problem);
    }
    return undefined;
  }

  async listDeployments(team: string, options: { identity?: Identity; signal?: AbortSignal } = {}): Promise<Deployment[]> {
    return this.listAll<Deployment>(`/api/v1/teams/${encodeURIComponent(team)}/deployments`, options);
  }

  async listModels(options: { identity?: Identity; signal?: AbortSignal } = {}): Promise<CatalogModel[]> {
    return this.listAll<CatalogModel>('/api/v1/catalog/models', options);
  }

  async getModel(slug: string, identity: Identity, signal?: AbortSignal): Promise<CatalogModelDetail> {
    return (await this.request<CatalogModelDetail>('GET', `/api/v1/catalog/models/${encodeURIComponent(slug)}`, { identity, signal })).body;
  }

  /** Size a version on the team's pools (read-only: nothing is created, so dry runs may call it). */
  async fitModel(model: string, version: string, input: Record<string, unknown>, identity: Identity, signal?: AbortSignal): Promise<FitPlan> {
    const path = `/api/v1/catalog/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(version)}/fit`;
    return (await this.request<FitPlan>('POST', path, { identity, body: input, signal })).body;
  }

  async createCredential(
    team: string,
    input: { name: string; allowed_models?: string[]; expires_at?: string },
    identity: Identity,
    idempotencyKey: string,
    signal?: AbortSignal,
  ): Promise<PortalResponse<CredentialCreated>> {
    return this.request<CredentialCreated>('POST', `/api/v1/teams/${encodeURIComponent(team)}/credentials`, {
      identity,
      body: { ...input, delivery: 'reveal_link' },
      idempotencyKey,
      signal,
    });
  }
}
