/** genai-portal:team:onboard - create a portal team (or confirm it exists) with the user as its admin. */
import { InputError } from '@backstage/errors';
import { createTemplateAction } from '@backstage/plugin-scaffolder-node';
import { PortalError, fieldRule } from '@genai-portal/plugin-genai-portal-node';
import { PortalActionOptions, checkedString, identityOf, idempotencyKey, normalizeGroupRef, consoleLink } from './common';


export function createOnboardTeamAction(options: PortalActionOptions) {
  const { client } = options;
  return createTemplateAction({
    id: 'genai-portal:team:onboard',
    description:
      'Creates a team in the GenAI portal, or confirms it exists, with the user who runs the template as its admin.',
    supportsDryRun: true,
    schema: {
      input: {
        team: z => checkedString(z.string(), fieldRule('TeamCreateInputRequest', 'slug')).describe('Team slug: a DNS label, at most 40 characters'),
        displayName: z => checkedString(z.string(), fieldRule('TeamCreateInputRequest', 'display_name')).describe('Display name of the team'),
        description: z => checkedString(z.string(), fieldRule('TeamCreateInputRequest', 'description')).optional(),
        groupRef: z =>
          z
            .string()
            .regex(/^group:([a-z0-9][-a-z0-9_.]*\/)?[A-Za-z0-9][-A-Za-z0-9_.]*$/)
            .optional()
            .describe('Backstage group the team is linked to, e.g. group:default/team-a'),
        costCenter: z => checkedString(z.string(), fieldRule('TeamCreateInputRequest', 'cost_center')).optional(),
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
      const teamUrl = consoleLink(options, { team });
      if (ctx.isDryRun) {
        // Read-only: whether the team exists for this user decides what the real run would do.
        const existing = await client.getTeam(team, identity, ctx.signal);
        if (existing) {
          const me = await client.me(identity, ctx.signal);
          const role = me.teams.find(entry => entry.team === team)?.role ?? (me.platform_admin ? 'platform-admin' : 'none');
          ctx.logger.info(`Dry run: team '${team}' exists and ${identity.userRef} is its ${role}; it would be confirmed, not created`);
          ctx.output('created', false);
          ctx.output('role', role);
        } else {
          ctx.logger.info(`Dry run: would create team '${team}' (${displayName}) with ${identity.userRef} as admin`);
          ctx.output('created', true);
          ctx.output('role', 'admin');
        }
        ctx.output('team', team);
        ctx.output('teamUrl', teamUrl);
        return;
      }
      /** An existing team: link it to the requested group, or refuse when it is linked to another one. */
      const linkGroup = async (current: string | null) => {
        if (!groupRef) return;
        if (current && normalizeGroupRef(current) === groupRef) {
          return;
        }
        if (current) {
          throw new InputError(
            `Team '${team}' is already linked to the Backstage group ${current}, not to ${groupRef}. ` +
              `Onboard it with groupRef ${current} (or none), or have a team admin change its group in the portal first.`,
          );
        }
        ctx.logger.info(`Linking team '${team}' to the Backstage group ${groupRef}`);
        try {
          await client.updateTeam(team, { backstage_group_ref: groupRef }, identity, ctx.signal);
        } catch (error) {
          if (error instanceof PortalError && error.code === 'group_ref_taken') {
            throw new InputError(
              `Team '${team}' cannot be linked to ${groupRef}: another GenAI portal team is linked to that group.\n${error.message}`,
            );
          }
          throw error;
        }
      };
      // The create comes first, with an Idempotency-Key: a retry whose checkpoint was lost (the backend died
      // between the portal's answer and storing it) gets the portal's replay of the same 201, so the
      // outputs do not change across retries. A team that already exists answers 409 (never replayed: only
      // 2xx are remembered) and is then confirmed for its admin.
      const result = await ctx.checkpoint({
        key: `genai-portal.team.onboard.${team}`,
        fn: async () => {
          ctx.logger.info(`Asking the GenAI portal to create team '${team}' for ${identity.userRef} (or confirm it exists)`);
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
            const exists = error instanceof PortalError && error.status === 409 && error.code === 'team_exists';
            const restricted = error instanceof PortalError && error.code === 'team_creation_restricted';
            if (!exists && !restricted) {
              if (error instanceof PortalError && error.code === 'group_ref_taken') {
                throw new InputError(
                  `Another GenAI portal team is already linked to the Backstage group ${groupRef}; pick that team, or another group.\n${error.message}`,
                );
              }
              throw error;
            }
            const existing = await client.getTeam(team, identity, ctx.signal);
            if (!existing) {
              if (restricted) {
                throw error;
              }
              const admins = Array.isArray(error.problem.admins) ? (error.problem.admins as string[]) : [];
              const group = typeof error.problem.backstage_group_ref === 'string' ? error.problem.backstage_group_ref : '';
              const whom = admins.length
                ? `one of its admins (${admins.join(', ')})`
                : group
                  ? `an owner of its Backstage group ${group}`
                  : 'a platform admin of the GenAI portal';
              throw new InputError(
                `Team '${team}' already exists in the GenAI portal and ${identity.userRef} is not a member. ` +
                  `Ask ${whom} to add you, or pick another slug.`,
              );
            }
            const me = await client.me(identity, ctx.signal);
            const role = me.teams.find(entry => entry.team === team)?.role ?? (me.platform_admin ? 'platform-admin' : 'none');
            if (role !== 'admin' && role !== 'platform-admin') {
              // Thrown inside the checkpoint: nothing is stored, so a retry after a role change checks again.
              throw new InputError(
                `Team '${team}' already exists and ${identity.userRef} is its ${role}, not an admin; ` +
                  'ask one of its admins to change your role.',
              );
            }
            if (groupRef) {
              await linkGroup(existing.backstage_group_ref ?? null);
            }
            return { created: false, role };
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
