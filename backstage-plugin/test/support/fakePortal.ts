/**
 * A local HTTP server that answers like the GenAI portal's API (v1) for the shapes the plugin uses:
 * bearer service token, X-Backstage-User, Idempotency-Key replay, problem details, pagination,
 * teams, members, deployments that become Ready, and credentials delivered by a reveal link.
 * It records every request so tests can assert what was (and was not) sent.
 */
import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

interface FakeDeployment {
  name: string;
  team: string;
  model: string;
  accelerator_type: string;
  min_replicas: number;
  max_replicas: number;
  scale_to_zero: boolean;
  polls: number;
  deleting: boolean;
  generation: number;
}

export interface FakePortalOptions {
  token?: string;
  adminToken?: string;
  /** GETs of a deployment before it reports Ready. */
  readyAfterPolls?: number;
  /** Models whose deployments fail. */
  failingModels?: string[];
  /** Scopes /api/v1/me reports for the admin (catalog reader) token. */
  adminScopes?: string[];
  /** Act as a portal with PORTAL_BACKSTAGE_JWKS_URL set: calls for a user need X-Backstage-Token. */
  requireUserToken?: boolean;
}

export class FakePortal {
  readonly token: string;
  readonly adminToken: string;
  readonly requests: RecordedRequest[] = [];
  readonly teams = new Map<string, { slug: string; display_name: string; description: string; backstage_group_ref: string | null; cost_center: string; status: string; members: Map<string, string> }>();
  readonly deployments = new Map<string, FakeDeployment>();
  readonly credentials: Array<{ id: number; team: string; name: string; key: string; revealToken: string; revealed: boolean; createdBy: string }> = [];
  readonly models = [
    { slug: 'qwen2-5-7b-instruct', display_name: 'Qwen2.5 7B Instruct', publisher: 'Qwen', description: 'A chat model', license: 'apache-2.0', capabilities: ['chat', 'tool_calling'], context_window: 32768, lifecycle: 'approved', hosting: 'self_hosted', visibility: 'all', sizing: { version: 'v1', parameters: 7_615_616_512, weight_dtype: 'bf16', attention: 'gqa', max_context: 32768, weight_bytes: 15_231_233_024, kv_cache_bytes_per_token: 57_344 } },
    { slug: 'gpt-4o', display_name: 'GPT-4o', publisher: 'OpenAI', description: '', license: 'proprietary', capabilities: ['chat', 'vision'], context_window: 128000, lifecycle: 'approved', hosting: 'managed', visibility: 'all', sizing: null },
  ];
  readonly quotaRequests: Array<{ id: number; team: string; status: string; gpus: Record<string, number>; max_deployments: number | null; reason: string; requested_by: string }> = [];
  private readonly idempotency = new Map<string, { fingerprint: string; status: number; body: unknown }>();
  private readonly options: FakePortalOptions;
  /** Models whose deployments fail (changeable while running). */
  readonly failingModels: Set<string>;
  /** Models that fit on no pool (the fit endpoint answers with no placement). */
  readonly tooBigModels = new Set<string>();
  private server?: Server;
  url = '';
  /**
   * The origin `next` links are built on (default: this server's URL, as the portal's absolute links).
   * Set it to another origin or scheme to act as a portal (or a man in the middle) linking elsewhere.
   */
  nextOrigin?: string;
  /** When set, `next` links name this path instead of the list's own (a forged link on the portal's origin). */
  nextPath?: string;
  /**
   * Answer the next GETs of a deployment with 401 `backstage_token_expired` once it was polled this many
   * times, as the portal does when the forwarded Backstage user token expires during a long wait.
   */
  expireUserTokenAfterPolls?: number;
  /** Answer this many next GETs of a deployment with this status (a portal briefly down: 503, or 502 at a proxy). */
  failStatusReads = 0;
  failStatusReadsWith = 503;
  /** Idempotency-Keys of every POST, in order (undefined: sent without one). */
  readonly postKeys: Array<{ path: string; key: string | undefined; replayed: boolean; status: number }> = [];

  constructor(options: FakePortalOptions = {}) {
    this.options = options;
    this.failingModels = new Set(options.failingModels ?? []);
    this.token = options.token ?? 'gpt_backstag_service-token-for-tests';
    this.adminToken = options.adminToken ?? 'gpt_adminrdr_admin-token-for-tests';
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch(error => {
        this.send(res, 500, { title: 'Server error', status: 500, detail: String(error), code: 'server_error' });
      });
    });
    await new Promise<void>(resolve => this.server!.listen(0, '127.0.0.1', () => resolve()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>(resolve => this.server?.close(() => resolve()) ?? resolve());
  }

  /** Every text this server ever sent that a key could hide in, for leak assertions. */
  get issuedKeys(): string[] {
    return this.credentials.map(credential => credential.key);
  }

  posts(pathPrefix: string): RecordedRequest[] {
    return this.requests.filter(request => request.method === 'POST' && request.path.startsWith(pathPrefix));
  }

  addTeam(slug: string, members: Record<string, string>, groupRef: string | null = null): void {
    this.teams.set(slug, { slug, display_name: slug, description: '', backstage_group_ref: groupRef, cost_center: '', status: 'active', members: new Map(Object.entries(members)) });
  }

  private send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const problem = status >= 400;
    res.writeHead(status, { 'Content-Type': problem ? 'application/problem+json' : 'application/json', ...headers });
    res.end(body === undefined ? '' : JSON.stringify(body));
  }

  private problem(res: ServerResponse, status: number, code: string, title: string, detail: string, errors?: unknown[]): void {
    this.send(res, status, { type: `https://genai-portal.dev/problems/${code}`, title, status, detail, code, ...(errors ? { errors } : {}) });
  }

  private page(res: ServerResponse, url: URL, items: unknown[]): void {
    const size = Number(url.searchParams.get('page_size') ?? 50);
    const number = Number(url.searchParams.get('page') ?? 1);
    const slice = items.slice((number - 1) * size, number * size);
    const next = number * size < items.length ? `${this.nextOrigin ?? this.url}${this.nextPath ?? url.pathname}?page=${number + 1}&page_size=${size}` : null;
    this.send(res, 200, { count: items.length, next, previous: null, results: slice });
  }

  /** A plan as the portal's fit endpoint answers it: Qwen2.5 7B's figures on one L4 at $0.80 an hour. */
  fitPlan(model: string, version: string, body: Record<string, any>): unknown {
    const gpus = body.gpus_per_replica ?? 1;
    const replicas = body.min_replicas ?? 1;
    const context = body.context_length ?? 8192;
    const placement = {
      cluster: body.cluster ?? 'sandbox',
      accelerator_type: body.accelerator_type ?? 'nvidia-l4',
      gpus_per_replica: gpus,
      tensor_parallel_size: gpus,
      replicas,
      monthly_cost: (gpus * replicas * 0.8 * 730).toFixed(2),
      currency: 'USD',
      fit: {
        gpu_memory_gb: 24,
        tensor_parallel_size: gpus,
        usable_bytes_per_gpu: 19_452_516_352,
        weight_bytes_per_gpu: 15_231_233_024,
        kv_cache_bytes_per_gpu: 57_344 * context,
        needed_bytes_per_gpu: 15_231_233_024 + 57_344 * context,
        margin_bytes_per_gpu: 19_452_516_352 - 15_231_233_024 - 57_344 * context,
        fits: true,
        problem: null,
        max_context_at_concurrency: 32768,
        max_concurrency_at_context: 8,
      },
      break_even: [{ model: 'gpt-4o-mini', blended_price_per_million: '0.262500', monthly_tokens: 2_224_761_905 }],
    };
    const tooBig = this.tooBigModels.has(model);
    const short = { ...placement, fit: { ...placement.fit, fits: false, margin_bytes_per_gpu: -124_339_251_200 } };
    return {
      model,
      version,
      context_length: context,
      concurrency: body.concurrency ?? 1,
      kv_cache_dtype: 'auto',
      weight_bytes: 15_231_233_024,
      kv_cache_bytes_per_token: 57_344,
      kv_cache_bytes: 57_344 * context,
      fits: !tooBig,
      evaluated: body.gpus_per_replica ? [tooBig ? short : placement] : [],
      placements: tooBig ? [] : [placement],
    };
  }

  private teamJson(slug: string) {
    const team = this.teams.get(slug)!;
    const { members: _members, ...rest } = team;
    return rest;
  }

  private deploymentJson(deployment: FakeDeployment) {
    const ready = deployment.polls >= (this.options.readyAfterPolls ?? 2);
    const failing = this.failingModels.has(deployment.model);
    const phase = deployment.deleting ? 'Deleting' : failing && deployment.polls >= 1 ? 'Failed' : ready ? 'Ready' : deployment.polls === 0 ? 'Pending' : 'Provisioning';
    return {
      name: deployment.name,
      team: deployment.team,
      model: deployment.model,
      version: 'v1',
      cluster: 'sandbox',
      accelerator_type: deployment.accelerator_type,
      served_model_name: `${deployment.team}-${deployment.name}`,
      min_replicas: deployment.min_replicas,
      max_replicas: deployment.max_replicas,
      scale_to_zero: deployment.scale_to_zero,
      gpus_per_replica: 1,
      runtime_args: [],
      model_cache: false,
      generation: deployment.generation,
      status: {
        phase,
        observed_generation: phase === 'Ready' ? deployment.generation : 0,
        conditions: [],
        message: phase === 'Failed' ? 'storage URI could not be loaded' : phase === 'Provisioning' ? 'predictor starting' : '',
        endpoint: phase === 'Ready' ? `http://${deployment.name}.team-${deployment.team}.svc.cluster.local` : '',
        observed_replicas: phase === 'Ready' ? 1 : 0,
        last_reconciled_at: null,
      },
    };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url);
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    let body: any = undefined;
    if (raw) {
      try {
        body = JSON.parse(raw);
      } catch {
        this.problem(res, 400, 'parse_error', 'Malformed request', 'JSON parse error');
        return;
      }
    }
    this.requests.push({ method: req.method ?? 'GET', path: url.pathname, headers: req.headers, body });

    // GET <reveal_url>: the one-time reveal, authenticated as the same user.
    const reveal = url.pathname.match(/^\/reveal\/([A-Za-z0-9_-]+)$/);
    const auth = req.headers.authorization;
    const isService = auth === `Bearer ${this.token}`;
    const isAdmin = auth === `Bearer ${this.adminToken}`;
    if (!isService && !isAdmin) {
      this.problem(res, 401, 'invalid_token', 'Not authenticated', 'The token is not valid');
      return;
    }
    const user = req.headers['x-backstage-user'] as string | undefined;
    if (reveal) {
      const credential = this.credentials.find(entry => entry.revealToken === reveal[1]);
      if (!credential || credential.revealed || credential.createdBy !== user) {
        this.problem(res, 404, 'reveal_not_found', 'Not found', 'This reveal link is unknown, used or not yours');
        return;
      }
      credential.revealed = true;
      this.send(res, 200, { key: credential.key });
      return;
    }
    if (req.method === 'POST') {
      const key = req.headers['idempotency-key'] as string | undefined;
      const record = { path: url.pathname, key, replayed: false, status: 0 };
      this.postKeys.push(record);
      const originalEnd = res.end.bind(res);
      (res as any).end = (chunk?: any) => {
        record.status = res.statusCode;
        return originalEnd(chunk);
      };
      if (key) {
        const scope = `${auth}|${user}|${key}`;
        const stored = this.idempotency.get(scope);
        const fingerprint = `${url.pathname}|${raw}`;
        if (stored) {
          if (stored.fingerprint !== fingerprint) {
            this.problem(res, 422, 'idempotency_key_reused', 'Idempotency key reused', 'This Idempotency-Key was already used with a different request');
            return;
          }
          record.replayed = true;
          this.send(res, stored.status, stored.body, { 'Idempotent-Replayed': 'true' });
          return;
        }
        const end = (res as any).end;
        (res as any).end = (chunk?: any) => {
          // As the portal (and Stripe): only a 2xx is remembered; a refusal changed nothing, so a retry runs again.
          if (res.statusCode >= 200 && res.statusCode < 300) {
            this.idempotency.set(scope, { fingerprint, status: res.statusCode, body: chunk ? JSON.parse(String(chunk)) : undefined });
          }
          return end(chunk);
        };
      }
    }
    const parts = url.pathname.replace(/^\/api\/v1\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);

    if (!user && parts[0] === 'me' && parts.length === 1) {
      const scopes = isAdmin ? (this.options.adminScopes ?? ['catalog:read']) : ['backstage'];
      this.send(res, 200, { user: { ref: null, username: isAdmin ? 'backstage-catalog' : 'backstage', kind: 'service', email: '', is_staff: false }, platform_admin: scopes.includes('admin'), acting_through: null, scopes, backstage_user_token_required: Boolean(this.options.requireUserToken), teams: [] });
      return;
    }
    if (user && this.options.requireUserToken && !req.headers['x-backstage-token']) {
      this.problem(res, 401, 'backstage_token_missing', 'Not authenticated', 'This portal requires the Backstage user token (X-Backstage-Token)');
      return;
    }
    if (isAdmin && !user) {
      // The catalog provider's reads (scope catalog:read): every team, its deployments and the models.
      if (parts[0] === 'catalog' && parts[1] === 'models' && parts.length === 2) return this.page(res, url, this.models);
      if (parts[0] === 'teams' && parts.length === 1) return this.page(res, url, [...this.teams.keys()].sort().map(slug => this.teamJson(slug)));
      if (parts[0] === 'teams' && parts[2] === 'deployments' && parts.length === 3) {
        return this.page(res, url, [...this.deployments.values()].filter(d => d.team === parts[1]).map(d => this.deploymentJson(d)));
      }
      this.problem(res, 404, 'not_found', 'Not found', 'Unknown path');
      return;
    }
    if (!user) {
      this.problem(res, 403, 'person_required', 'Permission denied', 'Send X-Backstage-User');
      return;
    }
    const roleIn = (slug: string) => this.teams.get(slug)?.members.get(user);
    if (parts[0] === 'me') {
      const teams = [...this.teams.values()].filter(team => team.members.has(user)).map(team => ({ team: team.slug, display_name: team.display_name, role: team.members.get(user)! }));
      this.send(res, 200, { user: { ref: user, username: user, kind: 'person', email: '', is_staff: false }, platform_admin: false, acting_through: 'service:backstage', scopes: ['backstage'], teams });
      return;
    }
    if (parts[0] === 'catalog' && parts[1] === 'models' && parts.length >= 3) {
      const model = this.models.find(candidate => candidate.slug === parts[2]);
      if (!model) {
        this.problem(res, 404, 'model_not_found', 'Not found', `Model '${parts[2]}' not found in the catalog`);
        return;
      }
      if (parts.length === 3 && req.method === 'GET') {
        this.send(res, 200, { ...model, versions: [{ version: 'v1', lifecycle: 'approved', created_at: '2026-01-01T00:00:00Z' }] });
        return;
      }
      if (parts[3] === 'versions' && parts[5] === 'fit' && req.method === 'POST') {
        if (body?.team && !roleIn(body.team)) {
          this.problem(res, 404, 'team_not_found', 'Not found', `Team '${body.team}' not found`);
          return;
        }
        this.send(res, 200, this.fitPlan(model.slug, parts[4], body ?? {}));
        return;
      }
    }
    if (parts[0] === 'teams' && parts.length === 1) {
      if (req.method === 'GET') {
        return this.page(res, url, [...this.teams.values()].filter(team => team.members.has(user)).map(team => this.teamJson(team.slug)));
      }
      if (req.method === 'POST') {
        if (!/^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$/.test(body?.slug ?? '')) {
          this.problem(res, 400, 'validation_failed', 'Invalid input', 'The request has invalid fields', [{ field: 'slug', code: 'invalid', message: 'must be a DNS-1123 label' }]);
          return;
        }
        if (this.teams.has(body.slug)) {
          // As the portal: the team's admins are named, so whoever onboards knows whom to ask.
          const existing = this.teams.get(body.slug)!;
          const admins = [...existing.members].filter(([, role]) => role === 'admin').map(([ref]) => ref).sort();
          this.send(res, 409, { type: 'https://genai-portal.dev/problems/team_exists', title: 'Conflict', status: 409, detail: `Team '${body.slug}' already exists`, code: 'team_exists', admins, backstage_group_ref: existing.backstage_group_ref });
          return;
        }
        if (body.backstage_group_ref && [...this.teams.values()].some(team => team.backstage_group_ref === body.backstage_group_ref)) {
          this.problem(res, 409, 'group_ref_taken', 'Conflict', `Another team is linked to '${body.backstage_group_ref}'`);
          return;
        }
        this.teams.set(body.slug, { slug: body.slug, display_name: body.display_name, description: body.description ?? '', backstage_group_ref: body.backstage_group_ref ?? null, cost_center: body.cost_center ?? '', status: 'active', members: new Map([[user, 'admin']]) });
        this.send(res, 201, this.teamJson(body.slug), { Location: `/api/v1/teams/${body.slug}` });
        return;
      }
    }
    if (parts[0] === 'teams' && parts.length >= 2) {
      const slug = parts[1];
      const role = roleIn(slug);
      if (!role) {
        this.problem(res, 404, 'team_not_found', 'Not found', `Team '${slug}' not found`);
        return;
      }
      if (parts.length === 2 && req.method === 'GET') {
        this.send(res, 200, this.teamJson(slug));
        return;
      }
      if (parts.length === 2 && req.method === 'PATCH') {
        if (role !== 'admin') {
          this.problem(res, 403, 'insufficient_role', 'Permission denied', `This needs the 'admin' role in team '${slug}'; you are '${role}'`);
          return;
        }
        const ref = body?.backstage_group_ref;
        if (ref && [...this.teams.values()].some(team => team.slug !== slug && team.backstage_group_ref === ref)) {
          this.problem(res, 409, 'group_ref_taken', 'Conflict', `Another team is linked to '${ref}'`);
          return;
        }
        const team = this.teams.get(slug)!;
        for (const field of ['display_name', 'description', 'cost_center'] as const) {
          if (typeof body?.[field] === 'string') team[field] = body[field];
        }
        if (body && 'backstage_group_ref' in body) team.backstage_group_ref = ref || null;
        this.send(res, 200, this.teamJson(slug));
        return;
      }
      if (parts[2] === 'deployments') {
        const name = parts[3];
        const key = `${slug}/${name}`;
        if (req.method !== 'GET' && role === 'viewer') {
          this.problem(res, 403, 'insufficient_role', 'Permission denied', `This needs the 'developer' role in team '${slug}'; you are 'viewer'`);
          return;
        }
        if (!name && req.method === 'POST') {
          if (this.deployments.has(`${slug}/${body.name}`)) {
            this.problem(res, 409, 'deployment_exists', 'Conflict', `Team '${slug}' already has a deployment '${body.name}'`);
            return;
          }
          if (!this.models.some(model => model.slug === body.model)) {
            this.problem(res, 400, 'validation_failed', 'Invalid input', 'The request has invalid fields', [{ field: 'model', code: 'unknown_model', message: `no model '${body.model}' in the catalog for team '${slug}'` }]);
            return;
          }
          const deployment: FakeDeployment = { name: body.name, team: slug, model: body.model, accelerator_type: body.accelerator_type ?? 'nvidia-l4', min_replicas: body.min_replicas ?? 1, max_replicas: body.max_replicas ?? 1, scale_to_zero: body.scale_to_zero ?? false, polls: 0, deleting: false, generation: 1 };
          this.deployments.set(`${slug}/${body.name}`, deployment);
          this.send(res, 201, { ...this.deploymentJson(deployment), warnings: [] });
          return;
        }
        if (!name && req.method === 'GET') {
          return this.page(res, url, [...this.deployments.values()].filter(d => d.team === slug).map(d => this.deploymentJson(d)));
        }
        const deployment = this.deployments.get(key);
        if (!deployment) {
          this.problem(res, 404, 'deployment_not_found', 'Not found', `No deployment '${name}' in team '${slug}'`);
          return;
        }
        if (req.method === 'GET') {
          if (this.failStatusReads > 0) {
            this.failStatusReads -= 1;
            this.problem(res, this.failStatusReadsWith, 'unavailable', 'Service unavailable', 'The portal is restarting');
            return;
          }
          if (this.expireUserTokenAfterPolls !== undefined && deployment.polls >= this.expireUserTokenAfterPolls) {
            this.problem(res, 401, 'backstage_token_expired', 'Not authenticated', 'The Backstage user token has expired');
            return;
          }
          deployment.polls += 1;
          if (deployment.deleting) {
            this.deployments.delete(key);
          }
          this.send(res, 200, this.deploymentJson(deployment));
          return;
        }
        if (req.method === 'DELETE') {
          deployment.deleting = true;
          this.send(res, 202, this.deploymentJson(deployment));
          return;
        }
      }
      if (parts[2] === 'quota-requests' && parts.length === 3 && req.method === 'POST') {
        const pending = this.quotaRequests.find(entry => entry.team === slug && entry.status === 'pending');
        if (pending) {
          this.send(res, 409, { type: 'https://genai-portal.dev/problems/quota_request_pending', title: 'Conflict', status: 409, detail: `Team '${slug}' already has a pending quota request (${pending.id})`, code: 'quota_request_pending', pending_request: pending.id });
          return;
        }
        const created = { id: this.quotaRequests.length + 1, team: slug, status: 'pending', gpus: body.gpus ?? {}, max_deployments: body.max_deployments ?? null, reason: body.reason, requested_by: user };
        this.quotaRequests.push(created);
        this.send(res, 201, created);
        return;
      }
      if (parts[2] === 'credentials' && req.method === 'POST') {
        if (body?.delivery !== 'reveal_link') {
          this.problem(res, 400, 'validation_failed', 'Invalid input', 'The request has invalid fields', [{ field: 'delivery', code: 'required', message: 'this fake only supports reveal_link' }]);
          return;
        }
        if (this.credentials.some(entry => entry.team === slug && entry.name === body.name)) {
          this.problem(res, 409, 'credential_name_taken', 'Conflict', `Team '${slug}' already has a current credential named '${body.name}'`);
          return;
        }
        const id = this.credentials.length + 1;
        const key = `sk-genai-${randomBytes(24).toString('hex')}`;
        const revealToken = randomBytes(16).toString('hex');
        this.credentials.push({ id, team: slug, name: body.name, key, revealToken, revealed: false, createdBy: user });
        this.send(res, 201, {
          id,
          name: body.name,
          key_prefix: key.slice(0, 14),
          allowed_models: body.allowed_models ?? [],
          expires_at: body.expires_at ?? null,
          reveal_url: `/reveal/${revealToken}`,
          reveal_expires_at: new Date(Date.now() + 3600_000).toISOString(),
        });
        return;
      }
    }
    this.problem(res, 404, 'not_found', 'Not found', `Unknown path ${url.pathname}`);
  }
}
