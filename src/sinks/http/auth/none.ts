/**
 * The `none` auth type: no credentials are added.
 */
import type { AuthProvider } from './types.js';

const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

/**
 * An AuthProvider that adds no header; a 401 cannot be helped by renewing.
 *
 * @example
 * ```ts
 * const auth = noAuth();
 * await auth.authorize(); // {}
 * ```
 */
export function noAuth(): AuthProvider {
  return {
    fixedHeaders: NO_HEADERS,
    authorize: () => Promise.resolve({ ...NO_HEADERS }),
    invalidate: () => false,
    close: () => Promise.resolve(),
  };
}
