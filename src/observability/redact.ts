/**
 * Secret redaction. Every secret value of the config (tokens, client secrets, passwords,
 * passphrases, signing secrets, sensitive header values, anything from `${ENV}`) is masked
 * wherever it would appear in a string; keys that name credentials are masked whatever their
 * value. Applied at the logger and to error messages before they are printed or stored.
 */

export const MASK = '[REDACTED]';

/** Object keys whose values are always masked. */
const SECRET_KEY = /^(authorization|proxy-authorization|cookie|token|access_token|refresh_token|clientsecret|client_secret|password|passphrase|secret|secrets|x-api-key|api-key|apikey)$/i;

export interface Redactor {
  /** Masks every known secret inside `text`. */
  text(text: string): string;
  /** A deep copy of `value` with secrets masked in strings and credential keys masked. */
  value<T>(value: T): T;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Builds a redactor for a set of secret values. Values shorter than 4 characters are
 * ignored (masking them would shred ordinary text); longer ones are masked, longest first.
 *
 * @example createRedactor(config.secrets).text(`failed: ${err.message}`)
 */
export function createRedactor(secrets: readonly string[]): Redactor {
  const list = [...new Set(secrets)].filter((s) => s.length >= 4).sort((a, b) => b.length - a.length);
  const encoded = new Set<string>();
  for (const s of list) {
    encoded.add(s);
    const uri = encodeURIComponent(s);
    if (uri !== s) encoded.add(uri);
    encoded.add(Buffer.from(s).toString('base64'));
  }
  const pattern = encoded.size > 0 ? new RegExp([...encoded].map(escapeRegExp).join('|'), 'g') : undefined;
  const text = (t: string): string => (pattern ? t.replace(pattern, MASK) : t);
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
  return { text, value };
}
