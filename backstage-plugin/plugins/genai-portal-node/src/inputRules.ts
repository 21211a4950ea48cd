/**
 * The portal's input rules (patterns, lengths, ranges) of the fields the plugin sends, read from its OpenAPI document
 * (generated/inputRules.ts): the plugin refuses what the portal would refuse, from the same source, never a copy.
 */
import { inputRules } from './generated/inputRules';

export { inputRules };

/** The rules of one request field; a rule the document does not state is absent. */
export interface FieldRule {
  minLength?: number;
  maxLength?: number;
  /** A regular expression, as the portal states it (simple patterns that read the same in Python and JavaScript). */
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minItems?: number;
  maxItems?: number;
}

type Rules = typeof inputRules;

/** The rules of `field` in the request body `schema` (e.g. fieldRule('DeploymentCreateInputRequest', 'name')). */
export function fieldRule<S extends keyof Rules, F extends keyof Rules[S]>(schema: S, field: F): FieldRule {
  return inputRules[schema][field] as FieldRule;
}
