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

export const MASK = '[REDACTED]';

/** Every tuning default of the redactor, named in one place. */
export const REDACT_DEFAULTS = {
  /** Values shorter than this are not secrets worth masking (they would shred ordinary text). */
  minSecretLength: 4,
  /** A secret's fragment of at least this many characters left at a cut is masked. */
  minFragment: 4,
  /** Longer secrets (PEM keys) are matched in their whole-string forms only, not character by character. */
  maxCharPatternLength: 1024,
  /** Base64 of a secret inside a larger blob: a shifted form shorter than this is not matched. */
  minShiftedBase64: 8,
} as const;

/** Object keys whose values are always masked. */
const SECRET_KEY = /^(authorization|proxy-authorization|cookie|token|access_token|refresh_token|clientsecret|client_secret|password|passphrase|secret|secrets|x-api-key|api-key|apikey)$/i;

/**
 * A set of secret values that only grows. Redactors built on it recompile their patterns
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

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A hex digit pattern matching either case. */
function hexDigit(d: string): string {
  return /[a-f]/i.test(d) ? `[${d.toLowerCase()}${d.toUpperCase()}]` : d;
}

function hexPattern(n: number, width: number): string {
  return [...n.toString(16).padStart(width, '0')].map(hexDigit).join('');
}

const JSON_SHORT: Record<string, string> = { '"': '\\"', '\\': '\\\\', '/': '\\/', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t' };
const HTML_NAMED: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };

/**
 * The patterns of one character of a secret in each form it can take in a text: raw,
 * percent-encoded (each UTF-8 byte `%xx`/`%XX`, or double-encoded `%25xx`), `+` for a space,
 * JSON-escaped (`\uXXXX` per UTF-16 unit, or `\"` `\\` `\/` `\n`…) or an HTML character
 * reference.
 */
function charAlternatives(ch: string): string[] {
  const alts = [escapeRegExp(ch)];
  alts.push([...Buffer.from(ch, 'utf8')].map((b) => `%(?:25)?${hexPattern(b, 2)}`).join(''));
  if (ch === ' ') alts.push('\\+');
  const units: string[] = [];
  for (let i = 0; i < ch.length; i++) units.push(`\\\\u${hexPattern(ch.charCodeAt(i), 4)}`);
  alts.push(units.join(''));
  const short = JSON_SHORT[ch];
  if (short) alts.push(escapeRegExp(short));
  const cp = ch.codePointAt(0)!;
  alts.push(`&#0*${cp};`, `&#[xX]0*${hexPattern(cp, 1)};`);
  const named = HTML_NAMED[ch];
  if (named) alts.push(named);
  if (ch === "'") alts.push('&#0*39;');
  return alts;
}

/** The same forms as `charAlternatives`, as plain lower-case strings (to recognise one cut in the middle). */
function charEncodings(ch: string): string[] {
  const bytes = [...Buffer.from(ch, 'utf8')].map((b) => b.toString(16).padStart(2, '0'));
  const cp = ch.codePointAt(0)!;
  const out = [
    bytes.map((b) => `%${b}`).join(''),
    bytes.map((b) => `%25${b}`).join(''),
    Array.from({ length: ch.length }, (_, i) => `\\u${ch.charCodeAt(i).toString(16).padStart(4, '0')}`).join(''),
    `&#${cp};`,
    `&#x${cp.toString(16)};`,
  ];
  const short = JSON_SHORT[ch];
  if (short) out.push(short);
  const named = HTML_NAMED[ch];
  if (named) out.push(named);
  return out;
}

/** RFC 3986 re-encoding: `encodeURIComponent` plus `!'()*`. */
function rfc3986(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** `application/x-www-form-urlencoded` as URLSearchParams writes it (space as `+`, `*` kept). */
function formEncoded(s: string): string {
  return new URLSearchParams({ s }).toString().slice(2);
}

/**
 * The base64 (and base64url) forms of `bytes`: the whole value encoded alone (padded and
 * not), and, for a value inside a larger blob, the characters that depend on its bytes only,
 * at each of the 3 alignments it can start at.
 */
function base64Forms(bytes: Buffer, out: Set<string>): void {
  const whole = bytes.toString('base64');
  out.add(whole);
  out.add(bytes.toString('base64url'));
  for (let shift = 0; shift < 3; shift++) {
    const enc = Buffer.concat([Buffer.alloc(shift), bytes, Buffer.alloc(2)]).toString('base64');
    const first = Math.ceil((8 * shift) / 6);
    const end = Math.floor((8 * (shift + bytes.length)) / 6);
    const part = enc.slice(first, end);
    if (part.length < REDACT_DEFAULTS.minShiftedBase64) continue;
    out.add(part);
    out.add(part.replace(/\+/g, '-').replace(/\//g, '_'));
  }
}

/** What is matched of one secret. */
interface SecretForms {
  /** The patterns of each character (any encoding, mixed), or undefined for a very long secret. */
  chars?: string[][];
  /** The encodings of each character as plain lower-case strings (with `chars`). */
  encodings?: string[][];
  /** Whole-string forms: base64 variants, and for a very long secret its encoded forms. */
  literals: string[];
}

function formsOf(secret: string): SecretForms {
  const literals = new Set<string>();
  const encodings = new Set([secret, encodeURIComponent(secret), rfc3986(secret), formEncoded(secret)]);
  for (const e of encodings) base64Forms(Buffer.from(e, 'utf8'), literals);
  let chars: string[][] | undefined;
  let charEncs: string[][] | undefined;
  if (secret.length <= REDACT_DEFAULTS.maxCharPatternLength) {
    chars = Array.from(secret, charAlternatives);
    charEncs = Array.from(secret, charEncodings);
  } else {
    for (const e of encodings) literals.add(e);
    literals.add(JSON.stringify(secret).slice(1, -1));
  }
  for (const l of [...literals]) if (l.length < REDACT_DEFAULTS.minSecretLength) literals.delete(l);
  return { chars, encodings: charEncs, literals: [...literals].sort((a, b) => b.length - a.length) };
}

/** Matches fragments of one secret that end a text. */
class TailMatcher {
  private units?: RegExp[][];
  constructor(private readonly forms: SecretForms) {}

  /**
   * The start of a fragment of ≥ `minFragment` characters of the secret (any encoding) that
   * runs to the end of `text`, searched no earlier than `from`; -1 when there is none.
   */
  find(text: string, from: number): number {
    const min = REDACT_DEFAULTS.minFragment;
    if (this.forms.chars) {
      this.units ??= this.forms.chars.map((alts) => alts.map((a) => new RegExp(a, 'y')));
      for (let p = from; p < text.length; p++) {
        if (this.runsToEnd(text, p, 0) >= min) return p;
      }
    }
    for (const lit of this.forms.literals) {
      const head = lit.slice(0, min);
      for (let p = text.indexOf(head, Math.max(from, text.length - lit.length)); p >= 0; p = text.indexOf(head, p + 1)) {
        if (lit.startsWith(text.slice(p))) return p;
      }
    }
    return -1;
  }

  /**
   * How many characters of the secret, from its `i`-th on, match from `pos` to the end of
   * `text`, trying every form of each character (`%` raw or `%25`, `\\` or `\\+`…);
   * `i` when they reach the end, 0 when they do not.
   */
  private runsToEnd(text: string, pos: number, i: number): number {
    if (pos === text.length) return i;
    const units = this.units!;
    if (i === units.length) return 0; // the whole secret (masked already, or followed by more text)
    // a cut inside the encoding of the next character (`%2`, `%C3` of `%C3%A9`, `\\u00`) counts it
    const rest = text.length - pos <= 24 ? text.slice(pos).toLowerCase() : undefined;
    let best = rest !== undefined && this.forms.encodings![i]!.some((e) => e.startsWith(rest)) ? i + 1 : 0;
    for (const u of units[i]!) {
      u.lastIndex = pos;
      if (!u.test(text)) continue;
      const n = this.runsToEnd(text, u.lastIndex, i + 1);
      if (n > best) best = n;
      if (best > 0) break;
    }
    return best;
  }
}

interface Compiled {
  pattern?: RegExp;
  tails: TailMatcher[];
  /** Longest stretch of text a fragment can span. */
  window: number;
}

function compile(secrets: string[]): Compiled {
  const list = secrets.filter((s) => s.length >= REDACT_DEFAULTS.minSecretLength).sort((a, b) => b.length - a.length);
  const alts: string[] = [];
  const tails: TailMatcher[] = [];
  let window = 0;
  for (const s of list) {
    const forms = formsOf(s);
    if (forms.chars) alts.push(forms.chars.map((a) => `(?:${a.join('|')})`).join(''));
    for (const l of forms.literals) alts.push(escapeRegExp(l));
    tails.push(new TailMatcher(forms));
    // the longest encoding of one character: `%25xx` × 4 bytes, or `\uXXXX` × 2
    window = Math.max(window, s.length * 20, ...forms.literals.map((l) => l.length));
  }
  return { pattern: alts.length > 0 ? new RegExp(alts.join('|'), 'g') : undefined, tails, window };
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
    const { pattern } = current();
    return pattern && t.length >= REDACT_DEFAULTS.minSecretLength ? t.replace(pattern, MASK) : t;
  };

  const tail = (t: string): string => {
    const { tails, window } = current();
    // An ellipsis the endpoint put after its own cut: the fragment ends before it.
    const dots = /(?:…|\.{3})$/.exec(t)?.[0] ?? '';
    const body = t.slice(0, t.length - dots.length);
    const from = Math.max(0, body.length - window);
    let start = -1;
    for (const m of tails) {
      const p = m.find(body, from);
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
