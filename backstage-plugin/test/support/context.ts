/** A hand-rolled scaffolder action context: records logs and outputs, memoizes checkpoints like the runner. */
import type { JsonValue } from '@backstage/types';

export interface LogLine {
  level: string;
  message: string;
}

export interface TestContext<TInput> {
  input: TInput;
  logger: any;
  logs: LogLine[];
  outputs: Record<string, unknown>;
  output(name: string, value: unknown): void;
  checkpoint<T extends JsonValue | void>(opts: { key: string; fn: () => Promise<T> | T }): Promise<T>;
  checkpoints: Map<string, JsonValue | void>;
  checkpointCalls: string[];
  task: { id: string };
  step: { id: string };
  user?: { ref?: string };
  secrets?: Record<string, string>;
  isDryRun?: boolean;
  signal?: AbortSignal;
  workspacePath: string;
  createTemporaryDirectory(): Promise<string>;
  getInitiatorCredentials(): Promise<any>;
}

export function makeContext<TInput>(
  input: TInput,
  options: {
    user?: string | null;
    taskId?: string;
    checkpoints?: Map<string, JsonValue | void>;
    isDryRun?: boolean;
    signal?: AbortSignal;
    secrets?: Record<string, string>;
    /**
     * Whom getInitiatorCredentials names: a user ref (default: the task's user, as for its creator; another
     * user, as after a retry by someone else), or a principal object as it is (e.g. a service).
     */
    initiator?: string | Record<string, unknown>;
    /** The initiator's own token, as scaffolder-backend keeps it in `__initiatorCredentials` (a user token). */
    initiatorToken?: string;
  } = {},
): TestContext<TInput> {
  const logs: LogLine[] = [];
  const outputs: Record<string, unknown> = {};
  const checkpoints = options.checkpoints ?? new Map<string, JsonValue | void>();
  const checkpointCalls: string[] = [];
  const log = (level: string) => (message: string) => logs.push({ level, message });
  const logger: any = {
    info: log('info'),
    warn: log('warn'),
    error: log('error'),
    debug: log('debug'),
    child: () => logger,
  };
  return {
    input,
    logger,
    logs,
    outputs,
    output(name: string, value: unknown) {
      outputs[name] = value;
    },
    async checkpoint<T extends JsonValue | void>({ key, fn }: { key: string; fn: () => Promise<T> | T }): Promise<T> {
      if (checkpoints.has(key)) {
        return checkpoints.get(key) as T;
      }
      checkpointCalls.push(key);
      const value = await fn(); // a failure is not stored: a retry runs fn again, as in the runner
      checkpoints.set(key, value);
      return value;
    },
    checkpoints,
    checkpointCalls,
    task: { id: options.taskId ?? 'task-1' },
    step: { id: 'step-1' },
    user: options.user === null ? undefined : { ref: options.user ?? 'user:default/jane' },
    secrets: options.secrets,
    isDryRun: options.isDryRun,
    signal: options.signal,
    workspacePath: '/tmp',
    createTemporaryDirectory: async () => '/tmp',
    getInitiatorCredentials: async () => {
      const initiator = options.initiator ?? (options.user === null ? undefined : options.user ?? 'user:default/jane');
      const principal =
        initiator === undefined ? { type: 'none' } : typeof initiator === 'string' ? { type: 'user', userEntityRef: initiator } : initiator;
      return { $$type: '@backstage/BackstageCredentials', principal, ...(options.initiatorToken ? { token: options.initiatorToken } : {}) };
    },
  };
}
