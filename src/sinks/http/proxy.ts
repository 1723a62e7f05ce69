/**
 * The undici dispatcher of a destination, direct or through an HTTP(S) proxy (README "Proxies").
 */
import { Agent, EnvHttpProxyAgent, type Dispatcher } from 'undici';
import type { ResolvedProxy } from '../../config/load.js';

/**
 * An `Agent` with `options`, or, when `proxy` is given, undici's `EnvHttpProxyAgent` with the
 * same options and the proxy settings passed explicitly (so `process.env` is not read again:
 * the config already resolved the destination's `proxy` over `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`).
 *
 * - https:// endpoints go through a CONNECT tunnel; TLS (server verification, private CA,
 *   client certificate for mTLS) runs end to end with the endpoint inside it (`requestTls`).
 * - http:// endpoints behind an http:// proxy are sent in absolute form (`GET http://host/…`),
 *   as a forward proxy expects (many refuse CONNECT to ports other than 443).
 * - Hosts matching `noProxy` get the direct `Agent` (with the same TLS settings).
 * - Credentials in the proxy URL become a `Proxy-Authorization: Basic …` header on the CONNECT
 *   (or forwarded) request, never sent to the endpoint.
 *
 * @example
 * const dispatcher = createDispatcher({ connections: 8, connect: { ca } }, { httpProxy: '', httpsProxy: 'http://proxy:3128', noProxy: '', from: 'env' });
 */
export function createDispatcher(options: Agent.Options, proxy?: ResolvedProxy): Dispatcher {
  if (!proxy) return new Agent(options);
  const connect = typeof options.connect === 'object' && options.connect !== null ? options.connect : undefined;
  return new EnvHttpProxyAgent({
    ...options,
    // '' (not undefined): no fallback to process.env for a scheme without a proxy.
    httpProxy: proxy.httpProxy,
    httpsProxy: proxy.httpsProxy,
    noProxy: proxy.noProxy,
    // The endpoint's TLS inside the tunnel; the proxy's own TLS (https:// proxy) uses the system CAs.
    requestTls: connect,
    proxyTunnel: false,
  });
}
