/** Loading the software templates from templates/*.yaml as catalog entities. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import type { Entity } from '@backstage/catalog-model';

export const TEMPLATE_DIR = join(__dirname, '..', '..', 'templates');
export const TEMPLATE_FILES = ['onboard-team.yaml', 'deploy-model.yaml', 'request-api-key.yaml', 'request-gpu-quota.yaml'];

export function loadTemplate(file: string): Entity {
  const entity = parse(readFileSync(join(TEMPLATE_DIR, file), 'utf8')) as Entity;
  return { ...entity, metadata: { namespace: 'default', ...entity.metadata } };
}

export function templateRef(entity: Entity): string {
  return `template:default/${entity.metadata.name}`;
}
