import { SchedulerServiceTaskScheduleDefinitionConfig } from '@backstage/backend-plugin-api';

export interface Config {
  /** The GenAI platform portal that the scaffolder actions call and the catalog mirrors. */
  genaiPortal?: {
    /**
     * Base URL of the portal as the Backstage backend reaches it, e.g. https://genai-portal.example.com
     */
    baseUrl: string;
    /**
     * URL of the portal for links shown to people (task outputs, entity links). Defaults to baseUrl.
     */
    publicUrl?: string;
    /**
     * Portal service token with the `backstage` scope: the actions send it with the initiating
     * user's entity ref in X-Backstage-User (manage.py issue_token --service backstage --scope backstage).
     * @visibility secret
     */
    token: string;
    /**
     * Also forward the initiating user's Backstage token in X-Backstage-Token, for a portal that
     * verifies it (PORTAL_BACKSTAGE_JWKS_URL). With this on, an action refuses to run without it, and
     * waits are bounded by that token's lifetime (about an hour from the start of the task): the
     * actions' timeoutSeconds is capped at 3600, and a wait that outlives the token stops saying where to
     * watch the deployment. Waits longer than that need forwardUserToken: false.
     */
    forwardUserToken?: boolean;
    /** Timeout of one HTTP request to the portal, in seconds (default 30). */
    requestTimeoutSeconds?: number;
    /** The catalog entity provider that mirrors the portal's models and deployments. */
    catalog?: {
      /**
       * Portal service token the provider reads with, with the scope `catalog:read`: it reads every team,
       * its deployments and the model catalog, and nothing else
       * (manage.py issue_token --service backstage-catalog --scope catalog:read).
       * Without it the mirror is off (a warning at startup): the `backstage` token of genaiPortal.token
       * is never used for it. At startup the module asks the portal (GET /api/v1/me) and warns when the
       * token lacks `catalog:read`.
       * @visibility secret
       */
      token?: string;
      /** Catalog namespace of the mirrored entities (default "default"). */
      namespace?: string;
      /** Owner of model Resources (default group:default/genai-platform). */
      modelOwner?: string;
      /** Lifecycle given to deployment Components and their APIs (default "production"). */
      lifecycle?: string;
      /** How often to mirror (default every 60 s, timeout 50 s). */
      schedule?: SchedulerServiceTaskScheduleDefinitionConfig;
    };
  };
}
