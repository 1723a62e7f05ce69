/**
 * `${ENV_NAME}` substitution in every string of the raw config. Each substituted value is
 * remembered as a secret, so the redactor masks it wherever it would appear.
 *
 * Commands that only read (SPEC §12) load the config with `allowUnset`: a variable that is not
 * set then becomes a placeholder instead of an error, and is reported in `unset`, so the
 * command can show it as unset and go on; commands that send or write call `requireEnv`.
 */
import { ConfigError, ConfigErrors } from '../errors.js';

const REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
const WHOLE_REF = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/;

/** A `${NAME}` reference whose variable is not set (only with `allowUnset`). */
export interface UnsetVariable {
  name: string;
  /** The field it appears in, e.g. `destinations[0].headers`. */
  path: string;
  /**
   * What the reference was replaced with: the reference itself (`${NAME}`), or, where a field
   * must have a certain shape to be validated, a value of that shape naming the variable.
   * Never a secret.
   */
  placeholder: string;
}

export interface Substituted {
  value: unknown;
  /** Every value that came from the environment. */
  secrets: string[];
  /** References to variables that are not set (empty unless `allowUnset`). */
  unset: UnsetVariable[];
}

export interface SubstituteOptions {
  /** A variable that is not set becomes a placeholder (see `UnsetVariable`) instead of an error. @default false */
  allowUnset?: boolean;
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

/**
 * The placeholder of an unset variable: `${NAME}` as written, except where the whole field
 * is the reference and the field must be a URL or a Standard Webhooks secret to validate.
 */
function placeholderFor(name: string, path: PropertyKey[], whole: boolean): string {
  const key = [...path].reverse().find((p) => typeof p === 'string');
  if (whole && (key === 'endpoint' || key === 'accessTokenUrl')) return `https://unset.invalid/${name}`;
  if (whole && (key === 'secret' || key === 'secrets') && path.includes('signing')) {
    return `whsec_${Buffer.from(`unset ${name}`).toString('base64')}`;
  }
  return `\${${name}}`;
}

/** Replaces `${NAME}` in all strings of `value`; variables that are not set are reported together. */
export function substituteEnv(value: unknown, env: NodeJS.ProcessEnv = process.env, options: SubstituteOptions = {}): Substituted {
  const secrets: string[] = [];
  const missing: ConfigError[] = [];
  const unset: UnsetVariable[] = [];
  const walk = (v: unknown, path: PropertyKey[]): unknown => {
    if (typeof v === 'string') {
      const whole = WHOLE_REF.test(v);
      return v.replace(REF, (_m, name: string) => {
        const found = env[name];
        if (found === undefined) {
          if (options.allowUnset) {
            const placeholder = placeholderFor(name, path, whole);
            unset.push({ name, path: formatPath(path), placeholder });
            return placeholder;
          }
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
  return { value: out, secrets, unset };
}

/**
 * Throws the ConfigError(s) of the unset variables under the given field paths (all of them
 * when `under` is not given): what a command that needs them reports before doing anything.
 *
 * @example requireEnv(config.unsetEnv, ['source', 'store']) // publish needs the source's servers
 */
export function requireEnv(unset: readonly UnsetVariable[] | undefined, under?: readonly string[]): void {
  const needed = (unset ?? []).filter(
    (u) => under === undefined || under.some((p) => u.path === p || u.path.startsWith(`${p}.`) || u.path.startsWith(`${p}[`)),
  );
  const errors = needed.map((u) => new ConfigError(u.path, `environment variable ${u.name} is not set`));
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new ConfigErrors(errors);
}
