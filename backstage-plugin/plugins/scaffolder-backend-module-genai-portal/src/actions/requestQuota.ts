/**
 * genai-portal:quota:request - ask for more GPU quota (and deployments) for a team; a platform admin of the portal
 * approves or rejects it (POST /api/v1/teams/{team}/quota-requests/{id}/approve), and an approval applies it.
 */
import { InputError } from '@backstage/errors';
import { createTemplateAction } from '@backstage/plugin-scaffolder-node';
import { PortalError, fieldRule } from '@genai-portal/plugin-genai-portal-node';
import type { QuotaRequestInput } from '@genai-portal/plugin-genai-portal-node';
import { PortalActionOptions, checkedNumber, checkedString, consoleLink, identityOf, idempotencyKey, resolveTeam } from './common';

const ACCELERATOR_TYPE = /^[a-z0-9]([-a-z0-9]{0,62}[a-z0-9])?$/;

export function createRequestQuotaAction(options: PortalActionOptions) {
  const { client } = options;
  return createTemplateAction({
    id: 'genai-portal:quota:request',
    description:
      'Asks the GenAI portal for more GPU quota (and deployments) for a team; a platform admin approves it, which ' +
      'applies it to the team quota.',
    supportsDryRun: true,
    schema: {
      input: {
        team: z => z.string().min(1).describe('Team slug, or the Backstage group ref the team is linked to'),
        acceleratorType: z => z.string().regex(ACCELERATOR_TYPE).optional().describe('e.g. nvidia-l4'),
        gpus: z => z.number().int().min(0).max(100_000).optional().describe('GPUs of that type the team wants in total'),
        maxDeployments: z => checkedNumber(z.number().int(), fieldRule('QuotaRequestCreateInputRequest', 'max_deployments')).optional().describe('Deployments the team wants in total'),
        reason: z => checkedString(z.string(), fieldRule('QuotaRequestCreateInputRequest', 'reason')).describe('What the quota is for (the admin who decides reads it)'),
      },
      output: {
        team: z => z.string(),
        requestId: z => z.number(),
        status: z => z.string(),
        teamUrl: z => z.string(),
      },
    },
    async handler(ctx) {
      const identity = await identityOf(ctx, options);
      const { acceleratorType, gpus, maxDeployments, reason } = ctx.input;
      if ((acceleratorType === undefined) !== (gpus === undefined)) {
        throw new InputError('acceleratorType and gpus go together: name the accelerator type and how many GPUs of it');
      }
      if (gpus === undefined && maxDeployments === undefined) {
        throw new InputError('Ask for GPUs (acceleratorType and gpus), for maxDeployments, or for both');
      }
      const body: QuotaRequestInput = {
        gpus: acceleratorType !== undefined && gpus !== undefined ? { [acceleratorType]: gpus } : {},
        ...(maxDeployments !== undefined ? { max_deployments: maxDeployments } : {}),
        reason,
      };
      if (ctx.isDryRun) {
        ctx.logger.info(`Dry run: would ask for quota for ${ctx.input.team}: ${JSON.stringify(body)}`);
        ctx.output('team', ctx.input.team);
        ctx.output('requestId', 0);
        ctx.output('status', 'DryRun');
        ctx.output('teamUrl', '');
        return;
      }
      const team = await ctx.checkpoint({
        key: 'genai-portal.quota.team',
        fn: async () => resolveTeam(client, ctx.input.team, identity, ctx.signal),
      });
      const created = await ctx.checkpoint({
        key: `genai-portal.quota.request.${team}`,
        fn: async () => {
          try {
            const response = await client.createQuotaRequest(
              team,
              body,
              identity,
              idempotencyKey(ctx, `quota.request.${team}`),
              ctx.signal,
            );
            return { id: response.body.id, status: response.body.status ?? '' };
          } catch (error) {
            if (error instanceof PortalError && error.code === 'quota_request_pending') {
              throw new InputError(
                `Team '${team}' already has a pending quota request (${String(error.problem.pending_request ?? '')}): wait for a ` +
                  `platform admin to decide it, or withdraw it in the portal (${consoleLink(options, { team })}) and ask again.\n${error.message}`,
              );
            }
            throw error;
          }
        },
      });
      ctx.logger.info(
        `Quota request ${created.id} of team '${team}' is ${created.status}: a platform admin of the GenAI portal decides it; ` +
          'once approved, the team quota holds it (retry a deploy that was refused for quota).',
      );
      ctx.output('team', team);
      ctx.output('requestId', created.id);
      ctx.output('status', created.status);
      ctx.output('teamUrl', consoleLink(options, { team }));
    },
  });
}
