/**
 * Secret redaction. Every secret value known to the process — the config's (tokens, client
 * secrets, passwords, passphrases, signing secrets, sensitive header values, anything from
 * `${ENV}`) and those obtained at run time (OAuth2 access and refresh tokens) — is masked
 * wherever it would appear in a string, in any of the forms an endpoint may echo it in:
 *
 * - raw, and percent-encoded in any way (`encodeURIComponent`, RFC 3986 query re-encoding
 *   with `!'()*` encoded, `application/x-www-form-urlencoded` with `+` for a space, lower- or
 *   upper-case hex, double-encoded `%25xx`), JSON-string-escaped (`\"`, `\/`, `\u00e9`) and
 *   HTML-escaped (`&#39;`, `&amp;`), every character independently (a mix of forms matches);
 * - base64 and base64url, of the secret alone and inside a larger blob (the 3 alignments),
 *   of its raw and of its URL/form-encoded forms.
 *
 * Keys that name credentials are masked whatever their value. Where a text is cut (an
 * excerpt of an endpoint's answer), a secret's fragment left at the cut is masked too
 * (`tail`, `cut`): masking happens before cutting, never after.
 *
 * Secrets live in a {@link SecretRegistry}; by default the process-wide one, so every output
 * path (logger, sink failure reasons, transport excerpts, failed-request stores) masks a
 * token the moment an auth provider obtains it.
 */

import { lowered, REDACT_DEFAULTS, SecretMatcher } from './secret-matcher.js';

export { REDACT_DEFAULTS } from './secret-matcher.js';

export const MASK = '[REDACTED]';

/** Object keys whose values are always masked. */
const SECRET_KEY = /^(authorization|proxy-authorization|cookie|token|access_token|refresh_token|clientsecret|client_secret|password|passphrase|secret|secrets|x-api-key|api-key|apikey)$/i;

/**
 * A set of secret values that only grows. Redactors built on it refresh their list of matchers
 * when it changes, so a value added at run time (an OAuth2 token) is masked from then on by
 * every redactor of the registry.
 *
 * @example processSecrets.add(accessToken, `Bearer ${accessToken}`)
 */
export class SecretRegistry {
  private readonly set = new Set<string>();
  private changes = 0;

  /** Grows on every new value (redactors compare it to know when to recompile). */
  get version(): number {
    return this.changes;
  }

  /** Adds values; `undefined`, empty and too short ones are ignored. */
  add(...values: ReadonlyArray<string | undefined>): this {
    for (const v of values) {
      if (v === undefined || v.length < REDACT_DEFAULTS.minSecretLength || this.set.has(v)) continue;
      this.set.add(v);
      this.changes += 1;
    }
    return this;
  }

  has(value: string): boolean {
    return this.set.has(value);
  }

  values(): string[] {
    return [...this.set];
  }
}

/**
 * The secrets of this process: every redactor adds the secrets it is given, auth providers
 * add the tokens they obtain. Masking a value never known to be secret is not possible;
 * masking one the process learnt from another destination costs nothing.
 */
export const processSecrets = new SecretRegistry();

export interface Redactor {
  /** Masks every known secret, in every form, inside `text`. */
  text(text: string): string;
  /** A deep copy of `value` with secrets masked in strings and credential keys masked. */
  value<T>(value: T): T;
  /**
   * `text` ends at a cut (or at the end of what an endpoint sent): masks a fragment of at
   * least `minFragment` characters of a secret (in any form) that the cut left at its end.
   * Call after `text()`.
   */
  tail(text: string): string;
  /**
   * Masks, then cuts to at most `max` characters (never inside a mask) and masks a secret's
   * fragment at the cut; appends `…` when something was cut off.
   */
  cut(text: string, max: number): string;
}

export interface RedactorOptions {
  /** Where the secrets are kept (the given ones are added to it). @default processSecrets */
  registry?: SecretRegistry;
}

/** Matchers are built once per secret value and shared by every redactor. */
const matchers = new Map<string, SecretMatcher>();

function matcherOf(secret: string): SecretMatcher {
  let m = matchers.get(secret);
  if (!m) {
    m = new SecretMatcher(secret);
    matchers.set(secret, m);
  }
  return m;
}

interface Compiled {
  list: SecretMatcher[];
  window: number;
}

function compile(secrets: string[]): Compiled {
  const list = secrets.filter((s) => s.length >= REDACT_DEFAULTS.minSecretLength).map(matcherOf);
  return { list, window: Math.max(0, ...list.map((m) => m.window)) };
}

/** `text` with every span replaced by one mask (overlapping and adjacent spans merge). */
function maskSpans(text: string, spans: Array<[number, number]>): string {
  if (spans.length === 0) return text;
  spans.sort((x, y) => x[0] - y[0] || y[1] - x[1]);
  let out = '';
  let at = 0;
  let i = 0;
  while (i < spans.length) {
    let [start, end] = spans[i]!;
    i += 1;
    while (i < spans.length && spans[i]![0] <= end) end = Math.max(end, spans[i++]![1]);
    out += text.slice(at, start) + MASK;
    at = end;
  }
  return out + text.slice(at);
}

/**
 * Builds a redactor over `secrets` and every other secret of its registry (by default the
 * process's: the given secrets are added to it). Values shorter than 4 characters are ignored;
 * longer ones are masked, longest first, in every form listed in the module comment.
 *
 * @example createRedactor(config.secrets).text(`failed: ${err.message}`)
 * @param options.registry @default processSecrets
 */
export function createRedactor(secrets: readonly string[] = [], options: RedactorOptions = {}): Redactor {
  const registry = options.registry ?? processSecrets;
  registry.add(...secrets);
  let compiled: Compiled | undefined;
  let compiledAt = -1;
  const current = (): Compiled => {
    if (!compiled || compiledAt !== registry.version) {
      compiled = compile(registry.values());
      compiledAt = registry.version;
    }
    return compiled;
  };

  const text = (t: string): string => {
    if (t.length < REDACT_DEFAULTS.minSecretLength) return t;
    const spans: Array<[number, number]> = [];
    const lower = lowered(t);
    for (const m of current().list) m.find(t, lower, spans);
    return maskSpans(t, spans);
  };

  const tail = (t: string): string => {
    const { list, window } = current();
    // An ellipsis the endpoint put after its own cut: the fragment ends before it.
    const dots = /(?:…|\.{3})$/.exec(t)?.[0] ?? '';
    const body = t.slice(0, t.length - dots.length);
    const from = Math.max(0, body.length - window);
    let start = -1;
    for (const m of list) {
      const p = m.tail(body, from);
      if (p >= 0 && (start < 0 || p < start)) start = p;
    }
    return start < 0 ? t : `${body.slice(0, start)}${MASK}${dots}`;
  };

  const cut = (t: string, max: number): string => {
    const masked = text(t);
    if (masked.length <= max) return masked;
    let end = max;
    // never leave half a mask: keep it whole or drop it
    const maskAt = masked.lastIndexOf(MASK, end);
    if (maskAt >= 0 && maskAt < end && maskAt + MASK.length > end) end = maskAt;
    return `${tail(masked.slice(0, end))}…`;
  };

  const value = <T>(v: T): T => {
    const walk = (x: unknown, depth: number): unknown => {
      if (typeof x === 'string') return text(x);
      if (depth > 20 || x === null || typeof x !== 'object') return x;
      if (x instanceof Error) {
        const out: Record<string, unknown> = { type: x.name, message: text(x.message) };
        const code = (x as { code?: unknown }).code;
        if (code !== undefined) out.code = code;
        return out;
      }
      if (Array.isArray(x)) return x.map((i) => walk(i, depth + 1));
      if (Buffer.isBuffer(x)) return MASK;
      const out: Record<string, unknown> = {};
      for (const [k, val] of Object.entries(x)) {
        out[k] = SECRET_KEY.test(k) && val !== undefined && val !== null ? MASK : walk(val, depth + 1);
      }
      return out;
    };
    return walk(v, 0) as T;
  };
  return { text, value, tail, cut };
}

/** A redactor over the process's secrets alone (transport excerpts, stores). */
export const processRedactor: Redactor = createRedactor([]);
