/**
 * Builds a destination's AuthProvider from its (validated) auth config.
 */
import type { Dispatcher } from 'undici';
import type { AuthConfig } from '../../../config/schema.js';
import type { DestinationConfig, ResolvedProxy } from '../../../config/load.js';
import type { HttpTransport } from '../transport.js';
import { bearerAuth } from './bearer.js';
import { noAuth } from './none.js';
import { createOAuth2Provider } from './oauth2.js';
import type { AuthProvider } from './types.js';
import { processSecrets, type SecretRegistry } from '../../../observability/redact.js';

export type { AuthProvider } from './types.js';
export { bearerAuth } from './bearer.js';
export { noAuth } from './none.js';

/** What an AuthProvider may need besides its config. */
export interface AuthDeps {
  /** The undici dispatcher token requests go through. @default undici's global dispatcher */
  dispatcher?: Dispatcher;
  /**
   * The destination's proxy, for token requests that do not share its dispatcher (another
   * origin): they get a proxied dispatcher of their own. @default none (direct)
   */
  proxy?: ResolvedProxy;
  /** Longest a token request may take, in ms. */
  timeoutMs: number;
  /** Where token renewal problems are warned about (a child logger per destination). @default none */
  logger?: { warn(obj: object, msg: string): void };
  /** Where runtime secrets (OAuth2 tokens) are registered for masking. @default processSecrets */
  secrets?: SecretRegistry;
}

/**
 * One AuthProvider per destination, chosen by `auth.type`: `none`, `bearer`, or an OAuth2
 * grant (`oauth2-client-credentials`, `oauth2-password`; token cached, shared and renewed).
 *
 * @example
 * ```ts
 * const auth = createAuthProvider(dest.auth, { timeoutMs: dest.timeoutMs });
 * const headers = await auth.authorize();
 * ```
 */
export function createAuthProvider(auth: AuthConfig, deps: AuthDeps): AuthProvider {
  switch (auth.type) {
    case 'none':
      return noAuth();
    case 'bearer':
      // masked everywhere, even when the caller did not pass the config's secrets to a redactor
      (deps.secrets ?? processSecrets).add(auth.token, `Bearer ${auth.token}`);
      return bearerAuth({ token: auth.token });
    case 'oauth2-client-credentials':
    case 'oauth2-password':
      return createOAuth2Provider(auth, deps);
    default: {
      const unknown: never = auth;
      throw new TypeError(`unsupported auth type ${(unknown as { type?: unknown }).type as string}`);
    }
  }
}

/**
 * Token requests share the destination's Agent (and its TLS settings) only when the token
 * endpoint has the same origin; another origin goes through undici's global dispatcher, so a
 * private CA or client certificate meant for the export endpoint does not apply to it.
 */
export function authDepsFor(dest: DestinationConfig, transport: HttpTransport, logger?: AuthDeps['logger']): AuthDeps {
  const a = dest.auth;
  let dispatcher: AuthDeps['dispatcher'];
  if (a.type === 'oauth2-client-credentials' || a.type === 'oauth2-password') {
    try {
      if (new URL(a.accessTokenUrl).origin === new URL(dest.url).origin) dispatcher = transport.dispatcher;
    } catch {
      // validated URLs: cannot happen; fall back to the global dispatcher
    }
  }
  return { dispatcher, proxy: dest.proxy, timeoutMs: dest.timeoutMs, logger };
}
