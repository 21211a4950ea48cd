/** The entity provider that mirrors the GenAI portal's models and deployments into the catalog. */
import type { LoggerService, SchedulerServiceTaskRunner } from '@backstage/backend-plugin-api';
import type { Entity } from '@backstage/catalog-model';
import type { EntityProvider, EntityProviderConnection } from '@backstage/plugin-catalog-node';
import type { CatalogModel, PortalClient, Team } from '@genai-portal/plugin-genai-portal-node';
import { MappingOptions, deploymentToEntities, modelToEntity } from './entities';

export interface GenaiPortalEntityProviderOptions {
  client: PortalClient;
  mapping: Omit<MappingOptions, 'providerName' | 'baseUrl'> & { baseUrl?: string };
  logger: LoggerService;
  /** Runs `refresh` on a schedule; omit it to call `refresh` yourself. */
  taskRunner?: SchedulerServiceTaskRunner;
  providerName?: string;
  /** The portal scope the token must carry to mirror (the module sets `catalog:read`); unset: not checked. */
  requiredScope?: string;
}

export class GenaiPortalEntityProvider implements EntityProvider {
  private connection?: EntityProviderConnection;
  private readonly options: GenaiPortalEntityProviderOptions;
  private readonly mapping: MappingOptions;

  constructor(options: GenaiPortalEntityProviderOptions) {
    this.options = options;
    this.mapping = {
      ...options.mapping,
      baseUrl: options.mapping.baseUrl ?? options.client.baseUrl,
      providerName: options.providerName ?? 'genai-portal',
    };
  }

  getProviderName(): string {
    return this.mapping.providerName;
  }

  async connect(connection: EntityProviderConnection): Promise<void> {
    this.connection = connection;
    if (this.options.taskRunner) {
      await this.options.taskRunner.run({
        id: `${this.getProviderName()}:refresh`,
        fn: async () => {
          try {
            await this.refresh();
          } catch (error) {
            // Keep what the catalog has: a failed read must not empty it (no mutation is applied).
            this.options.logger.error(`Mirroring the GenAI portal failed; the catalog keeps the last mirror: ${String(error)}`);
          }
        },
      });
    }
  }

  /**
   * Refuse to mirror with a token that cannot read every team: a `backstage`-scoped token (the actions') reads only
   * teams it acts for (none, without a user), so a mirror with it would silently drop every deployment entity.
   * Asked on every run (GET /api/v1/me), so a token replaced in the portal is noticed.
   */
  async checkScopes(): Promise<void> {
    if (!this.options.requiredScope) return;
    const { scopes } = await this.options.client.me();
    if (!scopes.includes(this.options.requiredScope)) {
      throw new Error(
        `refusing to mirror the GenAI portal: genaiPortal.catalog.token has the portal scopes [${scopes.join(', ')}], not ` +
          `'${this.options.requiredScope}', so it cannot read every team and their deployments. Give it a token with that ` +
          `scope (manage.py issue_token --service backstage-catalog --scope ${this.options.requiredScope}).`,
      );
    }
  }

  /** Everything the portal has now; a failure throws before any mutation, so the catalog keeps the last mirror. */
  async readEntities(): Promise<Entity[]> {
    await this.checkScopes();
    const { client } = this.options;
    const [models, teams] = await Promise.all([client.listModels(), client.listTeams()]);
    const teamsBySlug = new Map<string, Team>(teams.map(team => [team.slug, team]));
    const modelsBySlug = new Map<string, CatalogModel>(models.map(model => [model.slug, model]));
    const entities: Entity[] = models.map(model => modelToEntity(model, this.mapping));
    for (const team of teams) {
      const deployments = await client.listDeployments(team.slug);
      for (const deployment of deployments) {
        entities.push(
          ...deploymentToEntities(deployment, teamsBySlug.get(deployment.team), this.mapping, modelsBySlug.get(deployment.model)),
        );
      }
    }
    return entities;
  }

  /** Replace what this provider emitted before (a full mutation: removed models and deployments disappear). */
  async refresh(): Promise<number> {
    if (!this.connection) {
      throw new Error(`${this.getProviderName()} is not connected to the catalog yet`);
    }
    const entities = await this.readEntities();
    await this.connection.applyMutation({
      type: 'full',
      entities: entities.map(entity => ({ entity, locationKey: `${this.getProviderName()}:${this.mapping.baseUrl}` })),
    });
    this.options.logger.info(`Mirrored ${entities.length} entities from the GenAI portal at ${this.mapping.baseUrl}`);
    return entities.length;
  }
}
