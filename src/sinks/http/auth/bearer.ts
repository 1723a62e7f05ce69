/**
 * The `bearer` auth type (SPEC §5): a static token sent as `Authorization: Bearer <token>`.
 */
import type { AuthProvider } from './types.js';

/**
 * An AuthProvider that adds `authorization: Bearer <token>` to every request. The token is
 * static, so `invalidate` returns `false` (a 401 is a permanent failure). The token is never
 * logged nor put in an error message.
 *
 * @example
 * ```ts
 * const auth = bearerAuth({ token: process.env.BEARER_TOKEN! });
 * await auth.authorize(); // { authorization: 'Bearer …' }
 * ```
 *
 * @param options.token the bearer token (required, non-empty)
 */
export function bearerAuth(options: { token: string }): AuthProvider {
  const value = `Bearer ${options.token}`;
  return {
    fixedHeaders: Object.freeze({ authorization: value }),
    authorize: () => Promise.resolve({ authorization: value }),
    invalidate: () => false,
    close: () => Promise.resolve(),
  };
}
