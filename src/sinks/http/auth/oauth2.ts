/**
 * OAuth2 auth providers (SPEC §5): the client credentials grant (`body-form` or `basic`
 * client authentication) and the resource owner password grant. One access token is shared
 * by all requests of a destination, fetched by a single token request however many callers
 * wait for it, renewed before `expires_in` runs out (with the `refresh_token` grant when one
 * was issued, falling back to a fresh grant when that fails), and dropped on a 401.
 *
 * No timer is kept: renewal happens on the `authorize()` calls that see the token ageing, so
 * nothing outlives `close()` but the (aborted) token request in flight, if any.
 */
import { request, type Dispatcher } from 'undici';
import { DeliveryError } from '../../../errors.js';
import type { AuthConfig } from '../../../config/schema.js';
import { MASK, processSecrets, type SecretRegistry } from '../../../observability/redact.js';
import type { ResolvedProxy } from '../../../config/load.js';
import { createDispatcher } from '../proxy.js';
import type { AuthProvider } from './types.js';

export type OAuth2AuthConfig = Extract<AuthConfig, { type: 'oauth2-client-credentials' | 'oauth2-password' }>;

export interface OAuth2Deps {
  /** The undici dispatcher token requests go through. @default undici's global dispatcher */
  dispatcher?: Dispatcher;
  /** Without `dispatcher`: token requests go through this proxy (their own dispatcher, closed by `close()`). */
  proxy?: ResolvedProxy;
  /** Longest a token request may take, connect to last body byte. */
  timeoutMs: number;
  /** Clock in ms since epoch (inject for tests). @default Date.now */
  now?: () => number;
  /** Receives a warning when a background renewal or a refresh grant fails. Nothing secret is passed. */
  logger?: { warn(obj: object, msg: string): void };
  /**
   * Where the secrets of this provider are registered — its client secret and password, and
   * every access and refresh token it obtains, the moment it obtains them — so that every
   * output of the process (logs, failure reasons, stored failed requests) masks them.
   * @default processSecrets
   */
  secrets?: SecretRegistry;
}

/** Every tuning default of the OAuth2 providers, in one place. */
export const OAUTH2_DEFAULTS = {
  /** Renew once this fraction of `expires_in` has passed… */
  renewAtFraction: 0.9,
  /** …or this long before expiry, whichever comes first… */
  renewBeforeExpiryMs: 30_000,
  /** …but never before this fraction of the lifetime (keeps short-lived tokens useful). */
  minRenewFraction: 0.5,
  /** After a failed background renewal (the current token still valid), wait this long before the next try. */
  backgroundRetryMs: 1_000,
  /** Largest token response body read. */
  maxResponseBytes: 1_048_576,
} as const;

interface Token {
  /** The full `Authorization` header value, e.g. `Bearer abc`. */
  header: string;
  /** When to start renewing (ms since epoch); Infinity when the server gave no `expires_in`. */
  renewAt: number;
  /** When the token is no longer usable (ms since epoch); Infinity without `expires_in`. */
  expiresAt: number;
}

interface TokenResponse {
  accessToken: string;
  tokenType: string;
  expiresInSec?: number;
  refreshToken?: string;
}

/**
 * Creates the AuthProvider of an `oauth2-client-credentials` or `oauth2-password` destination.
 *
 * @example
 * ```ts
 * const auth = createOAuth2Provider(
 *   { type: 'oauth2-client-credentials', accessTokenUrl: 'https://idp.example.com/token',
 *     clientId: 'id', clientSecret: process.env.SECRET!, credentialsType: 'basic' },
 *   { timeoutMs: 10_000 },
 * );
 * const headers = await auth.authorize(); // { authorization: 'Bearer …' }
 * ```
 *
 * @param auth the destination's auth config.
 * @param deps.dispatcher undici dispatcher for the token requests. @default the global dispatcher
 * @param deps.timeoutMs timeout of one token request.
 * @param deps.now clock. @default Date.now
 * @param deps.logger where warnings go. @default none
 */
export function createOAuth2Provider(auth: OAuth2AuthConfig, deps: OAuth2Deps): AuthProvider {
  const now = deps.now ?? Date.now;
  const tokenUrl = new URL(auth.accessTokenUrl);
  // A token endpoint behind the destination's proxy: a small proxied dispatcher of its own.
  const ownDispatcher = !deps.dispatcher && deps.proxy ? createDispatcher({ connections: 2 }, deps.proxy) : undefined;
  const dispatcher = deps.dispatcher ?? ownDispatcher;
  const host = tokenUrl.host;
  const useBasic = auth.type === 'oauth2-client-credentials' && auth.credentialsType === 'basic';
  const basicHeader = useBasic
    ? `Basic ${Buffer.from(`${formEncode(auth.clientId)}:${formEncode(auth.clientSecret)}`, 'utf8').toString('base64')}`
    : undefined;

  let current: Token | undefined;
  let refreshToken: string | undefined;
  let inflight: Promise<Token> | undefined;
  let nextBackgroundAttempt = 0;
  let closed = false;
  const controllers = new Set<AbortController>();
  /** Every secret this provider has seen, scrubbed from any message as a last line of defence. */
  const secrets = new Set<string>([auth.clientSecret]);
  if (auth.type === 'oauth2-password') secrets.add(auth.password);
  if (basicHeader) secrets.add(basicHeader);
  /** …and known to every redactor of the process (runtime tokens are added as they come). */
  const registry = deps.secrets ?? processSecrets;
  registry.add(...secrets);

  function grantFields(): Array<[string, string]> {
    const fields: Array<[string, string]> =
      auth.type === 'oauth2-password'
        ? [['grant_type', 'password'], ['username', auth.username], ['password', auth.password]]
        : [['grant_type', 'client_credentials']];
    if (auth.scope) fields.push(['scope', auth.scope]);
    return fields;
  }

  function clientFields(): Array<[string, string]> {
    return useBasic ? [] : [['client_id', auth.clientId], ['client_secret', auth.clientSecret]];
  }

  function fail(message: string, retryable: boolean, extra: { statusCode?: number; cause?: unknown } = {}): DeliveryError {
    return new DeliveryError('ERR_AUTH', scrub(message, secrets), { retryable, ...extra });
  }

  async function tokenRequest(fields: Array<[string, string]>, grant: string): Promise<TokenResponse> {
    if (closed) throw fail('OAuth2 auth provider is closed', false);
    const body = fields.map(([k, v]) => `${formEncode(k)}=${formEncode(v)}`).join('&');
    const headers: Record<string, string> = {
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
    };
    if (basicHeader) headers.authorization = basicHeader;
    const controller = new AbortController();
    controllers.add(controller);
    let timedOut = false;
    // A plain timer is right here: this is a promise adapter, not an RxJS operator. Cleared below.
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, deps.timeoutMs);
    const what = `OAuth2 ${grant} token request to ${host}`;
    try {
      let res: Dispatcher.ResponseData;
      let text: string;
      try {
        res = await request(tokenUrl, {
          method: 'POST',
          headers,
          body,
          dispatcher,
          signal: controller.signal,
          headersTimeout: deps.timeoutMs,
          bodyTimeout: deps.timeoutMs,
        });
        text = await readCapped(res.body, OAUTH2_DEFAULTS.maxResponseBytes);
      } catch (err) {
        if (timedOut) throw fail(`${what} timed out after ${deps.timeoutMs} ms`, true);
        if (closed) throw fail(`${what} aborted: provider closed`, false);
        if (err instanceof DeliveryError) throw err;
        const code = errorCode(err);
        if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
          throw fail(`${what} timed out after ${deps.timeoutMs} ms (${code})`, true);
        }
        throw fail(`${what} failed: ${code ?? 'connection error'}`, true, { cause: safeCause(err) });
      }
      const status = res.statusCode;
      let json: unknown;
      try {
        json = text.length > 0 ? JSON.parse(text) : undefined;
      } catch {
        json = undefined;
      }
      if (status < 200 || status >= 300) {
        const oauthError = oauthErrorCode(json);
        const retryable = status >= 500 || status === 408 || status === 425 || status === 429;
        throw fail(`${what} failed: HTTP ${status}${oauthError ? ` (${oauthError})` : ''}`, retryable, { statusCode: status });
      }
      return parseTokenResponse(json, what, fail);
    } finally {
      clearTimeout(timer);
      controllers.delete(controller);
    }
  }

  function install(res: TokenResponse, startedAt: number): Token {
    const tokenType = /^bearer$/i.test(res.tokenType) ? 'Bearer' : res.tokenType;
    const header = `${tokenType} ${res.accessToken}`;
    // Registered before the token is used: an endpoint echoing it is masked from the first request.
    secrets.add(res.accessToken).add(header);
    registry.add(res.accessToken, header);
    if (res.refreshToken !== undefined) {
      refreshToken = res.refreshToken;
      secrets.add(res.refreshToken);
      registry.add(res.refreshToken);
    }
    let renewAt = Infinity;
    let expiresAt = Infinity;
    if (res.expiresInSec !== undefined) {
      const lifeMs = res.expiresInSec * 1000;
      const renewAfter = Math.max(
        lifeMs * OAUTH2_DEFAULTS.minRenewFraction,
        Math.min(lifeMs * OAUTH2_DEFAULTS.renewAtFraction, lifeMs - OAUTH2_DEFAULTS.renewBeforeExpiryMs),
      );
      // Lifetimes count from when the request was sent: the server's clock started no earlier.
      renewAt = startedAt + renewAfter;
      expiresAt = startedAt + lifeMs;
    }
    const token: Token = { header, renewAt, expiresAt };
    current = token;
    return token;
  }

  async function obtain(): Promise<Token> {
    if (refreshToken !== undefined) {
      const startedAt = now();
      try {
        const res = await tokenRequest(
          [['grant_type', 'refresh_token'], ['refresh_token', refreshToken], ...clientFields()],
          'refresh_token',
        );
        return install(res, startedAt);
      } catch (err) {
        if (closed) throw err;
        const e = err as DeliveryError;
        // A refused refresh token will not work again; a transient failure may.
        if (!e.retryable) refreshToken = undefined;
        deps.logger?.warn(
          { host, code: e.code, statusCode: e.statusCode, reason: e.message },
          'OAuth2 refresh_token grant failed; requesting a new token',
        );
      }
    }
    const startedAt = now();
    const res = await tokenRequest([...grantFields(), ...clientFields()], auth.type === 'oauth2-password' ? 'password' : 'client_credentials');
    return install(res, startedAt);
  }

  /** Single-flight: every caller while a token request runs shares its result. */
  function renew(): Promise<Token> {
    if (!inflight) {
      const p = obtain();
      inflight = p;
      const clear = (): void => {
        if (inflight === p) inflight = undefined;
      };
      p.then(clear, clear);
    }
    return inflight;
  }

  return {
    async authorize(): Promise<Record<string, string>> {
      if (closed) throw fail('OAuth2 auth provider is closed', false);
      const t = now();
      const tok = current;
      if (tok && t < tok.renewAt) return { authorization: tok.header };
      if (tok && t < tok.expiresAt) {
        // Still valid: renew in the background, keep serving the current token meanwhile.
        if (!inflight && t >= nextBackgroundAttempt) {
          renew().catch((err: unknown) => {
            nextBackgroundAttempt = now() + OAUTH2_DEFAULTS.backgroundRetryMs;
            if (!closed) {
              const e = err as DeliveryError;
              deps.logger?.warn(
                { host, code: e.code, statusCode: e.statusCode, reason: e.message },
                'OAuth2 token renewal failed; using the current token until it expires',
              );
            }
          });
        }
        return { authorization: tok.header };
      }
      const fresh = await renew();
      return { authorization: fresh.header };
    },

    invalidate(headers: Record<string, string>): boolean {
      const sent = Object.entries(headers).find(([k]) => k.toLowerCase() === 'authorization')?.[1];
      // Only the token the 401 was for is dropped: after a 401 storm, one renewal, not one per request.
      if (current && sent === current.header) current = undefined;
      return true;
    },

    async close(): Promise<void> {
      closed = true;
      current = undefined;
      refreshToken = undefined;
      for (const c of controllers) c.abort();
      if (inflight) await inflight.then(() => undefined, () => undefined);
      await ownDispatcher?.close().catch(() => undefined);
    },
  };
}

/**
 * `application/x-www-form-urlencoded` encoding of one name or value (RFC 6749 Appendix B, §2.3.1):
 * UTF-8, space as `+`, every octet but ALPHA / DIGIT / `-` / `.` / `_` percent-encoded.
 */
export function formEncode(value: string): string {
  return encodeURIComponent(value)
    .replace(/[!'()*~]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, '+');
}

function parseTokenResponse(
  json: unknown,
  what: string,
  fail: (message: string, retryable: boolean) => DeliveryError,
): TokenResponse {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw fail(`${what}: the response is not a JSON object`, false);
  }
  const o = json as Record<string, unknown>;
  const accessToken = o.access_token;
  if (typeof accessToken !== 'string' || accessToken.length === 0) {
    throw fail(`${what}: the response has no access_token`, false);
  }
  // The token goes into a header: refuse anything that is not a plain visible-ASCII token.
  if (!/^[\x21-\x7e]+$/.test(accessToken)) {
    throw fail(`${what}: the access_token is not a valid header value`, false);
  }
  let tokenType = 'Bearer';
  if (o.token_type !== undefined && o.token_type !== null && o.token_type !== '') {
    if (typeof o.token_type !== 'string' || !/^[A-Za-z0-9_.-]{1,32}$/.test(o.token_type)) {
      throw fail(`${what}: the token_type is not a valid scheme name`, false);
    }
    tokenType = o.token_type;
  }
  let expiresInSec: number | undefined;
  const e = o.expires_in;
  const n = typeof e === 'number' ? e : typeof e === 'string' && e.trim() !== '' ? Number(e) : undefined;
  if (n !== undefined && Number.isFinite(n) && n > 0) expiresInSec = n;
  const refreshToken = typeof o.refresh_token === 'string' && o.refresh_token.length > 0 ? o.refresh_token : undefined;
  return { accessToken, tokenType, expiresInSec, refreshToken };
}

/** The OAuth `error` code of an error response (RFC 6749 §5.2), when it looks like one. */
function oauthErrorCode(json: unknown): string | undefined {
  if (typeof json !== 'object' || json === null) return undefined;
  const e = (json as Record<string, unknown>).error;
  return typeof e === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(e) ? e : undefined;
}

function errorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Network errors keep only name, code and message as their cause: no request options travel along. */
function safeCause(err: unknown): Error | undefined {
  if (!(err instanceof Error)) return undefined;
  const e = new Error(err.message);
  e.name = err.name;
  const code = errorCode(err);
  if (code) (e as Error & { code?: string }).code = code;
  return e;
}

async function readCapped(body: Dispatcher.ResponseData['body'], max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
    size += buf.length;
    if (size > max) {
      body.destroy();
      break;
    }
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function scrub(message: string, secrets: Set<string>): string {
  let out = message;
  for (const s of secrets) if (s.length >= 4 && out.includes(s)) out = out.split(s).join(MASK);
  return out;
}
