/** genai-portal:deployment:plan - size a catalog model for a team before deploying it: fits, GPUs, monthly cost. */
import { InputError } from '@backstage/errors';
import { createTemplateAction } from '@backstage/plugin-scaffolder-node';
import { fieldRule } from '@genai-portal/plugin-genai-portal-node';
import type { CatalogModelDetail, FitInput, FitPlan, Placement } from '@genai-portal/plugin-genai-portal-node';
import { PortalActionOptions, checkedNumber, identityOf, nameFromRef, resolveTeam } from './common';

const GB = 1e9;

function gigabytes(bytes: number): string {
  return `${(bytes / GB).toFixed(1)} GB`;
}

/** The version a deployment gets when none is named: the newest approved, else preview, else deprecated (as the portal). */
export function defaultVersion(model: CatalogModelDetail): string | undefined {
  for (const lifecycle of ['approved', 'preview', 'deprecated']) {
    const found = model.versions
      .filter(version => version.lifecycle === lifecycle)
      .sort((a, b) => b.created_at.localeCompare(a.created_at))[0];
    if (found) return found.version;
  }
  return undefined;
}

/** One paragraph people read in the template's output (markdown). */
export function planSummary(plan: FitPlan, placement: Placement | undefined): string {
  const needs =
    `${plan.model} ${plan.version} needs ${gigabytes(plan.weight_bytes)} of weights and ` +
    `${plan.kv_cache_bytes_per_token.toLocaleString('en-US')} bytes of KV cache per token (${plan.kv_cache_dtype}); ` +
    `sized for ${plan.context_length.toLocaleString('en-US')} tokens x ${plan.concurrency} sequence(s).`;
  if (!placement) {
    return `${needs} It does not fit on any GPU pool the team may use.`;
  }
  const cheaper = placement.break_even.find(item => item.monthly_tokens !== null);
  return (
    `${needs} Fits on ${placement.gpus_per_replica} x ${placement.accelerator_type} per replica on ${placement.cluster} ` +
    `(tensor parallel ${placement.tensor_parallel_size}, ${gigabytes(placement.fit.margin_bytes_per_gpu)} to spare per GPU, ` +
    `up to ${placement.fit.max_concurrency_at_context} sequences at this context): ` +
    `${placement.monthly_cost} ${placement.currency} a month for ${placement.replicas} replica(s)` +
    (cheaper ? `, cheaper than ${cheaper.model} above ${cheaper.monthly_tokens!.toLocaleString('en-US')} tokens a month.` : '.')
  );
}

export function createPlanDeploymentAction(options: PortalActionOptions) {
  const { client } = options;
  return createTemplateAction({
    id: 'genai-portal:deployment:plan',
    description:
      'Sizes a catalog model for a team before it is deployed (weights, KV cache, the GPUs that hold it, the monthly cost). ' +
      'Creates nothing, so it runs in dry runs too; fails when no pool the team may use can hold the model.',
    supportsDryRun: true,
    schema: {
      input: {
        team: z => z.string().min(1).describe('Team slug, or the Backstage group ref the team is linked to'),
        model: z => z.string().min(1).describe('Catalog model slug, or its catalog entity ref (resource:default/<slug>)'),
        version: z => z.string().min(1).optional().describe('Model version; default: the newest approved one'),
        cluster: z => z.string().min(1).optional(),
        acceleratorType: z => z.string().min(1).optional(),
        region: z => z.string().min(1).optional(),
        gpusPerReplica: z => checkedNumber(z.number().int(), fieldRule('FitInputRequest', 'gpus_per_replica')).optional(),
        contextLength: z =>
          checkedNumber(z.number().int(), fieldRule('FitInputRequest', 'context_length'))
            .optional()
            .describe("Default: the catalog's --max_model_len"),
        concurrency: z => checkedNumber(z.number().int(), fieldRule('FitInputRequest', 'concurrency')).optional(),
        // The deployment's minimum (0 scales to zero); the plan sizes at least one replica.
        minReplicas: z => checkedNumber(z.number().int(), fieldRule('DeploymentCreateInputRequest', 'min_replicas')).optional(),
      },
      output: {
        fits: z => z.boolean(),
        cluster: z => z.string(),
        acceleratorType: z => z.string(),
        gpusPerReplica: z => z.number(),
        tensorParallelSize: z => z.number(),
        monthlyCost: z => z.string(),
        currency: z => z.string(),
        summary: z => z.string(),
      },
    },
    async handler(ctx) {
      const identity = await identityOf(ctx, options);
      const model = nameFromRef(ctx.input.model);
      const team = await resolveTeam(client, ctx.input.team, identity, ctx.signal);
      let version = ctx.input.version;
      if (!version) {
        version = defaultVersion(await client.getModel(model, identity, ctx.signal));
        if (!version) throw new InputError(`Model '${model}' has no deployable version`);
      }
      const request: FitInput = { team, min_replicas: Math.max(ctx.input.minReplicas ?? 1, 1) };
      if (ctx.input.cluster) request.cluster = ctx.input.cluster;
      if (ctx.input.acceleratorType) request.accelerator_type = ctx.input.acceleratorType;
      if (ctx.input.region) request.region = ctx.input.region;
      if (ctx.input.gpusPerReplica) request.gpus_per_replica = ctx.input.gpusPerReplica;
      if (ctx.input.contextLength) request.context_length = ctx.input.contextLength;
      if (ctx.input.concurrency) request.concurrency = ctx.input.concurrency;
      const plan = await client.fitModel(model, version, request, identity, ctx.signal);
      const placement = ctx.input.gpusPerReplica ? plan.evaluated.find(item => item.fit.fits) : plan.placements[0];
      const summary = planSummary(plan, placement);
      ctx.logger.info(`${ctx.isDryRun ? 'Dry run: ' : ''}Plan for '${model}' (team '${team}'): ${summary}`);
      if (!placement) {
        const closest = plan.evaluated[0];
        throw new InputError(
          summary +
            (closest
              ? ` ${closest.gpus_per_replica} x ${closest.accelerator_type} on ${closest.cluster} is short by ` +
                `${gigabytes(-closest.fit.margin_bytes_per_gpu)} per GPU.`
              : '') +
            ' Pick a larger GPU type, more GPUs per replica or a shorter context; nothing was created.',
        );
      }
      ctx.output('fits', true);
      ctx.output('cluster', placement.cluster);
      ctx.output('acceleratorType', placement.accelerator_type);
      ctx.output('gpusPerReplica', placement.gpus_per_replica);
      ctx.output('tensorParallelSize', placement.tensor_parallel_size);
      ctx.output('monthlyCost', placement.monthly_cost);
      ctx.output('currency', placement.currency);
      ctx.output('summary', summary);
    },
  });
}
