/** Spawns the real Backstage backend of test/e2e/backend.ts with a generated app-config. */
import { ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { TEMPLATE_DIR, TEMPLATE_FILES } from '../support/templates';

export interface RealBackstage {
  url: string;
  externalToken: string;
  output: string[];
  stop(): Promise<void>;
}

export async function startRealBackstage(options: {
  port: number;
  portalUrl: string;
  serviceToken: string;
  catalogToken: string;
  userEntityRef: string;
  forwardUserToken: boolean;
}): Promise<RealBackstage> {
  const dir = mkdtempSync(join(tmpdir(), 'backstage-e2e-'));
  const externalToken = `portal-reads-catalog-${options.port}`;
  const config = {
    app: { baseUrl: 'http://localhost:3000' },
    backend: {
      baseUrl: `http://localhost:${options.port}`,
      listen: { port: options.port, host: '127.0.0.1' },
      database: { client: 'better-sqlite3', connection: ':memory:' },
      auth: { externalAccess: [{ type: 'static', options: { token: externalToken, subject: 'genai-portal' } }] },
    },
    auth: {
      environment: 'development',
      providers: { guest: { dangerouslyAllowOutsideDevelopment: true, userEntityRef: options.userEntityRef } },
    },
    catalog: {
      rules: [{ allow: ['Component', 'API', 'Resource', 'Group', 'User', 'Template', 'Location', 'System', 'Domain'] }],
      locations: [
        ...TEMPLATE_FILES.map(file => ({ type: 'file', target: join(TEMPLATE_DIR, file) })),
        { type: 'file', target: resolve(__dirname, 'org.yaml') },
        { type: 'file', target: resolve(__dirname, 'delete-deployment.yaml') },
      ],
    },
    genaiPortal: {
      baseUrl: options.portalUrl,
      token: options.serviceToken,
      forwardUserToken: options.forwardUserToken,
      catalog: { token: options.catalogToken, schedule: { frequency: { seconds: 2 }, timeout: { seconds: 30 } } },
    },
  };
  const configFile = join(dir, 'app-config.e2e.yaml');
  writeFileSync(configFile, stringify(config));
  const output: string[] = [];
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', resolve(__dirname, 'backend.ts'), '--config', configFile], {
    cwd: resolve(__dirname, '..', '..'),
    env: { ...process.env, NODE_ENV: 'development' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const collect = (chunk: Buffer) => output.push(...chunk.toString().split('\n').filter(Boolean));
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const exited = new Promise<void>(resolveExit => child.on('exit', () => resolveExit()));
  const url = `http://127.0.0.1:${options.port}`;
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`the Backstage backend exited:\n${output.slice(-40).join('\n')}`);
    }
    try {
      const response = await fetch(`${url}/.backstage/health/v1/readiness`);
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`the Backstage backend was not ready within 120 s:\n${output.slice(-40).join('\n')}`);
    }
    await new Promise(r => setTimeout(r, 300));
  }
  return { url, externalToken, output, stop };
}
