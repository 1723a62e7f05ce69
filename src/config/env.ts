/**
 * `${ENV_NAME}` substitution in every string of the raw config. Each substituted value is
 * remembered as a secret, so the redactor masks it wherever it would appear.
 */
import { ConfigError, ConfigErrors } from '../errors.js';

const REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

export interface Substituted {
  value: unknown;
  /** Every value that came from the environment. */
  secrets: string[];
}

/** Formats a path array as `destinations[0].auth.token`. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out;
}

/** Replaces `${NAME}` in all strings of `value`; variables that are not set are reported together. */
export function substituteEnv(value: unknown, env: NodeJS.ProcessEnv = process.env): Substituted {
  const secrets: string[] = [];
  const missing: ConfigError[] = [];
  const walk = (v: unknown, path: PropertyKey[]): unknown => {
    if (typeof v === 'string') {
      return v.replace(REF, (_m, name: string) => {
        const found = env[name];
        if (found === undefined) {
          missing.push(new ConfigError(formatPath(path), `environment variable ${name} is not set`));
          return '';
        }
        if (found !== '') secrets.push(found);
        return found;
      });
    }
    if (Array.isArray(v)) return v.map((x, i) => walk(x, [...path, i]));
    if (v !== null && typeof v === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[k] = walk(x, [...path, k]);
      return out;
    }
    return v;
  };
  const out = walk(value, []);
  if (missing.length === 1) throw missing[0];
  if (missing.length > 1) throw new ConfigErrors(missing);
  return { value: out, secrets };
}
