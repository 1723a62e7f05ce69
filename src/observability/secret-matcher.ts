/**
 * How one secret is found in a text, in every form an endpoint may echo it in (see
 * redact.ts): a hand-written scanner over the secret's characters, each raw or escaped, and
 * whole-string base64 forms. Used by the redactor; no state but what each secret needs.
 */

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

const JSON_SHORT: Record<string, string> = { '"': '\\"', '\\': '\\\\', '/': '\\/', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t' };
const HTML_NAMED: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };

/**
 * One character of a secret: itself, and its escaped forms as lower-case strings (compared
 * case-insensitively): percent-encoded (each UTF-8 byte `%xx`, or double-encoded `%25xx`),
 * `+` for a space, JSON-escaped (`\uXXXX` per UTF-16 unit, or `\"` `\\` `\/` `\n`…), an HTML
 * character reference (`&#39;`, `&#x27;`, `&amp;`).
 */
interface CharUnit {
  raw: string;
  escapes: string[];
}

function charUnit(ch: string): CharUnit {
  const bytes = [...Buffer.from(ch, 'utf8')].map((b) => b.toString(16).padStart(2, '0'));
  const cp = ch.codePointAt(0)!;
  const escapes = [
    bytes.map((b) => `%${b}`).join(''),
    bytes.map((b) => `%25${b}`).join(''),
    Array.from({ length: ch.length }, (_, i) => `\\u${ch.charCodeAt(i).toString(16).padStart(4, '0')}`).join(''),
    `&#${cp};`,
    `&#x${cp.toString(16)};`,
  ];
  if (ch === ' ') escapes.push('+');
  const short = JSON_SHORT[ch];
  if (short) escapes.push(short);
  const named = HTML_NAMED[ch];
  if (named) escapes.push(named);
  return { raw: ch, escapes };
}

/** The characters an escaped form starts with. */
const ESCAPE_START = new Set(['%', '\\', '&', '+']);

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
  out.add(bytes.toString('base64'));
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

/**
 * How one secret is found in a text: character by character, each in any of its forms (so
 * a mix of forms matches too), and as whole strings (base64 variants; for a very long secret,
 * such as a PEM key, its encoded forms). A hand-written scanner, not a regular expression:
 * an alternation of escapes per character makes V8 compile for tens of ms per secret.
 */
export class SecretMatcher {
  readonly length: number;
  /** Longest stretch of text a fragment can span. */
  readonly window: number;
  private readonly units?: CharUnit[];
  private readonly literals: string[];

  constructor(secret: string) {
    this.length = secret.length;
    const literals = new Set<string>();
    const encodings = new Set([secret, encodeURIComponent(secret), rfc3986(secret), formEncoded(secret)]);
    for (const e of encodings) base64Forms(Buffer.from(e, 'utf8'), literals);
    if (secret.length <= REDACT_DEFAULTS.maxCharPatternLength) this.units = Array.from(secret, charUnit);
    else {
      for (const e of encodings) literals.add(e);
      literals.add(JSON.stringify(secret).slice(1, -1));
    }
    this.literals = [...literals].filter((l) => l.length >= REDACT_DEFAULTS.minSecretLength).sort((a, b) => b.length - a.length);
    // the longest form of one character: `%25xx` × 4 bytes
    this.window = Math.max(secret.length * 20, ...this.literals.map((l) => l.length));
  }

  /** Adds the [start, end) spans of every occurrence in `text` (`lower`: `lowered(text)`). */
  find(text: string, lower: string, spans: Array<[number, number]>): void {
    for (const lit of this.literals) {
      for (let p = text.indexOf(lit); p >= 0; p = text.indexOf(lit, p + lit.length)) spans.push([p, p + lit.length]);
    }
    const units = this.units;
    if (!units) return;
    const u0 = units[0]!;
    for (let p = 0; p < text.length; p++) {
      const c = text[p]!;
      if (c !== u0.raw[0] && !ESCAPE_START.has(c)) continue;
      const end = this.match(text, lower, p, 0);
      if (end > 0) {
        spans.push([p, end]);
        p = end - 1;
      }
    }
  }

  /** The end of the secret's characters `i…` matched from `pos`, or -1 (backtracking over forms). */
  private match(text: string, lower: string, pos: number, i: number): number {
    const units = this.units!;
    if (i === units.length) return pos;
    const u = units[i]!;
    if (text.startsWith(u.raw, pos)) {
      const end = this.match(text, lower, pos + u.raw.length, i + 1);
      if (end >= 0) return end;
    }
    const c = text[pos];
    if (c === undefined || !ESCAPE_START.has(c)) return -1;
    for (const e of u.escapes) {
      if (e[0] !== c || !lower.startsWith(e, pos)) continue;
      const end = this.match(text, lower, pos + e.length, i + 1);
      if (end >= 0) return end;
    }
    return -1;
  }

  /**
   * The start of a fragment of ≥ `minFragment` characters of the secret (any form) that runs
   * to the end of `text`, searched no earlier than `from`; -1 when there is none.
   */
  tail(text: string, from: number): number {
    const min = REDACT_DEFAULTS.minFragment;
    const units = this.units;
    if (units) {
      const first = units[0]!.raw[0];
      for (let p = from; p < text.length; p++) {
        const c = text[p]!;
        if (c !== first && !ESCAPE_START.has(c)) continue;
        if (this.runsToEnd(text, p, 0) >= min) return p;
      }
    }
    for (const lit of this.literals) {
      const head = lit.slice(0, min);
      for (let p = text.indexOf(head, Math.max(from, text.length - lit.length)); p >= 0; p = text.indexOf(head, p + 1)) {
        if (lit.startsWith(text.slice(p))) return p;
      }
    }
    return -1;
  }

  /**
   * How many characters of the secret, from its `i`-th on, match from `pos` to the end of
   * `text`, trying every form of each; `i` when they reach the end, 0 when they do not.
   */
  private runsToEnd(text: string, pos: number, i: number): number {
    if (pos === text.length) return i;
    const units = this.units!;
    if (i === units.length) return 0; // the whole secret (masked already, or followed by more text)
    const u = units[i]!;
    // a cut inside the form of the next character (`%2`, `%c3` of `%c3%a9`, `\u00`) counts it
    const rest = text.length - pos <= 24 ? text.slice(pos).toLowerCase() : undefined;
    if (rest !== undefined && u.escapes.some((e) => e.startsWith(rest))) return i + 1;
    if (text.startsWith(u.raw, pos)) {
      const n = this.runsToEnd(text, pos + u.raw.length, i + 1);
      if (n > 0) return n;
    }
    const c = text[pos]!;
    if (!ESCAPE_START.has(c)) return 0;
    for (const e of u.escapes) {
      if (e[0] !== c || text.slice(pos, pos + e.length).toLowerCase() !== e) continue;
      const n = this.runsToEnd(text, pos + e.length, i + 1);
      if (n > 0) return n;
    }
    return 0;
  }
}

/**
 * `text` lower-cased position for position (escapes are compared case-insensitively): its
 * ASCII letters lowered, every other character kept, so indexes stay those of `text`.
 */
export function lowered(text: string): string {
  return text.replace(/[A-Z]+/g, (m) => m.toLowerCase());
}

