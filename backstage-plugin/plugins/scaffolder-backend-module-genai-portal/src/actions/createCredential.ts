/**
 * genai-portal:credential:create - create a gateway API key for a team. The key never passes through
 * Backstage: the portal answers with a one-time reveal link for the user, which is all this outputs.
 */
import { InputError } from '@backstage/errors';
import { createTemplateAction } from '@backstage/plugin-scaffolder-node';
import { PortalError, fieldRule } from '@genai-portal/plugin-genai-portal-node';
import { PortalActionOptions, checkedString, consoleLink, identityOf, idempotencyKey, nameFromRef, resolveTeam } from './common';

/** A key name the team already uses is refused with what to do instead: rotate that key, or pick another name. */
async function createOrExplain<T>(create: () => Promise<T>, team: string, name: string, teamUrl: string): Promise<T> {
  try {
    return await create();
  } catch (error) {
    if (error instanceof PortalError && error.code === 'credential_name_taken') {
      throw new InputError(
        `Team '${team}' already has a current API key named '${name}'. For a new key under that name, rotate it in the ` +
          `portal (${teamUrl}: the old key keeps working for the overlap window), or run this template again with another ` +
          `name (e.g. '${name}-2').\n${error.message}`,
      );
    }
    throw error;
  }
}

/** The portal builds the link from the host Backstage called; people open it at the portal's public URL. */
export function publicRevealUrl(url: string, baseUrl: string, publicUrl?: string): string {
  if (!publicUrl || !url.startsWith(`${baseUrl}/`)) {
    return url;
  }
  return `${publicUrl.replace(/\/+$/, '')}${url.slice(baseUrl.length)}`;
}

export function createCredentialAction(options: PortalActionOptions) {
  const { client } = options;
  return createTemplateAction({
    id: 'genai-portal:credential:create',
    description:
      'Creates an AI gateway API key for a team in the GenAI portal. The key is never written to the task: ' +
      'the output is a one-time link where the requesting user reveals it in the portal.',
    supportsDryRun: true,
    schema: {
      input: {
        team: z => z.string().min(1).describe('Team slug, or the Backstage group ref the team is linked to'),
        name: z => checkedString(z.string(), fieldRule('CredentialCreateInputRequest', 'name')).describe('A name for the key, e.g. the app that uses it'),
        allowedModels: z =>
          z.array(z.string().min(1)).max(100).optional().describe('Models the key may call (slugs or entity refs); default all of the team'),
        expiresAt: z => z.string().datetime({ offset: true }).optional().describe('Expiry, ISO 8601'),
      },
      output: {
        team: z => z.string(),
        credentialId: z => z.string(),
        name: z => z.string(),
        keyPrefix: z => z.string().describe('The non-secret prefix shown in lists'),
        revealUrl: z => z.string().describe('One-time link where the requesting user reveals the key'),
        revealExpiresAt: z => z.string(),
      },
    },
    async handler(ctx) {
      const identity = await identityOf(ctx, options);
      const allowedModels = ctx.input.allowedModels?.map(nameFromRef).filter(model => model.length > 0);
      if (ctx.isDryRun) {
        ctx.logger.info(
          `Dry run: would create API key '${ctx.input.name}' for ${ctx.input.team}` +
            (allowedModels?.length ? ` limited to ${allowedModels.join(', ')}` : ''),
        );
        ctx.output('team', ctx.input.team);
        ctx.output('credentialId', '');
        ctx.output('name', ctx.input.name);
        ctx.output('keyPrefix', '');
        ctx.output('revealUrl', '');
        ctx.output('revealExpiresAt', '');
        return;
      }
      const team = await ctx.checkpoint({
        key: 'genai-portal.credential.team',
        fn: async () => resolveTeam(client, ctx.input.team, identity, ctx.signal),
      });
      // Only fields picked here reach the checkpoint (stored in the scaffolder database) and the
      // outputs; whatever else the portal answers is never copied, so a key could not leak even if sent.
      const credential = await ctx.checkpoint({
        key: `genai-portal.credential.create.${team}.${ctx.input.name}`,
        fn: async () => {
          ctx.logger.info(`Asking the GenAI portal for API key '${ctx.input.name}' of team '${team}' (reveal link delivery)`);
          const response = await createOrExplain(() => client.createCredential(
            team,
            {
              name: ctx.input.name,
              ...(allowedModels?.length ? { allowed_models: allowedModels } : {}),
              ...(ctx.input.expiresAt ? { expires_at: ctx.input.expiresAt } : {}),
            },
            identity,
            idempotencyKey(ctx, `credential.create.${team}.${ctx.input.name}`),
            ctx.signal,
          ), team, ctx.input.name, consoleLink(options, { team }));
          const body = response.body;
          if (!body.reveal_url) {
            throw new Error('The GenAI portal did not answer with a reveal link; refusing to continue (no key is shown here)');
          }
          if (response.replayed) {
            ctx.logger.info('The portal had already created this key for an earlier attempt of this step');
          }
          return {
            id: String(body.id),
            name: String(body.name),
            keyPrefix: String(body.key_prefix ?? ''),
            revealUrl: publicRevealUrl(
              client.url(body.reveal_page_url ?? body.reveal_url),
              client.baseUrl,
              options.publicUrl,
            ),
            revealExpiresAt: String(body.reveal_expires_at ?? ''),
          };
        },
      });
      ctx.logger.info(
        `API key '${credential.name}' (prefix ${credential.keyPrefix}) created for team '${team}'. ` +
          `Open the reveal link in the task output to see it once, before ${credential.revealExpiresAt}.`,
      );
      ctx.output('team', team);
      ctx.output('credentialId', credential.id);
      ctx.output('name', credential.name);
      ctx.output('keyPrefix', credential.keyPrefix);
      ctx.output('revealUrl', credential.revealUrl);
      ctx.output('revealExpiresAt', credential.revealExpiresAt);
    },
  });
}
