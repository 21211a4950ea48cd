/** genai-portal:team:onboard - create a portal team (or confirm it exists) with the user as its admin. */
import { InputError } from '@backstage/errors';
import { createTemplateAction } from '@backstage/plugin-scaffolder-node';
import { PortalError } from '../../portalClient';
import { PortalActionOptions, identityOf, idempotencyKey, normalizeGroupRef, portalLink } from './common';

const TEAM_SLUG = /^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$/;

export function createOnboardTeamAction(options: PortalActionOptions) {
  const { client } = options;
  return createTemplateAction({
    id: 'genai-portal:team:onboard',
    description:
      'Creates a team in the GenAI portal, or confirms it exists, with the user who runs the template as its admin.',
    supportsDryRun: true,
    schema: {
      input: {
        team: z => z.string().regex(TEAM_SLUG).describe('Team slug: a DNS label, at most 40 characters'),
        displayName: z => z.string().min(1).max(200).describe('Display name of the team'),
        description: z => z.string().max(5000).optional(),
        groupRef: z =>
          z
            .string()
            .regex(/^group:([a-z0-9][-a-z0-9_.]*\/)?[A-Za-z0-9][-A-Za-z0-9_.]*$/)
            .optional()
            .describe('Backstage group the team is linked to, e.g. group:default/team-a'),
        costCenter: z => z.string().max(64).optional(),
      },
      output: {
        team: z => z.string(),
        created: z => z.boolean(),
        role: z => z.string(),
        teamUrl: z => z.string(),
      },
    },
    async handler(ctx) {
      const identity = await identityOf(ctx, options);
      const { team, displayName } = ctx.input;
      const groupRef = ctx.input.groupRef ? normalizeGroupRef(ctx.input.groupRef) : undefined;
      const teamUrl = portalLink(options, `/api/v1/teams/${team}`);
      if (ctx.isDryRun) {
        ctx.logger.info(`Dry run: would create team '${team}' (${displayName}) with ${identity.userRef} as admin`);
        ctx.output('team', team);
        ctx.output('created', false);
        ctx.output('role', 'admin');
        ctx.output('teamUrl', teamUrl);
        return;
      }
      const result = await ctx.checkpoint({
        key: `genai-portal.team.onboard.${team}`,
        fn: async () => {
          const existing = await client.getTeam(team, identity, ctx.signal);
          if (existing) {
            const me = await client.me(identity, ctx.signal);
            const role = me.teams.find(entry => entry.team === team)?.role ?? (me.platform_admin ? 'platform-admin' : 'none');
            if (role !== 'admin' && role !== 'platform-admin') {
              // Thrown inside the checkpoint: nothing is stored, so a retry after a role change checks again.
              throw new InputError(
                `Team '${team}' already exists and ${identity.userRef} is its ${role}, not an admin; ` +
                  'ask one of its admins to change your role.',
              );
            }
            return { created: false, role };
          }
          ctx.logger.info(`Creating team '${team}' in the GenAI portal for ${identity.userRef}`);
          try {
            const response = await client.createTeam(
              {
                slug: team,
                display_name: displayName,
                description: ctx.input.description ?? '',
                ...(groupRef ? { backstage_group_ref: groupRef } : {}),
                ...(ctx.input.costCenter ? { cost_center: ctx.input.costCenter } : {}),
              },
              identity,
              idempotencyKey(ctx, `team.create.${team}`),
              ctx.signal,
            );
            if (response.replayed) {
              ctx.logger.info('The portal had already created this team for an earlier attempt of this step');
            }
            return { created: true, role: 'admin' };
          } catch (error) {
            if (error instanceof PortalError && error.code === 'team_exists') {
              throw new InputError(
                `Team '${team}' already exists in the GenAI portal and ${identity.userRef} is not a member. ` +
                  'Ask one of its admins to add you, or pick another slug.',
              );
            }
            throw error;
          }
        },
      });
      if (result.created) {
        ctx.logger.info(`Team '${team}' created; ${identity.userRef} is its admin`);
      } else {
        ctx.logger.info(`Team '${team}' already exists and ${identity.userRef} is its ${result.role}`);
      }
      ctx.output('team', team);
      ctx.output('created', result.created);
      ctx.output('role', result.role);
      ctx.output('teamUrl', teamUrl);
    },
  });
}
