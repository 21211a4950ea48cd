/** genai-portal:deployment:create - deploy a catalog model for a team, optionally waiting until Ready. */
import { InputError } from '@backstage/errors';
import { createTemplateAction } from '@backstage/plugin-scaffolder-node';
import type { Deployment, DeploymentInput, Identity, PortalClient } from '@genai-portal/plugin-genai-portal-node';
import { PortalError, fieldRule } from '@genai-portal/plugin-genai-portal-node';
import {
  PortalActionOptions,
  checkedNumber,
  checkedString,
  identityOf,
  idempotencyKey,
  nameFromRef,
  consoleLink,
  resolveTeam,
  sleep,
  throwIfCancelled,
} from './common';

const DEFAULT_TIMEOUT_SECONDS = 900;
const DEFAULT_POLL_SECONDS = 5;
/** Longest wait when the user's Backstage token is forwarded: it is valid for about an hour from the task's start. */
export const MAX_TIMEOUT_SECONDS_WITH_USER_TOKEN = 3600;
/** Longest wait with the service token and X-Backstage-User only. */
export const MAX_TIMEOUT_SECONDS = 86_400;

export interface WaitOptions {
  team: string;
  name: string;
  identity: Identity;
  timeoutSeconds: number;
  pollSeconds: number;
  signal?: AbortSignal;
  log: (message: string) => void;
  /** Warnings (a failed status read that is tried again); default: log. */
  warn?: (message: string) => void;
  /** Where people watch the deployment in the portal (named when the wait has to stop early). */
  watchUrl?: string;
}

/** Longest pause between two status reads while the portal keeps failing to answer (transient failures). */
export const MAX_BACKOFF_SECONDS = 60;

/**
 * Whether a failed status read is worth another try: the portal unreachable or slow, 408, 429 and 5xx. Anything else
 * (401, 403, 404 of the team) will not change by waiting.
 */
export function isTransient(error: unknown): boolean {
  if (error instanceof PortalError) {
    return error.status === 408 || error.status === 429 || error.status >= 500;
  }
  return error instanceof Error && !/^Cancelled/.test(error.message);
}

/**
 * Poll the deployment until the portal reports it Ready for its current generation; Failed, a timeout or
 * cancellation end the wait with an error that says what the portal last reported. A read that fails transiently
 * (see isTransient) is retried with exponential back-off (from the poll interval, doubling, at most
 * MAX_BACKOFF_SECONDS) until the deadline: one failed poll does not end a long wait. Every message that ends the wait
 * early says that the deployment goes on in the portal and where to watch it.
 */
export async function waitUntilReady(client: PortalClient, options: WaitOptions): Promise<Deployment> {
  const deadline = Date.now() + options.timeoutSeconds * 1000;
  const watch = `The deployment was accepted and goes on in the portal; watch it at ${options.watchUrl ?? 'the portal'} (or the catalog Component '${options.team}.${options.name}')`;
  let lastReport = '';
  let failures = 0;
  for (;;) {
    throwIfCancelled(options.signal, `waiting for deployment '${options.name}' to become Ready`);
    let deployment: Deployment | undefined;
    let pause = options.pollSeconds * 1000;
    try {
      deployment = await client.getDeployment(options.team, options.name, options.identity, options.signal);
      if (failures > 0) {
        options.log(`Reading deployment '${options.name}' works again after ${failures} failed attempt(s)`);
      }
      failures = 0;
    } catch (error) {
      if (error instanceof PortalError && error.status === 401 && error.code === 'backstage_token_expired') {
        throw new Error(
          `Stopped waiting for deployment '${options.name}' of team '${options.team}'${lastReport ? ` (last: ${lastReport})` : ''}: ` +
            'the Backstage user token forwarded to the GenAI portal expired (it is valid for about an hour from the start of the task). ' +
            `${watch}. Retrying this task as the same user keeps waiting ` +
            'without deploying twice; waits longer than the token lifetime need genaiPortal.forwardUserToken: false.',
        );
      }
      if (options.signal?.aborted || !isTransient(error)) {
        throw error;
      }
      failures += 1;
      pause = Math.min(options.pollSeconds * 1000 * 2 ** failures, MAX_BACKOFF_SECONDS * 1000);
      const reason = (error as Error).message.split('\n')[0];
      if (Date.now() + pause >= deadline) {
        throw new Error(
          `Stopped waiting for deployment '${options.name}' of team '${options.team}' after ${options.timeoutSeconds} s: ` +
            `the last ${failures} status read(s) failed (${reason})${lastReport ? `; last known: ${lastReport}` : ''}. ${watch}.`,
        );
      }
      options.warn?.(
        `Could not read the status of deployment '${options.name}' (attempt ${failures}: ${reason}); trying again in ` +
          `${(pause / 1000).toFixed(1)} s. The deployment goes on in the portal meanwhile.`,
      );
    }
    if (deployment) {
      const { phase, message, observed_generation: observed } = deployment.status;
      const generation = deployment.generation ?? 0;
      const report = `${phase}${message ? `: ${message}` : ''}`;
      if (report !== lastReport) {
        options.log(`Deployment '${options.name}' is ${report} (generation ${generation}, observed ${observed})`);
        lastReport = report;
      }
      if (phase === 'Ready' && observed >= generation) {
        return deployment;
      }
      if (phase === 'Failed') {
        throw new Error(
          `Deployment '${options.name}' failed: ${message || 'the portal gave no reason'}. It is still in the portal ` +
            `(${options.watchUrl ?? 'the portal'}) and keeps its name: delete it (the genai-portal:deployment:delete ` +
            'action, or in the portal) before deploying again under this name, or fix the cause and let the portal retry.',
        );
      }
      if (Date.now() >= deadline) {
        throw new Error(
          `Deployment '${options.name}' was not Ready within ${options.timeoutSeconds} s (last: ${report}). ${watch}; ` +
            'run the template again to keep waiting (it does not deploy twice).',
        );
      }
    } else if (failures === 0) {
      throw new Error(`Deployment '${options.name}' of team '${options.team}' disappeared while waiting for it`);
    }
    await sleep(Math.min(pause, Math.max(deadline - Date.now(), 0)), options.signal).catch(() => {
      throw new Error(`Cancelled while waiting for deployment '${options.name}' to become Ready`);
    });
  }
}

export function createDeployModelAction(options: PortalActionOptions) {
  const { client } = options;
  const maxTimeoutSeconds = options.forwardUserToken ? MAX_TIMEOUT_SECONDS_WITH_USER_TOKEN : MAX_TIMEOUT_SECONDS;
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
        name: z =>
          checkedString(z.string(), fieldRule('DeploymentCreateInputRequest', 'name')).describe(
            'Deployment name: a DNS label that starts with a letter, at most 40 characters',
          ),
        version: z => z.string().min(1).optional().describe('Model version; default: the newest approved one'),
        cluster: z => z.string().min(1).optional(),
        acceleratorType: z => z.string().min(1).optional().describe('e.g. nvidia-l4'),
        region: z => z.string().min(1).optional(),
        minReplicas: z => checkedNumber(z.number().int(), fieldRule('DeploymentCreateInputRequest', 'min_replicas')).optional(),
        maxReplicas: z => checkedNumber(z.number().int(), fieldRule('DeploymentCreateInputRequest', 'max_replicas')).optional(),
        scaleToZero: z => z.boolean().optional(),
        waitForReady: z => z.boolean().optional().describe('Wait until the deployment is Ready (default true)'),
        timeoutSeconds: z =>
          z
            .number()
            .int()
            .min(1)
            .max(maxTimeoutSeconds)
            .optional()
            .describe(
              `How long to wait, in seconds (default ${DEFAULT_TIMEOUT_SECONDS}, at most ${maxTimeoutSeconds}). ` +
                (options.forwardUserToken
                  ? `genaiPortal.forwardUserToken is on: the forwarded Backstage user token lives about an hour, so waits are capped at ${MAX_TIMEOUT_SECONDS_WITH_USER_TOKEN} s; longer waits need forwardUserToken: false.`
                  : `With genaiPortal.forwardUserToken on, the cap is ${MAX_TIMEOUT_SECONDS_WITH_USER_TOKEN} s (the user token's lifetime).`),
            ),
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
      const timeoutSeconds = ctx.input.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
      if (timeoutSeconds > maxTimeoutSeconds) {
        throw new InputError(
          `timeoutSeconds (${timeoutSeconds}) exceeds ${maxTimeoutSeconds} s` +
            (options.forwardUserToken
              ? ': the forwarded Backstage user token expires after about an hour; waits that long need genaiPortal.forwardUserToken: false'
              : ''),
        );
      }
      if (minReplicas > maxReplicas) {
        throw new InputError(`minReplicas (${minReplicas}) must not exceed maxReplicas (${maxReplicas})`);
      }
      const request: DeploymentInput = {
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
        ctx.output('deploymentUrl', consoleLink(options, { team: ctx.input.team, deployment: name }));
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
          timeoutSeconds,
          pollSeconds: ctx.input.pollIntervalSeconds ?? DEFAULT_POLL_SECONDS,
          signal: ctx.signal,
          log: message => ctx.logger.info(message),
          warn: message => ctx.logger.warn(message),
          watchUrl: consoleLink(options, { team, deployment: name }),
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
      ctx.output('deploymentUrl', consoleLink(options, { team, deployment: name }));
    },
  });
}
