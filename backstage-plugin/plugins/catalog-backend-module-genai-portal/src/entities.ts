/** Pure mapping of portal models, teams and deployments to Backstage catalog entities. */
import { createHash } from 'node:crypto';
import type { Entity } from '@backstage/catalog-model';
import { consoleUrl } from '@genai-portal/plugin-genai-portal-node';
import type { CatalogModel, Deployment, Team } from '@genai-portal/plugin-genai-portal-node';

export const ANNOTATION_PREFIX = 'genai-portal.dev';
export const MODEL_ANNOTATION = `${ANNOTATION_PREFIX}/model`;
export const TEAM_ANNOTATION = `${ANNOTATION_PREFIX}/team`;
export const DEPLOYMENT_ANNOTATION = `${ANNOTATION_PREFIX}/deployment`;
export const URL_ANNOTATION = `${ANNOTATION_PREFIX}/url`;
export const PHASE_ANNOTATION = `${ANNOTATION_PREFIX}/phase`;
export const ENDPOINT_ANNOTATION = `${ANNOTATION_PREFIX}/endpoint`;
export const SERVED_MODEL_ANNOTATION = `${ANNOTATION_PREFIX}/served-model-name`;
/**
 * The page people open from the entity ("View" in Backstage). The catalog's AnnotateLocationEntityProcessor would
 * otherwise set it to the managed-by-location target, the portal's JSON API on the internal base URL; it merges its
 * defaults under the entity's own annotations (lodash.merge(defaults, entity), plugin-catalog-backend 4.0
 * dist/processors/AnnotateLocationEntityProcessor.cjs.js), so the one set here wins.
 */
export const VIEW_URL_ANNOTATION = 'backstage.io/view-url';

/** Right-sizing of the version deployed by default, as annotations (strings): what one replica must hold. */
export function sizingAnnotations(model: CatalogModel): Record<string, string> {
  const sizing = model.sizing;
  if (!sizing) return {};
  return {
    [`${ANNOTATION_PREFIX}/sizing-version`]: sizing.version,
    [`${ANNOTATION_PREFIX}/parameters`]: String(sizing.parameters),
    [`${ANNOTATION_PREFIX}/weight-dtype`]: sizing.weight_dtype,
    [`${ANNOTATION_PREFIX}/attention`]: sizing.attention,
    [`${ANNOTATION_PREFIX}/weight-bytes`]: String(sizing.weight_bytes),
    [`${ANNOTATION_PREFIX}/kv-cache-bytes-per-token`]: String(sizing.kv_cache_bytes_per_token),
  };
}

export interface MappingOptions {
  /** The portal's base URL, as the provider reads it (location annotations). */
  baseUrl: string;
  /** The portal's URL for people (links). */
  publicUrl: string;
  namespace: string;
  modelOwner: string;
  lifecycle: string;
  providerName: string;
}

const MAX_NAME = 63;

/** An entity name (at most 63 characters of [A-Za-z0-9-_.]) that stays unique when it must be shortened. */
export function entityName(...parts: string[]): string {
  const joined = parts.join('.').replace(/[^A-Za-z0-9._-]/g, '-');
  if (joined.length <= MAX_NAME) {
    return joined;
  }
  const digest = createHash('sha256').update(joined).digest('hex').slice(0, 8);
  return `${joined.slice(0, MAX_NAME - 9).replace(/[^A-Za-z0-9]+$/, '')}-${digest}`;
}

/** Catalog tags: lowercase words joined by '-' (the catalog refuses '_' and uppercase). */
export function tag(value: string): string {
  return value
    .toLowerCase()
    .replace(/[^a-z0-9:+#]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63);
}

function locationAnnotations(options: MappingOptions, path: string): Record<string, string> {
  const location = `url:${options.baseUrl}${path}`;
  return {
    'backstage.io/managed-by-location': location,
    'backstage.io/managed-by-origin-location': location,
  };
}

export function teamOwnerRef(team: Team | undefined, slug: string, namespace: string): string {
  return team?.backstage_group_ref ?? `group:${namespace}/${slug}`;
}

export function modelEntityRef(slug: string, namespace: string): string {
  return `resource:${namespace}/${entityName(slug)}`;
}

export function modelToEntity(model: CatalogModel, options: MappingOptions): Entity {
  const path = `/api/v1/catalog/models/${model.slug}`;
  const page = consoleUrl(options.publicUrl, { model: model.slug });
  return {
    apiVersion: 'backstage.io/v1alpha1',
    kind: 'Resource',
    metadata: {
      name: entityName(model.slug),
      namespace: options.namespace,
      title: model.display_name,
      description: model.description || `${model.display_name} by ${model.publisher}`,
      tags: [...new Set([...(model.capabilities ?? []).map(tag), tag(model.hosting)].filter(Boolean))],
      labels: { [`${ANNOTATION_PREFIX}/lifecycle`]: tag(model.lifecycle ?? ''), [`${ANNOTATION_PREFIX}/hosting`]: tag(model.hosting) },
      annotations: {
        ...locationAnnotations(options, path),
        [MODEL_ANNOTATION]: model.slug,
        [URL_ANNOTATION]: page,
        [VIEW_URL_ANNOTATION]: page,
        [`${ANNOTATION_PREFIX}/publisher`]: model.publisher,
        [`${ANNOTATION_PREFIX}/license`]: model.license,
        [`${ANNOTATION_PREFIX}/context-window`]: String(model.context_window),
        ...sizingAnnotations(model),
      },
      links: [{ url: page, title: 'Model in the GenAI portal', icon: 'catalog' }],
    },
    spec: {
      type: 'ai-model',
      owner: options.modelOwner,
      lifecycle: tag(model.lifecycle ?? ''),
    },
  };
}

function deploymentNames(deployment: Deployment): { component: string; api: string } {
  const base = entityName(deployment.team, deployment.name);
  return { component: base, api: base };
}

/** A deployment: a model-server Component owned by the team's group, and the OpenAI-compatible API it provides. */
export function deploymentToEntities(
  deployment: Deployment,
  team: Team | undefined,
  options: MappingOptions,
  model?: CatalogModel,
): Entity[] {
  const path = `/api/v1/teams/${deployment.team}/deployments/${deployment.name}`;
  const page = consoleUrl(options.publicUrl, { team: deployment.team, deployment: deployment.name });
  const owner = teamOwnerRef(team, deployment.team, options.namespace);
  const names = deploymentNames(deployment);
  const endpoint = deployment.status.endpoint;
  const annotations = {
    ...locationAnnotations(options, path),
    [TEAM_ANNOTATION]: deployment.team,
    [DEPLOYMENT_ANNOTATION]: deployment.name,
    [MODEL_ANNOTATION]: deployment.model,
    [SERVED_MODEL_ANNOTATION]: deployment.served_model_name,
    [URL_ANNOTATION]: page,
    [VIEW_URL_ANNOTATION]: page,
    [PHASE_ANNOTATION]: deployment.status.phase,
    ...(endpoint ? { [ENDPOINT_ANNOTATION]: endpoint } : {}),
  };
  const links = [
    { url: page, title: 'Deployment in the GenAI portal', icon: 'dashboard' },
    { url: consoleUrl(options.publicUrl, { team: deployment.team }), title: `Team ${deployment.team} in the GenAI portal`, icon: 'group' },
    ...(endpoint ? [{ url: endpoint, title: 'Inference endpoint (OpenAI-compatible)', icon: 'link' }] : []),
  ];
  const component: Entity = {
    apiVersion: 'backstage.io/v1alpha1',
    kind: 'Component',
    metadata: {
      name: names.component,
      namespace: options.namespace,
      title: `${deployment.name} (${deployment.team})`,
      description: `Model server of team ${deployment.team} serving ${deployment.model} ${deployment.version} as '${deployment.served_model_name}' on ${deployment.cluster} (${deployment.accelerator_type})`,
      tags: ['model-server', tag(deployment.status.phase)],
      annotations,
      links,
    },
    spec: {
      type: 'model-server',
      lifecycle: options.lifecycle,
      owner,
      dependsOn: [modelEntityRef(deployment.model, options.namespace)],
      providesApis: [`api:${options.namespace}/${names.api}`],
    },
  };
  const api: Entity = {
    apiVersion: 'backstage.io/v1alpha1',
    kind: 'API',
    metadata: {
      name: names.api,
      namespace: options.namespace,
      title: `${deployment.served_model_name} (OpenAI-compatible)`,
      description: `OpenAI-compatible inference API of deployment ${deployment.name} of team ${deployment.team}`,
      tags: ['openai', ...apiRoutes(model?.capabilities).map(route => tag(route.tag))],
      annotations,
      links,
    },
    spec: {
      type: 'openapi',
      lifecycle: options.lifecycle,
      owner,
      definition: openAiDefinition(deployment, model?.capabilities),
    },
  };
  return [component, api];
}

interface ApiRoute {
  path: string;
  summary: string;
  response: string;
  tag: string;
}

/**
 * The OpenAI-compatible routes a model serves, from its catalog capabilities: chat (and vision, tool calling, which
 * are chat requests) -> /chat/completions, completion -> /completions, embeddings -> /embeddings. A model the mirror
 * could not read (capabilities unknown) is described as chat and completions, as before.
 */
export function apiRoutes(capabilities: string[] | undefined): ApiRoute[] {
  const known = capabilities ?? ['chat', 'completion'];
  const routes: ApiRoute[] = [];
  if (known.some(capability => ['chat', 'vision', 'tool_calling'].includes(capability))) {
    routes.push({ path: '/chat/completions', summary: 'Chat completion', response: 'A chat completion', tag: 'chat' });
  }
  if (known.includes('completion')) {
    routes.push({ path: '/completions', summary: 'Text completion', response: 'A completion', tag: 'completion' });
  }
  if (known.includes('embeddings')) {
    routes.push({ path: '/embeddings', summary: 'Embeddings', response: 'Embedding vectors of the input', tag: 'embeddings' });
  }
  return routes;
}

/** A minimal OpenAPI document of the routes the served model answers (from its capabilities). */
export function openAiDefinition(deployment: Deployment, capabilities?: string[]): string {
  const endpoint = deployment.status.endpoint.replace(/\/+$/, '');
  // The portal's endpoint is the OpenAI base URL (…/openai/v1); an older bare host gets the prefix.
  const servers = endpoint ? [{ url: /\/v1$/.test(endpoint) ? endpoint : `${endpoint}/openai/v1` }] : [];
  const model = { type: 'string', enum: [deployment.served_model_name] };
  const schemas: Record<string, unknown> = {
    '/chat/completions': { type: 'object', required: ['model', 'messages'], properties: { model, messages: { type: 'array', items: { type: 'object' } } } },
    '/completions': { type: 'object', required: ['model', 'prompt'], properties: { model, prompt: { type: 'string' } } },
    '/embeddings': {
      type: 'object',
      required: ['model', 'input'],
      properties: { model, input: { oneOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }] } },
    },
  };
  const paths = Object.fromEntries(
    apiRoutes(capabilities).map(route => [
      route.path,
      {
        post: {
          summary: route.summary,
          requestBody: { required: true, content: { 'application/json': { schema: schemas[route.path] } } },
          responses: { '200': { description: route.response } },
        },
      },
    ]),
  );
  return JSON.stringify(
    {
      openapi: '3.0.3',
      info: {
        title: `${deployment.served_model_name} via the GenAI platform`,
        version: String(deployment.generation),
        description: `Call it with a team API key (Authorization: Bearer <key>) and "model": "${deployment.served_model_name}".`,
      },
      servers,
      paths,
    },
    null,
    2,
  );
}
