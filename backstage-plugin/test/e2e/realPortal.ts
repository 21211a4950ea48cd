/**
 * Starts the real Django portal for an end-to-end test: `manage.py demo` (web, worker, beat, the
 * sandbox cluster registered as "sandbox") on a free port, with its own database, then issues the
 * Backstage service tokens with `manage.py issue_token`.
 *
 * Database: PORTAL_E2E_DATABASE_URL if set; else the server of DATABASE_URL with the database
 * `<name>_backstage_e2e` (dropped and created here); else the embedded PostgreSQL under a fresh var dir.
 * Redis: PORTAL_E2E_REDIS_URL if set; else REDIS_URL with database 15 (so its Celery queue is not
 * shared with another portal: pytest's tests/e2e, which `make test` runs at the same time, uses 14);
 * else the embedded Redis.
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const REPO_ROOT = resolve(__dirname, '..', '..', '..');
export const PYTHON = join(REPO_ROOT, '.venv', 'bin', 'python');

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

/** Why the real portal cannot be started here, or undefined when it can. */
export function missingPrerequisite(): string | undefined {
  if (!existsSync(PYTHON)) {
    return `no Python environment at ${PYTHON} (run "make install" in the repository first)`;
  }
  if (!existsSync(join(REPO_ROOT, 'manage.py'))) {
    return `no manage.py in ${REPO_ROOT}`;
  }
  return undefined;
}

function e2eDatabaseUrl(): string | undefined {
  if (process.env.PORTAL_E2E_DATABASE_URL) return process.env.PORTAL_E2E_DATABASE_URL;
  const base = process.env.DATABASE_URL;
  if (!base) return undefined;
  const url = new URL(base);
  url.pathname = `/${(url.pathname.replace(/^\//, '') || 'portal')}_backstage_e2e`;
  return url.toString();
}

function e2eRedisUrl(): string | undefined {
  if (process.env.PORTAL_E2E_REDIS_URL) return process.env.PORTAL_E2E_REDIS_URL;
  const base = process.env.REDIS_URL;
  if (!base || !base.startsWith('redis')) return base;
  const url = new URL(base);
  url.pathname = '/15';
  return url.toString();
}

export interface RealPortal {
  url: string;
  /** The sandbox gateway (OpenAI-compatible, under /v1) that the demo printed: team keys work there. */
  gatewayUrl: string;
  /** Service token with the `backstage` scope (acts for users). */
  serviceToken: string;
  /** Service token with the `admin` scope (the catalog provider's reader). */
  catalogToken: string;
  adminToken: string;
  environment: NodeJS.ProcessEnv;
  output: string[];
  manage(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

export async function startRealPortal(extraEnvironment: Record<string, string> = {}): Promise<RealPortal> {
  const port = await freePort();
  const varDir = join(REPO_ROOT, 'var', `backstage-e2e-${randomBytes(4).toString('hex')}`);
  const environment: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ['DATABASE_URL', 'REDIS_URL', 'CELERY_BROKER_URL', 'DJANGO_SETTINGS_MODULE']) delete environment[name];
  const databaseUrl = e2eDatabaseUrl();
  const redisUrl = e2eRedisUrl();
  if (databaseUrl) environment.DATABASE_URL = databaseUrl;
  if (redisUrl) environment.REDIS_URL = redisUrl;
  Object.assign(environment, {
    PORTAL_VAR_DIR: varDir,
    PORTAL_PORT: String(port),
    PORTAL_CACHE_PREFIX: `backstage-e2e-${port}`,
    PYTHONUNBUFFERED: '1',
    ...extraEnvironment,
  });
  const manage = async (...args: string[]) => {
    const { stdout } = await run(PYTHON, ['manage.py', ...args], { cwd: REPO_ROOT, env: environment, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  };
  if (databaseUrl) {
    // A clean database for every run: the demo seeds it, the test's team names never collide.
    const name = new URL(databaseUrl).pathname.replace(/^\//, '');
    const admin = new URL(databaseUrl);
    admin.pathname = '/postgres';
    await run(
      PYTHON,
      [
        '-c',
        'import sys, psycopg\n' +
          'with psycopg.connect(sys.argv[1], autocommit=True) as c:\n' +
          '    c.execute(f\'DROP DATABASE IF EXISTS "{sys.argv[2]}" WITH (FORCE)\')\n' +
          '    c.execute(f\'CREATE DATABASE "{sys.argv[2]}"\')\n',
        admin.toString(),
        name,
      ],
      { cwd: REPO_ROOT, env: environment },
    );
  }
  const output: string[] = [];
  const demo: ChildProcess = spawn(PYTHON, ['manage.py', 'demo'], { cwd: REPO_ROOT, env: environment, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>(resolveExit => demo.on('exit', code => resolveExit(code)));
  const ready = new Promise<void>((resolveReady, reject) => {
    let buffer = '';
    const onData = (chunk: Buffer) => {
      buffer += chunk.toString();
      const lines = buffer.split('\n');
      buffer = lines.pop() ?? '';
      for (const line of lines) {
        output.push(line);
        if (line.includes('Press Ctrl-C')) resolveReady();
      }
    };
    demo.stdout!.on('data', onData);
    demo.stderr!.on('data', onData);
    exited.then(code => reject(new Error(`manage.py demo exited (${code}) before serving:\n${output.slice(-60).join('\n')}`)));
    setTimeout(() => reject(new Error(`manage.py demo did not serve within 300 s:\n${output.slice(-60).join('\n')}`)), 300_000).unref();
  });
  const stop = async () => {
    if (demo.exitCode === null) {
      demo.kill('SIGINT');
      const timer = setTimeout(() => demo.kill('SIGKILL'), 60_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(varDir, { recursive: true, force: true });
  };
  try {
    await ready;
    const serviceToken = (await manage('issue_token', '--service', 'backstage', '--scope', 'backstage', '--name', 'backstage e2e')).trim().split('\n').pop()!;
    // The catalog mirror gets the least it needs (catalog:read); the test's own checks use an admin token.
    const catalogToken = (await manage('issue_token', '--service', 'backstage-catalog', '--scope', 'catalog:read', '--name', 'backstage catalog e2e')).trim().split('\n').pop()!;
    const adminToken = (await manage('issue_token', '--service', 'e2e-checks', '--scope', 'admin', '--name', 'backstage e2e checks')).trim().split('\n').pop()!;
    const gatewayLine = output.find(line => line.includes('Gateway (OpenAI-compatible):')) ?? '';
    const gatewayUrl = (gatewayLine.match(/(http:\/\/\S+)\/v1/) ?? ['', ''])[1];
    if (!gatewayUrl) throw new Error(`the demo printed no gateway address:\n${output.slice(-60).join('\n')}`);
    return { url: `http://127.0.0.1:${port}`, gatewayUrl, serviceToken, catalogToken, adminToken, environment, output, manage, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
