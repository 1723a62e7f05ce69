/**
 * How a destination's requests get their credentials. One provider per destination,
 * shared by all its requests.
 */

export interface AuthProvider {
  /**
   * Set when the credentials never change (`none`, `bearer`): the headers `authorize()` would
   * always give. The sink then builds them into every request once, with no `authorize()` call
   * (and no await) per request. A provider that sets it answers `invalidate()` with `false`.
   */
  readonly fixedHeaders?: Readonly<Record<string, string>>;
  /**
   * Headers to add to one request (e.g. `Authorization`). May fetch or renew a token; many
   * concurrent callers share a single fetch. Rejects with a DeliveryError of code `ERR_AUTH`
   * (retryable unless the token endpoint refused the grant for good) whose message holds no
   * secret.
   */
  authorize(): Promise<Record<string, string>>;
  /**
   * The endpoint answered 401 to a request made with `headers`: drop those credentials so
   * the next `authorize()` obtains fresh ones. Returns `true` when renewing can help (the
   * sink then resends the request once before counting a failure), `false` for static
   * credentials (`none`, `bearer`).
   */
  invalidate(headers: Record<string, string>): boolean;
  close(): Promise<void>;
}
