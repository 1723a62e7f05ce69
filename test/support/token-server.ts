/**
 * A real, minimal OAuth2 token endpoint (RFC 6749 §4.3, §4.4, §6) on 127.0.0.1, port 0, for
 * tests. It authenticates the client (HTTP Basic with form-urlencoded id/secret, or
 * `client_id`/`client_secret` in the body), serves the `client_credentials`, `password` and
 * `refresh_token` grants, and records every request exactly as received.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedTokenRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  /** The body exactly as received. */
  rawBody: string;
  /** The body parsed as `application/x-www-form-urlencoded`. */
  form: Record<string, string>;
  /** The decoded `Authorization: Basic` credentials, when sent. */
  basic?: { clientId: string; clientSecret: string; raw: string };
}

export interface TokenServerReply {
  status: number;
  body?: unknown;
  /** Wait this long before answering. */
  delayMs?: number;
}

export interface TokenServerOptions {
  clientId: string;
  clientSecret: string;
  /** For the password grant. */
  username?: string;
  password?: string;
  /** `expires_in` of issued tokens; `undefined` leaves it out. @default 3600 */
  expiresIn?: number | undefined;
  /** Issue a `refresh_token` with each token. @default false */
  issueRefreshToken?: boolean;
  /** Accept the `refresh_token` grant. @default true */
  acceptRefresh?: boolean;
  /** `token_type` of issued tokens. @default 'Bearer' */
  tokenType?: string;
  /** Delay every answer by this many ms (unless an override reply sets its own). @default 0 */
  delayMs?: number;
  /** Answer before the default logic; return undefined to fall through. */
  override?: (req: RecordedTokenRequest, index: number) => TokenServerReply | undefined;
}

export interface TokenServer {
  url: string;
  port: number;
  requests: RecordedTokenRequest[];
  /** Access tokens issued, in order. */
  issued: string[];
  options: TokenServerOptions;
  close(): Promise<void>;
}

const DEFAULT_EXPIRES_IN = 3600;

/** Form-urlencoded decoding: `+` is a space, then percent-decoding. */
export function formDecode(s: string): string {
  return decodeURIComponent(s.replace(/\+/g, ' '));
}

function parseForm(body: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (body === '') return out;
  for (const pair of body.split('&')) {
    const i = pair.indexOf('=');
    const k = i < 0 ? pair : pair.slice(0, i);
    const v = i < 0 ? '' : pair.slice(i + 1);
    out[formDecode(k)] = formDecode(v);
  }
  return out;
}

function parseBasic(header: string | undefined): RecordedTokenRequest['basic'] {
  const m = /^Basic (.+)$/.exec(header ?? '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return undefined;
  return { clientId: formDecode(decoded.slice(0, i)), clientSecret: formDecode(decoded.slice(i + 1)), raw: decoded };
}

/** Starts a token server; stop it with `close()`. */
export async function startTokenServer(options: TokenServerOptions): Promise<TokenServer> {
  const requests: RecordedTokenRequest[] = [];
  const issued: string[] = [];
  const refreshTokens = new Set<string>();
  let counter = 0;
  const timers = new Set<NodeJS.Timeout>();

  const decide = (r: RecordedTokenRequest, index: number): TokenServerReply => {
    const o = state.options;
    const custom = o.override?.(r, index);
    if (custom) return custom;
    if (r.method !== 'POST') return { status: 405, body: { error: 'invalid_request' } };
    if (!/^application\/x-www-form-urlencoded/.test(r.headers['content-type'] ?? '')) {
      return { status: 400, body: { error: 'invalid_request' } };
    }
    const id = r.basic?.clientId ?? r.form.client_id;
    const secret = r.basic?.clientSecret ?? r.form.client_secret;
    if (id !== o.clientId || secret !== o.clientSecret) return { status: 401, body: { error: 'invalid_client' } };
    const grant = r.form.grant_type;
    if (grant === 'password') {
      if (r.form.username !== o.username || r.form.password !== o.password) {
        return { status: 400, body: { error: 'invalid_grant' } };
      }
    } else if (grant === 'refresh_token') {
      if (o.acceptRefresh === false || !refreshTokens.has(r.form.refresh_token)) {
        return { status: 400, body: { error: 'invalid_grant' } };
      }
      refreshTokens.delete(r.form.refresh_token);
    } else if (grant !== 'client_credentials') {
      return { status: 400, body: { error: 'unsupported_grant_type' } };
    }
    counter += 1;
    const accessToken = `at-${counter}-${grant}`;
    issued.push(accessToken);
    const body: Record<string, unknown> = { access_token: accessToken, token_type: o.tokenType ?? 'Bearer' };
    const expiresIn = 'expiresIn' in o ? o.expiresIn : DEFAULT_EXPIRES_IN;
    if (expiresIn !== undefined) body.expires_in = expiresIn;
    if (o.issueRefreshToken) {
      const rt = `rt-${counter}`;
      refreshTokens.add(rt);
      body.refresh_token = rt;
    }
    if (r.form.scope !== undefined) body.scope = r.form.scope;
    return { status: 200, body };
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks).toString('utf8');
      const rec: RecordedTokenRequest = {
        method: req.method ?? '',
        path: req.url ?? '',
        headers: req.headers,
        rawBody,
        form: parseForm(rawBody),
        basic: parseBasic(req.headers.authorization),
      };
      const index = requests.push(rec) - 1;
      const reply = decide(rec, index);
      const delayMs = reply.delayMs ?? state.options.delayMs ?? 0;
      const send = (): void => {
        if (res.destroyed) return;
        const text = reply.body === undefined ? '' : typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body);
        res.writeHead(reply.status, {
          'content-type': typeof reply.body === 'string' ? 'text/plain' : 'application/json',
          'cache-control': 'no-store',
        });
        res.end(text);
      };
      if (delayMs > 0) {
        const t = setTimeout(() => {
          timers.delete(t);
          send();
        }, delayMs);
        timers.add(t);
      } else send();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const state: TokenServer = {
    url: `http://127.0.0.1:${port}/oauth/token`,
    port,
    requests,
    issued,
    options,
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        timers.clear();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return state;
}
