/** Shared wiring for action unit tests: a fake portal and the actions pointed at it. */
import { PortalClient } from '../../plugins/genai-portal-node/src/portalClient';
import { createGenaiPortalActions } from '../../plugins/scaffolder-backend-module-genai-portal/src/module';
import { FakePortal, FakePortalOptions } from './fakePortal';

export async function startPortalAndActions(options: FakePortalOptions & { forwardUserToken?: boolean } = {}) {
  const portal = await new FakePortal(options).start();
  const client = new PortalClient({ baseUrl: portal.url, token: portal.token, timeoutMs: 5000 });
  const actions = createGenaiPortalActions({ client, publicUrl: 'https://portal.example.com', forwardUserToken: options.forwardUserToken });
  const byId = Object.fromEntries(actions.map(action => [action.id, action]));
  return { portal, client, actions: byId };
}

/** Run an action handler with a hand-made context (the type of ctx is the action's own). */
export async function run(action: any, ctx: any): Promise<void> {
  await action.handler(ctx);
}
