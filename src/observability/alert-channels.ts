/**
 * Alert channels (SPEC §10): a webhook (a JSON POST, signed with Standard Webhooks when
 * `signing` is set, retried with backoff) and a NATS subject (published on the source's
 * servers). `send` queues and returns at once: a channel that cannot be reached never stops
 * exports; each failed try is logged and retried.
 */
import { randomUUID } from 'node:crypto';
import type { AlertChannelConfig } from '../config/schema.js';
import { signWebhook } from '../sinks/http/signing.js';
import type { AlertChannel, AlertMessage } from './alerts.js';
import type { Logger } from './logger.js';

export const ALERT_CHANNEL_DEFAULTS = {
  /** Tries per message (the first and the retries). */
  attempts: 5,
  firstDelayMs: 1_000,
  maxDelayMs: 60_000,
} as const;

type Deliver = (message: AlertMessage, body: string) => Promise<void>;

/** A queue that delivers each message in turn, retrying with a doubling delay. */
function queued(id: string, deliver: Deliver, logger: Logger, retry: { attempts: number; firstDelayMs: number; maxDelayMs: number }, onClose?: () => Promise<void>): AlertChannel {
  const queue: AlertMessage[] = [];
  let busy = false;
  let closed = false;
  let wake: (() => void) | undefined;
  const pause = (ms: number): Promise<void> =>
    new Promise((r) => {
      const t = setTimeout(r, ms);
      t.unref();
      wake = () => {
        clearTimeout(t);
        r();
      };
    });
  const drain = async (): Promise<void> => {
    busy = true;
    while (queue.length > 0 && !closed) {
      const msg = queue[0];
      const body = JSON.stringify(msg);
      let delay: number = retry.firstDelayMs;
      for (let attempt = 1; attempt <= retry.attempts && !closed; attempt++) {
        try {
          await deliver(msg, body);
          break;
        } catch (err) {
          const last = attempt === retry.attempts;
          logger.warn({ channel: id, alertId: msg.alertId, state: msg.state, attempt, err: err instanceof Error ? err.message : String(err) }, last ? 'alert channel: giving up on this message' : 'alert channel unreachable; retrying');
          if (!last) await pause(delay);
          delay = Math.min(delay * 2, retry.maxDelayMs);
        }
      }
      queue.shift();
    }
    busy = false;
  };
  return {
    id,
    send(message) {
      if (closed) return;
      queue.push(message);
      if (!busy) void drain();
    },
    async close() {
      closed = true;
      wake?.();
      await onClose?.();
    },
  };
}

/** The channels of a config. `natsServers`: the JetStream source's (the loader checked there is one). */
export function openAlertChannels(
  channels: readonly AlertChannelConfig[],
  deps: { logger: Logger; natsServers?: string[]; retry?: Partial<{ attempts: number; firstDelayMs: number; maxDelayMs: number }> },
): AlertChannel[] {
  const retry = { ...ALERT_CHANNEL_DEFAULTS, ...deps.retry };
  let nats: Promise<import('../streams/nats.js').NatsHandle> | undefined;
  const natsHandle = async (): Promise<import('../streams/nats.js').NatsHandle> => {
    if (!deps.natsServers) throw new Error('no NATS servers configured');
    const { connectNats } = await import('../streams/nats.js');
    nats ??= connectNats({ servers: deps.natsServers, name: 'http-destination:alerts' }).catch((err: unknown) => {
      nats = undefined;
      throw err;
    });
    return nats;
  };
  let natsUsers = 0;
  return channels.map((ch): AlertChannel => {
    if (ch.kind === 'webhook') {
      const secrets = ch.signing ? ('secret' in ch.signing ? [ch.signing.secret] : ch.signing.secrets) : undefined;
      return queued(
        ch.id,
        async (msg, body) => {
          const id = `alert_${randomUUID()}`;
          const timestamp = Math.floor(Date.now() / 1000);
          const headers: Record<string, string> = { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': String(timestamp) };
          if (secrets) headers['webhook-signature'] = signWebhook({ secrets, id, timestamp, body });
          const res = await fetch(ch.url, { method: 'POST', headers, body, signal: AbortSignal.timeout(ch.timeoutMs) });
          await res.arrayBuffer().catch(() => undefined);
          if (!res.ok) throw new Error(`HTTP ${res.status}`);
        },
        deps.logger,
        retry,
      );
    }
    natsUsers++;
    return queued(
      ch.id,
      async (_msg, body) => {
        const h = await natsHandle();
        h.nc.publish(ch.subject, body);
        await h.nc.flush();
      },
      deps.logger,
      retry,
      async () => {
        if (--natsUsers === 0 && nats) await (await nats.catch(() => undefined))?.close();
      },
    );
  });
}
