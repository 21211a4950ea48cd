/** genai-portal:deployment:delete - delete a team's deployment (and, optionally, wait until it is gone). */
import { InputError } from '@backstage/errors';
import { createTemplateAction } from '@backstage/plugin-scaffolder-node';
import { PortalError, fieldRule } from '@genai-portal/plugin-genai-portal-node';
import type { Deployment } from '@genai-portal/plugin-genai-portal-node';
import { PortalActionOptions, checkedString, identityOf, consoleLink, resolveTeam, sleep, throwIfCancelled } from './common';
import { MAX_BACKOFF_SECONDS, MAX_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS_WITH_USER_TOKEN, isTransient } from './deployModel';


export function createDeleteDeploymentAction(options: PortalActionOptions) {
  const { client } = options;
  const maxTimeoutSeconds = options.forwardUserToken ? MAX_TIMEOUT_SECONDS_WITH_USER_TOKEN : MAX_TIMEOUT_SECONDS;
  return createTemplateAction({
    id: 'genai-portal:deployment:delete',
    description: 'Deletes a deployment in the GenAI portal: the portal removes everything it applied for it.',
    supportsDryRun: true,
    schema: {
      input: {
        team: z => z.string().min(1).describe('Team slug, or the Backstage group ref the team is linked to'),
        name: z => checkedString(z.string(), fieldRule('DeploymentCreateInputRequest', 'name')),
        waitForDeletion: z => z.boolean().optional().describe('Wait until the portal has removed it (default false)'),
        timeoutSeconds: z =>
          z
            .number()
            .int()
            .min(1)
            .max(maxTimeoutSeconds)
            .optional()
            .describe(
              `How long to wait, in seconds (default 600, at most ${maxTimeoutSeconds}; ` +
                `${MAX_TIMEOUT_SECONDS_WITH_USER_TOKEN} with genaiPortal.forwardUserToken, the user token's lifetime)`,
            ),
        pollIntervalSeconds: z => z.number().min(0.1).max(300).optional(),
      },
      output: {
        team: z => z.string(),
        name: z => z.string(),
        deleted: z => z.boolean().describe('False when there was nothing to delete'),
      },
    },
    async handler(ctx) {
      const identity = await identityOf(ctx, options);
      const { name } = ctx.input;
      const timeoutSeconds = ctx.input.timeoutSeconds ?? 600;
      if (timeoutSeconds > maxTimeoutSeconds) {
        throw new InputError(
          `timeoutSeconds (${timeoutSeconds}) exceeds ${maxTimeoutSeconds} s` +
            (options.forwardUserToken
              ? ': the forwarded Backstage user token expires after about an hour; waits that long need genaiPortal.forwardUserToken: false'
              : ''),
        );
      }
      if (ctx.isDryRun) {
        ctx.logger.info(`Dry run: would delete deployment '${name}' of ${ctx.input.team}`);
        ctx.output('team', ctx.input.team);
        ctx.output('name', name);
        ctx.output('deleted', false);
        return;
      }
      const team = await ctx.checkpoint({
        key: 'genai-portal.deployment.team',
        fn: async () => resolveTeam(client, ctx.input.team, identity, ctx.signal),
      });
      // DELETE is idempotent in the portal (a second one finds it Deleting, or gone: 404).
      const deleted = await ctx.checkpoint({
        key: `genai-portal.deployment.delete.${team}.${name}`,
        fn: async () => {
          const deleting = await client.deleteDeployment(team, name, identity, ctx.signal);
          if (!deleting) {
            ctx.logger.info(`Deployment '${name}' of team '${team}' does not exist; nothing to delete`);
            return false;
          }
          ctx.logger.info(`Deployment '${name}' of team '${team}' is ${deleting.status.phase}`);
          return true;
        },
      });
      if (deleted && ctx.input.waitForDeletion) {
        const deadline = Date.now() + timeoutSeconds * 1000;
        const pollMs = (ctx.input.pollIntervalSeconds ?? 5) * 1000;
        let failures = 0;
        for (;;) {
          throwIfCancelled(ctx.signal, `waiting for deployment '${name}' to be deleted`);
          let current: Deployment | undefined;
          try {
            current = await client.getDeployment(team, name, identity, ctx.signal);
            failures = 0;
          } catch (error) {
            // A portal hiccup (unreachable, 408, 429, 5xx) is retried with back-off, as the deploy action's wait does.
            if (!ctx.signal?.aborted && isTransient(error) && !(error instanceof PortalError && error.status === 401)) {
              failures += 1;
              const pause = Math.min(pollMs * 2 ** failures, MAX_BACKOFF_SECONDS * 1000);
              const reason = (error as Error).message.split('\n')[0];
              if (Date.now() + pause >= deadline) {
                throw new Error(
                  `Stopped waiting for deployment '${name}' of team '${team}' to be deleted: the last ${failures} status read(s) ` +
                    `failed (${reason}). The deletion goes on in the portal; watch it at ${consoleLink(options, { team, deployment: name })}.`,
                );
              }
              ctx.logger.warn(
                `Could not read deployment '${name}' (attempt ${failures}: ${reason}); trying again in ${(pause / 1000).toFixed(1)} s. ` +
                  'The deletion goes on in the portal meanwhile.',
              );
              await sleep(pause, ctx.signal).catch(() => {
                throw new Error(`Cancelled while waiting for deployment '${name}' to be deleted`);
              });
              continue;
            }
            if (error instanceof PortalError && error.status === 401 && error.code === 'backstage_token_expired') {
              throw new Error(
                `Stopped waiting for deployment '${name}' of team '${team}' to be deleted: the Backstage user token forwarded ` +
                  'to the GenAI portal expired (it is valid for about an hour from the start of the task). The deletion ' +
                  `continues in the portal; watch it at ${consoleLink(options, { team, deployment: name })}.`,
              );
            }
            throw error;
          }
          if (!current) {
            ctx.logger.info(`Deployment '${name}' is gone`);
            break;
          }
          if (Date.now() >= deadline) {
            throw new Error(`Deployment '${name}' was still ${current.status.phase} after the timeout`);
          }
          await sleep(pollMs, ctx.signal).catch(() => {
            throw new Error(`Cancelled while waiting for deployment '${name}' to be deleted`);
          });
        }
      }
      ctx.output('team', team);
      ctx.output('name', name);
      ctx.output('deleted', deleted);
    },
  });
}
