/** genai-portal:deployment:create - deploy a catalog model for a team, optionally waiting until Ready. */
import { InputError } from '@backstage/errors';
import { createTemplateAction } from '@backstage/plugin-scaffolder-node';
import type { Deployment, Identity, PortalClient } from '../../portalClient';
import { PortalError } from '../../portalClient';
import {
  PortalActionOptions,
  identityOf,
  idempotencyKey,
  nameFromRef,
  portalLink,
  resolveTeam,
  sleep,
  throwIfCancelled,
} from './common';

const DEPLOYMENT_NAME = /^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$/;
const DEFAULT_TIMEOUT_SECONDS = 900;
const DEFAULT_POLL_SECONDS = 5;

export interface WaitOptions {
  team: string;
  name: string;
  identity: Identity;
  timeoutSeconds: number;
  pollSeconds: number;
  signal?: AbortSignal;
  log: (message: string) => void;
}

/**
 * Poll the deployment until the portal reports it Ready for its current generation; Failed, a
 * timeout or cancellation end the wait with an error that says what the portal last reported.
 */
export async function waitUntilReady(client: PortalClient, options: WaitOptions): Promise<Deployment> {
  const deadline = Date.now() + options.timeoutSeconds * 1000;
  let lastReport = '';
  for (;;) {
    throwIfCancelled(options.signal, `waiting for deployment '${options.name}' to become Ready`);
    const deployment = await client.getDeployment(options.team, options.name, options.identity, options.signal);
    if (!deployment) {
      throw new Error(`Deployment '${options.name}' of team '${options.team}' disappeared while waiting for it`);
    }
    const { phase, message, observed_generation: observed } = deployment.status;
    const report = `${phase}${message ? `: ${message}` : ''}`;
    if (report !== lastReport) {
      options.log(`Deployment '${options.name}' is ${report} (generation ${deployment.generation}, observed ${observed})`);
      lastReport = report;
    }
    if (phase === 'Ready' && observed >= deployment.generation) {
      return deployment;
    }
    if (phase === 'Failed') {
      throw new Error(`Deployment '${options.name}' failed: ${message || 'the portal gave no reason'}`);
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `Deployment '${options.name}' was not Ready within ${options.timeoutSeconds} s (last: ${report}); ` +
          'it keeps reconciling in the portal, so check it there or run the template again to keep waiting.',
      );
    }
    await sleep(Math.min(options.pollSeconds * 1000, Math.max(deadline - Date.now(), 0)), options.signal).catch(() => {
      throw new Error(`Cancelled while waiting for deployment '${options.name}' to become Ready`);
    });
  }
}

export function createDeployModelAction(options: PortalActionOptions) {
  const { client } = options;
  return createTemplateAction({
    id: 'genai-portal:deployment:create',
    description:
      "Deploys a catalog model for a team through the GenAI portal (KServe on a GPU cluster behind the AI gateway), " +
      'optionally waiting until it is Ready.',
    supportsDryRun: true,
    schema: {
      input: {
        team: z => z.string().min(1).describe('Team slug, or the Backstage group ref the team is linked to'),
        model: z => z.string().min(1).describe('Catalog model slug, or its catalog entity ref (resource:default/<slug>)'),
        name: z => z.string().regex(DEPLOYMENT_NAME).describe('Deployment name: a DNS label, at most 40 characters'),
        version: z => z.string().min(1).optional().describe('Model version; default: the newest approved one'),
        cluster: z => z.string().min(1).optional(),
        acceleratorType: z => z.string().min(1).optional().describe('e.g. nvidia-l4'),
        region: z => z.string().min(1).optional(),
        minReplicas: z => z.number().int().min(0).max(64).optional(),
        maxReplicas: z => z.number().int().min(1).max(64).optional(),
        scaleToZero: z => z.boolean().optional(),
        waitForReady: z => z.boolean().optional().describe('Wait until the deployment is Ready (default true)'),
        timeoutSeconds: z => z.number().int().min(1).max(86_400).optional().describe('How long to wait (default 900)'),
        pollIntervalSeconds: z => z.number().min(0.1).max(300).optional(),
      },
      output: {
        team: z => z.string(),
        name: z => z.string(),
        model: z => z.string(),
        phase: z => z.string(),
        endpoint: z => z.string(),
        servedModelName: z => z.string(),
        deploymentUrl: z => z.string(),
      },
    },
    async handler(ctx) {
      const identity = await identityOf(ctx, options);
      const model = nameFromRef(ctx.input.model);
      const { name } = ctx.input;
      const minReplicas = ctx.input.minReplicas ?? (ctx.input.scaleToZero ? 0 : 1);
      const maxReplicas = ctx.input.maxReplicas ?? Math.max(minReplicas, 1);
      if (minReplicas > maxReplicas) {
        throw new InputError(`minReplicas (${minReplicas}) must not exceed maxReplicas (${maxReplicas})`);
      }
      const request: Record<string, unknown> = {
        name,
        model,
        min_replicas: minReplicas,
        max_replicas: maxReplicas,
        scale_to_zero: ctx.input.scaleToZero ?? false,
      };
      if (ctx.input.version) request.version = ctx.input.version;
      if (ctx.input.cluster) request.cluster = ctx.input.cluster;
      if (ctx.input.acceleratorType) request.accelerator_type = ctx.input.acceleratorType;
      if (ctx.input.region) request.region = ctx.input.region;

      if (ctx.isDryRun) {
        ctx.logger.info(`Dry run: would deploy model '${model}' as '${name}' for ${ctx.input.team}: ${JSON.stringify(request)}`);
        ctx.output('team', ctx.input.team);
        ctx.output('name', name);
        ctx.output('model', model);
        ctx.output('phase', 'DryRun');
        ctx.output('endpoint', '');
        ctx.output('servedModelName', '');
        ctx.output('deploymentUrl', portalLink(options, `/api/v1/teams/${ctx.input.team}/deployments/${name}`));
        return;
      }

      const team = await ctx.checkpoint({
        key: 'genai-portal.deployment.team',
        fn: async () => resolveTeam(client, ctx.input.team, identity, ctx.signal),
      });
      const created = await ctx.checkpoint({
        key: `genai-portal.deployment.create.${team}.${name}`,
        fn: async () => {
          ctx.logger.info(`Asking the GenAI portal to deploy model '${model}' as '${name}' for team '${team}'`);
          try {
            const response = await client.createDeployment(
              team,
              request,
              identity,
              idempotencyKey(ctx, `deployment.create.${team}.${name}`),
              ctx.signal,
            );
            for (const warning of response.body.warnings ?? []) {
              ctx.logger.warn(`Portal warning: ${warning}`);
            }
            if (response.replayed) {
              ctx.logger.info('The portal had already accepted this deployment for an earlier attempt of this step');
            }
            return {
              generation: response.body.generation,
              servedModelName: response.body.served_model_name,
              cluster: response.body.cluster,
              acceleratorType: response.body.accelerator_type,
            };
          } catch (error) {
            if (error instanceof PortalError && error.code === 'deployment_exists') {
              throw new InputError(
                `Team '${team}' already has a deployment named '${name}'. Pick another name, or delete that one first.\n${error.message}`,
              );
            }
            throw error;
          }
        },
      });
      ctx.logger.info(
        `Deployment '${name}' accepted: model '${model}', served as '${created.servedModelName}' on cluster ` +
          `'${created.cluster}' (${created.acceleratorType})`,
      );

      let deployment: Deployment | undefined;
      if (ctx.input.waitForReady ?? true) {
        deployment = await waitUntilReady(client, {
          team,
          name,
          identity,
          timeoutSeconds: ctx.input.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS,
          pollSeconds: ctx.input.pollIntervalSeconds ?? DEFAULT_POLL_SECONDS,
          signal: ctx.signal,
          log: message => ctx.logger.info(message),
        });
        ctx.logger.info(`Deployment '${name}' is Ready at ${deployment.status.endpoint}`);
      } else {
        deployment = await client.getDeployment(team, name, identity, ctx.signal);
      }
      ctx.output('team', team);
      ctx.output('name', name);
      ctx.output('model', model);
      ctx.output('phase', deployment?.status.phase ?? 'Pending');
      ctx.output('endpoint', deployment?.status.endpoint ?? '');
      ctx.output('servedModelName', deployment?.served_model_name ?? created.servedModelName);
      ctx.output('deploymentUrl', portalLink(options, `/api/v1/teams/${team}/deployments/${name}`));
    },
  });
}
