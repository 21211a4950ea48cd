/**
 * The packages' `engines` tell the truth: every package their production dependencies pull in (resolved as the
 * committed package-lock.json resolves them) accepts the oldest Node the packages declare.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
// semver (npm's own range semantics) ships no types; only these two functions are used.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const semver: { satisfies(version: string, range: string): boolean; minVersion(range: string): { version: string } | null } = require('semver');

const WORKSPACE = resolve(__dirname, '..');
const lock = JSON.parse(readFileSync(join(WORKSPACE, 'package-lock.json'), 'utf8')) as {
  packages: Record<string, { version?: string; engines?: { node?: string } | string[]; dependencies?: Record<string, string>; optionalDependencies?: Record<string, string>; link?: boolean; resolved?: string }>;
};

/** Where npm resolves `name` from the package at `from` (node_modules lookup upwards, as Node does). */
function locate(name: string, from: string): string | undefined {
  if (from.startsWith('plugins/') && lock.packages[`${from}/node_modules/${name}`]) return `${from}/node_modules/${name}`;
  let base = from.startsWith('plugins/') ? '' : from;
  for (;;) {
    const candidate = `${base ? `${base}/` : ''}node_modules/${name}`;
    if (lock.packages[candidate]) return candidate;
    if (!base) return undefined;
    const index = base.lastIndexOf('/node_modules/');
    base = index >= 0 ? base.slice(0, index) : '';
  }
}

describe('engines', () => {
  it('every production dependency of the three packages accepts the Node they declare', () => {
    const packages = ['plugins/genai-portal-node', 'plugins/scaffolder-backend-module-genai-portal', 'plugins/catalog-backend-module-genai-portal'];
    const declared = new Set(packages.map(path => JSON.parse(readFileSync(join(WORKSPACE, path, 'package.json'), 'utf8')).engines.node));
    assert.deepEqual([...declared], ['>=20.3']);
    const oldest = semver.minVersion('>=20.3')!.version;
    const seen = new Set<string>();
    const refusing: string[] = [];
    const queue = [...packages];
    while (queue.length) {
      const path = queue.shift()!;
      if (seen.has(path)) continue;
      seen.add(path);
      const entry = lock.packages[path];
      assert.ok(entry, `${path} is in the lock`);
      const engines = entry.engines;
      const node = engines && !Array.isArray(engines) ? engines.node : undefined;
      if (node && !semver.satisfies(oldest, node)) refusing.push(`${path}@${entry.version} (node ${node})`);
      for (const name of Object.keys({ ...(entry.dependencies ?? {}), ...(entry.optionalDependencies ?? {}) })) {
        const found = locate(name, path);
        if (found) queue.push(lock.packages[found].link && lock.packages[found].resolved ? lock.packages[found].resolved! : found);
      }
    }
    assert.ok(seen.size > 50, `walked ${seen.size} packages`);
    assert.deepEqual(refusing, []);
  });
});
