/**
 * The README's *Install* section followed from scratch, as an adopting platform team would: build and pack the three
 * packages (as `npm publish` would ship them), install the two modules named in the README into an empty backend next
 * to Backstage, write its index.js with the README's `backend.add(...)` lines, and start it under plain `node` (no
 * tsx, no TypeScript). Then the actions are registered, the catalog mirror reads the portal, the packages bring no copy
 * of `@backstage/backend-plugin-api` of their own, and Backstage counts the portal tokens among the secrets it redacts.
 *
 * Two deviations from a fresh machine, both about the test environment only: `--ignore-scripts` (better-sqlite3 would
 * compile for minutes; the backend uses PostgreSQL, the server of DATABASE_URL, so it is not loaded) and
 * `--prefer-offline` (npm's cache is warm). Without DATABASE_URL the test is skipped with the reason printed.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { freePort } from './e2e/realPortal';
import { FakePortal } from './support/fakePortal';

const run = promisify(execFile);
const WORKSPACE = resolve(__dirname, '..');
const README = readFileSync(join(WORKSPACE, 'README.md'), 'utf8');
const skip = process.env.DATABASE_URL ? undefined : 'DATABASE_URL is not set (the installed backend stores its state in PostgreSQL)';
if (skip) console.warn(`# SKIP the README install test: ${skip}`);

/** The README's Install section: the packages its `npm install` names and the `backend.add` lines of ours. */
function installSection(): { packages: string[]; addLines: string[] } {
  const section = README.slice(README.indexOf('## Install'), README.indexOf('\n## ', README.indexOf('## Install') + 3));
  const install = section.split('\n').find(line => line.startsWith('npm install @genai-portal/'));
  assert.ok(install, 'the README names the packages to install');
  const packages = install.replace('npm install', '').trim().split(/\s+/);
  const addLines = section.split('\n').filter(line => /^backend\.add\(import\('@genai-portal\//.test(line));
  return { packages, addLines };
}

describe('the README install section, from scratch, in a real backend under plain node', { skip, timeout: 900_000 }, () => {
  let dir: string;
  let portal: FakePortal;
  let backend: ChildProcess | undefined;
  const output: string[] = [];
  let url: string;
  const externalToken = `install-test-${Date.now()}`;
  let databaseName: string;
  let adminDatabaseUrl: URL;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'genai-portal-install-'));
    portal = await new FakePortal({ readyAfterPolls: 1 }).start();
    portal.addTeam('ml', { 'user:default/jane': 'admin' });
  });

  after(async () => {
    if (backend && backend.exitCode === null) {
      backend.kill('SIGTERM');
      await new Promise(resolveExit => backend!.once('exit', resolveExit));
    }
    await portal?.stop();
    if (databaseName && existsSync(join(dir, 'app', 'node_modules', 'pg'))) {
      await run(process.execPath, ['-e', databaseScript(adminDatabaseUrl.toString(), databaseName, false)], { cwd: join(dir, 'app') }).catch(() => undefined);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('builds, packs, installs and starts; the modules work and the secrets are known to Backstage', async () => {
    const { packages, addLines } = installSection();
    assert.deepEqual(packages, ['@genai-portal/plugin-scaffolder-backend-module-genai-portal', '@genai-portal/plugin-catalog-backend-module-genai-portal']);
    assert.equal(addLines.length, 2);

    // npm run build, then what `npm publish --workspaces` would upload.
    await run('npm', ['run', 'build'], { cwd: WORKSPACE, maxBuffer: 16 * 1024 * 1024 });
    const tarballs = join(dir, 'tarballs');
    mkdirSync(tarballs);
    await run('npm', ['pack', '--workspaces', '--pack-destination', tarballs], { cwd: WORKSPACE, maxBuffer: 16 * 1024 * 1024 });
    const packed = readdirSync(tarballs);
    assert.equal(packed.length, 3, packed.join(', '));
    const tarball = (name: string) => join(tarballs, packed.find(file => file.startsWith(name.replace('@', '').replace('/', '-')))!);

    // An empty Backstage app as create-app lays it out (a workspace root, the backend in packages/backend), with
    // Backstage as the README was tested with and the README's two modules in the backend (from the tarballs, standing
    // for the registry; the shared library is their dependency, served from its tarball the same way).
    const root = join(dir, 'app');
    const app = join(root, 'packages', 'backend');
    mkdirSync(app, { recursive: true });
    writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'root', version: '0.0.0', private: true, workspaces: ['packages/*'] }, null, 2));
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({
        name: 'backend',
        version: '0.0.0',
        private: true,
        dependencies: {
          '@backstage/backend-defaults': '0.18.0',
          '@backstage/plugin-catalog-backend': '4.0.0',
          '@backstage/plugin-scaffolder-backend': '4.2.0',
          ...Object.fromEntries(packages.map(name => [name, `file:${tarball(name)}`])),
          '@genai-portal/plugin-genai-portal-node': `file:${tarball('@genai-portal/plugin-genai-portal-node')}`,
        },
      }, null, 2),
    );
    const installStarted = Date.now();
    await run('npm', ['install', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: root, maxBuffer: 64 * 1024 * 1024 });
    const modules = join(root, 'node_modules');
    console.log(`# npm install of the backend: ${((Date.now() - installStarted) / 1000).toFixed(1)} s`);

    // Compiled output only: the installed packages hold JavaScript and declarations, no TypeScript sources.
    for (const name of [...packages, '@genai-portal/plugin-genai-portal-node']) {
      const manifest = JSON.parse(readFileSync(join(modules, name, 'package.json'), 'utf8'));
      assert.equal(manifest.main, 'dist/index.js');
      assert.ok(manifest.backstage?.role, `${name} declares its Backstage role`);
      assert.ok(existsSync(join(modules, name, 'dist', 'index.js')) && existsSync(join(modules, name, 'dist', 'index.d.ts')));
      assert.ok(!existsSync(join(modules, name, 'src')), `${name} ships no sources`);
      // Caret ranges: npm shares the backend's Backstage packages instead of nesting copies under ours.
      assert.ok(!existsSync(join(modules, name, 'node_modules', '@backstage', 'backend-plugin-api')), `${name} brings its own backend-plugin-api`);
    }

    // The backend's own database on the PostgreSQL server of DATABASE_URL (one database, a schema per plugin).
    adminDatabaseUrl = new URL(process.env.DATABASE_URL!);
    databaseName = `${adminDatabaseUrl.pathname.replace(/^\//, '') || 'portal'}_backstage_install`;
    adminDatabaseUrl.pathname = '/postgres';
    await run(process.execPath, ['-e', databaseScript(adminDatabaseUrl.toString(), databaseName, true)], { cwd: app });

    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const database = new URL(process.env.DATABASE_URL!);
    writeFileSync(
      join(app, 'app-config.yaml'),
      stringify({
        backend: {
          baseUrl: `http://localhost:${port}`,
          listen: { port, host: '127.0.0.1' },
          database: {
            client: 'pg',
            pluginDivisionMode: 'schema',
            connection: {
              host: database.hostname,
              port: Number(database.port || 5432),
              user: decodeURIComponent(database.username || 'postgres'),
              ...(database.password ? { password: decodeURIComponent(database.password) } : {}),
              database: databaseName,
            },
          },
          auth: { externalAccess: [{ type: 'static', options: { token: externalToken, subject: 'install-test' } }] },
        },
        genaiPortal: {
          baseUrl: portal.url,
          publicUrl: 'https://genai.example.com',
          token: portal.token,
          catalog: { token: portal.adminToken, schedule: { frequency: { seconds: 2 }, timeout: { seconds: 30 } } },
        },
      }),
    );
    writeFileSync(
      join(app, 'index.js'),
      [
        "const { createBackend } = require('@backstage/backend-defaults');",
        'const backend = createBackend();',
        "backend.add(import('@backstage/plugin-catalog-backend'));",
        "backend.add(import('@backstage/plugin-scaffolder-backend'));",
        ...addLines, // the README's lines, as they are
        'backend.start();',
        '',
      ].join('\n'),
    );
    backend = spawn(process.execPath, ['index.js', '--config', 'app-config.yaml'], { cwd: app, env: { ...process.env, NODE_ENV: 'production' }, stdio: ['ignore', 'pipe', 'pipe'] });
    const collect = (chunk: Buffer) => output.push(...chunk.toString().split('\n').filter(Boolean));
    backend.stdout!.on('data', collect);
    backend.stderr!.on('data', collect);
    const deadline = Date.now() + 180_000;
    for (;;) {
      assert.equal(backend.exitCode, null, `the backend exited:\n${output.slice(-40).join('\n')}`);
      const ready = await fetch(`${url}/.backstage/health/v1/readiness`).then(response => response.ok, () => false);
      if (ready) break;
      assert.ok(Date.now() < deadline, `the backend was not ready within 180 s:\n${output.slice(-40).join('\n')}`);
      await new Promise(r => setTimeout(r, 500));
    }
    const auth = { Authorization: `Bearer ${externalToken}` };

    // The scaffolder module's actions are registered.
    const actions = (await (await fetch(`${url}/api/scaffolder/v2/actions`, { headers: auth })).json()) as Array<{ id: string }>;
    assert.deepEqual(actions.map(action => action.id).filter(id => id.startsWith('genai-portal:')).sort(), [
      'genai-portal:credential:create',
      'genai-portal:deployment:create',
      'genai-portal:deployment:delete',
      'genai-portal:deployment:plan',
      'genai-portal:quota:request',
      'genai-portal:team:onboard',
    ]);
    // The catalog module mirrors the portal, linking to the console on the public URL.
    let model: any;
    for (let i = 0; i < 120 && !model; i++) {
      const response = await fetch(`${url}/api/catalog/entities/by-name/resource/default/qwen2-5-7b-instruct`, { headers: auth });
      model = response.ok ? await response.json() : undefined;
      if (!model) await new Promise(r => setTimeout(r, 500));
    }
    assert.ok(model, `the mirror put no model in the catalog:\n${output.slice(-40).join('\n')}`);
    assert.equal(model.metadata.annotations['backstage.io/view-url'], 'https://genai.example.com/console/models/qwen2-5-7b-instruct/');

    // Config secret redaction: Backstage enumerates the secrets of the schemas it finds through the backend's
    // dependencies (backend-defaults rootConfig createConfigSecretEnumerator); ours are among them.
    const secrets = await run(
      process.execPath,
      [
        '-e',
        "const { loadConfigSchema, loadConfig } = require('@backstage/config-loader');\n" +
          "(async () => {\n" +
          "  const schema = await loadConfigSchema({ dependencies: ['backend'] });\n" +
          "  const { appConfigs } = await loadConfig({ configRoot: process.cwd(), configTargets: [{ path: 'app-config.yaml' }] });\n" +
          "  const [secret] = schema.process(appConfigs, { visibility: ['secret'], ignoreSchemaErrors: true });\n" +
          '  console.log(JSON.stringify(secret.data));\n' +
          '})();',
      ],
      { cwd: app, maxBuffer: 16 * 1024 * 1024 },
    );
    const secretData = JSON.parse(secrets.stdout.trim().split('\n').pop()!);
    console.log(`# secrets Backstage redacts: ${JSON.stringify(Object.keys(secretData))} ${JSON.stringify(Object.keys(secretData.genaiPortal ?? {}))}`);
    assert.equal(secretData.genaiPortal?.token, portal.token);
    assert.equal(secretData.genaiPortal?.catalog?.token, portal.adminToken);
    const log = output.join('\n');
    assert.match(log, /Found [3-9] new secrets in config that will be redacted/, log); // ours two, the external-access token
    assert.match(log, /GenAI portal actions registered for/);
    for (const token of [portal.token, portal.adminToken]) assert.ok(!log.includes(token), 'no portal token in the backend log');
  });
});

/** A node script (run in the installed backend, with its `pg`) that drops the database and, when asked, creates it again. */
function databaseScript(adminUrl: string, name: string, create: boolean): string {
  return (
    "const { Client } = require('pg');\n" +
    `(async () => { const c = new Client({ connectionString: ${JSON.stringify(adminUrl)} }); await c.connect();\n` +
    `  await c.query('DROP DATABASE IF EXISTS "${name}" WITH (FORCE)');\n` +
    (create ? `  await c.query('CREATE DATABASE "${name}"');\n` : '') +
    '  await c.end(); })().catch(error => { console.error(error); process.exit(1); });'
  );
}
