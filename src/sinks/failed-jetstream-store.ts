/**
 * Failed requests and rejected events kept in JetStream streams (`failedRequests.kind:
 * jetstream`): durable, shared by every worker of the pool, listable and replayable.
 *
 * Layout:
 * - failed requests: stream `HTTP_DESTINATION_FAILED` (file storage), one subject per record,
 *   `<prefix>.<dataflow>.<sha256(id) first 32 hex>`, with `max_msgs_per_subject: 1`, so a
 *   re-put replaces the record and `remove` purges its subject. No age or size limit: a
 *   failed request stays until it is replayed or removed.
 * - rejected events: stream `HTTP_DESTINATION_REJECTED` (file storage), append-only on
 *   subject `<prefix>`, bounded by {@link JETSTREAM_STORE_DEFAULTS}: 30 days, 256 MiB,
 *   1,000,000 events, the oldest dropped first.
 *
 * `<prefix>` defaults to the stream name; `<dataflow>` is the dataflow id when it is made of
 * `[A-Za-z0-9_-]`, else `~` + its base64url.
 */
import { createHash, randomUUID } from 'node:crypto';
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  jetstream,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { StoreError } from '../errors.js';
import { processRedactor } from '../observability/redact.js';
import { subjectCovers } from '../streams/jetstream.js';
import { connectNats, type NatsHandle } from '../streams/nats.js';
import type { FailedRequest, FailedRequestStore, RejectedEvent, RejectedEventStore } from './types.js';

/** Defaults of the JetStream stores, named in one place. */
export const JETSTREAM_STORE_DEFAULTS = {
  stream: 'HTTP_DESTINATION_FAILED',
  rejectedStream: 'HTTP_DESTINATION_REJECTED',
  /** Rejected events older than this are dropped (30 days). */
  rejectedMaxAgeMs: 30 * 24 * 3_600_000,
  /** The rejected-events stream keeps at most this many bytes (256 MiB). */
  rejectedMaxBytes: 256 * 1024 * 1024,
  /** … and at most this many events. */
  rejectedMaxMsgs: 1_000_000,
  /** Records read per pull while listing. */
  listBatch: 1_000,
  /** How long one pull of a listing waits for messages. */
  listExpiresMs: 2_000,
  /** Purges in flight at once while removing. */
  removeConcurrency: 64,
  /** A listing consumer left behind (a crashed reader) is removed after this. */
  listInactiveMs: 60_000,
} as const;

/** Options of both stores. Give `servers` (the store opens and closes its connection) or `nats`. */
export interface JetStreamStoreOptions {
  /** NATS servers; the store opens its own connection and closes it on `close()`. */
  servers?: string | string[];
  /** A shared connection; `close()` leaves it open. */
  nats?: NatsHandle;
  /** Stream name. @default `HTTP_DESTINATION_FAILED` / `HTTP_DESTINATION_REJECTED` */
  stream?: string;
  /** Subject prefix. @default the stream name */
  subjectPrefix?: string;
}

const SAFE_TOKEN = /^[A-Za-z0-9_-]+$/;

/** The subject token of a dataflow id. */
export function dataflowToken(dataflowId: string): string {
  return SAFE_TOKEN.test(dataflowId) ? dataflowId : `~${Buffer.from(dataflowId).toString('base64url')}`;
}

/** The subject token of a record id. */
export function recordToken(id: string): string {
  return createHash('sha256').update(id).digest('hex').slice(0, 32);
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function checkPrefix(prefix: string): string {
  if (!prefix || /[\s*>]/.test(prefix) || prefix.startsWith('.') || prefix.endsWith('.') || prefix.includes('..')) {
    throw new StoreError(`invalid subject prefix "${prefix}"`);
  }
  return prefix;
}

/** Connection, managers and stream set up once, on first use. */
abstract class JetStreamStreamStore {
  protected readonly stream: string;
  protected readonly prefix: string;
  private readonly servers?: string | string[];
  private nats?: NatsHandle;
  private readonly ownsConnection: boolean;
  private ready?: Promise<{ js: JetStreamClient; jsm: JetStreamManager }>;
  private closed = false;

  protected constructor(options: JetStreamStoreOptions, defaultStream: string) {
    if (!options.servers && !options.nats) throw new StoreError('a JetStream store needs `servers` or `nats`');
    this.stream = options.stream ?? defaultStream;
    this.prefix = checkPrefix(options.subjectPrefix ?? this.stream);
    this.servers = options.servers;
    this.nats = options.nats;
    this.ownsConnection = !options.nats;
  }

  /** The stream's configuration (subjects and limits); the store creates or updates it. */
  protected abstract streamConfig(): Partial<StreamConfig> & { subjects: string[] };

  /** Connects (when it owns its connection) and makes sure the stream exists. */
  protected setup(): Promise<{ js: JetStreamClient; jsm: JetStreamManager }> {
    if (this.closed) return Promise.reject(new StoreError(`store on stream ${this.stream} is closed`));
    this.ready ??= (async () => {
      try {
        this.nats ??= await connectNats({ servers: this.servers ?? [], name: `http-destination:${this.stream}` });
        const jsm = await jetstreamManager(this.nats.nc);
        await this.ensure(jsm);
        return { js: jetstream(this.nats.nc), jsm };
      } catch (err) {
        this.ready = undefined; // try again on the next call
        throw new StoreError(`JetStream store ${this.stream} unavailable: ${errMessage(err)}`, { cause: err });
      }
    })();
    return this.ready;
  }

  private async ensure(jsm: JetStreamManager): Promise<void> {
    const wanted = this.streamConfig();
    let config: StreamConfig;
    try {
      config = (await jsm.streams.info(this.stream)).config;
    } catch (err) {
      if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound)) throw err;
      try {
        await jsm.streams.add({
          name: this.stream,
          storage: StorageType.File,
          retention: RetentionPolicy.Limits,
          discard: DiscardPolicy.Old,
          ...wanted,
        });
        return;
      } catch (addErr) {
        // Created meanwhile by another worker: check it like an existing one.
        config = (await jsm.streams.info(this.stream).catch(() => Promise.reject(addErr))).config;
      }
    }
    const have = config.subjects ?? [];
    const missing = wanted.subjects.filter((w) => !have.some((h) => subjectCovers(h, w)));
    const differs = (Object.keys(wanted) as Array<keyof StreamConfig>).some(
      (k) => k !== 'subjects' && config[k] !== wanted[k],
    );
    if (missing.length > 0 || differs) {
      await jsm.streams.update(this.stream, { ...config, ...wanted, subjects: [...have, ...missing] });
    }
  }

  /** Reads every message of the stream matching `filter` (last per subject when asked). */
  protected async readAll(filter: string, lastPerSubject: boolean): Promise<Uint8Array[]> {
    const { js, jsm } = await this.setup();
    const name = `hd_list_${randomUUID()}`;
    const out: Uint8Array[] = [];
    try {
      const info = await jsm.consumers.add(this.stream, {
        name,
        ack_policy: AckPolicy.None,
        deliver_policy: lastPerSubject ? DeliverPolicy.LastPerSubject : DeliverPolicy.All,
        filter_subject: filter,
        mem_storage: true,
        inactive_threshold: nanos(JETSTREAM_STORE_DEFAULTS.listInactiveMs),
      });
      if (info.num_pending === 0) return out;
      const consumer = await js.consumers.get(this.stream, name);
      for (;;) {
        const batch = await consumer.fetch({
          max_messages: JETSTREAM_STORE_DEFAULTS.listBatch,
          expires: JETSTREAM_STORE_DEFAULTS.listExpiresMs,
        });
        let got = 0;
        let done = false;
        for await (const m of batch) {
          got++;
          out.push(m.data);
          if (m.info.pending === 0) {
            done = true;
            break;
          }
        }
        if (done || got === 0) break;
      }
      return out;
    } catch (err) {
      throw new StoreError(`cannot read stream ${this.stream}: ${errMessage(err)}`, { cause: err });
    } finally {
      await jsm.consumers.delete(this.stream, name).catch(() => undefined);
    }
  }

  protected async publish(subject: string, record: unknown): Promise<void> {
    const { js } = await this.setup();
    try {
      await js.publish(subject, JSON.stringify(record));
    } catch (err) {
      throw new StoreError(`cannot write to stream ${this.stream}: ${errMessage(err)}`, { cause: err });
    }
  }

  /** Closes the connection when the store opened it. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.ready?.catch(() => undefined);
    if (this.ownsConnection) await this.nats?.close();
  }
}

function parseRecords<T>(data: Uint8Array[], valid: (v: unknown) => v is T): T[] {
  const decoder = new TextDecoder();
  const out: T[] = [];
  for (const d of data) {
    try {
      const v: unknown = JSON.parse(decoder.decode(d));
      if (valid(v)) out.push(v);
    } catch {
      // Not written by this store: not a record.
    }
  }
  return out;
}

function isFailedRequest(v: unknown): v is FailedRequest {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as FailedRequest).id === 'string' &&
    typeof (v as FailedRequest).dataflowId === 'string'
  );
}

function isRejectedEvent(v: unknown): v is RejectedEvent {
  return typeof v === 'object' && v !== null && typeof (v as RejectedEvent).sourceKey === 'string';
}

/**
 * Failed requests in a JetStream stream: one subject per record (`max_msgs_per_subject: 1`),
 * so `put` of an existing id replaces it and `remove` purges its subject.
 *
 * @example
 * const store = await JetStreamFailedRequestStore.open({ servers: 'nats://127.0.0.1:4222' });
 * await store.put(record);
 * const mine = await store.list({ dataflowId: 'flow-1' });
 * await store.remove(mine.map((r) => r.id));
 * await store.close();
 *
 * Options: `servers` or `nats` (required, one of them); `stream`
 * (@default `HTTP_DESTINATION_FAILED`); `subjectPrefix` (@default the stream name).
 * The stream is created (file storage, no age/size limit) when missing.
 */
export class JetStreamFailedRequestStore extends JetStreamStreamStore implements FailedRequestStore {
  constructor(options: JetStreamStoreOptions) {
    super(options, JETSTREAM_STORE_DEFAULTS.stream);
  }

  /** Creates the store and connects at once (so a bad server fails the start). */
  static async open(options: JetStreamStoreOptions): Promise<JetStreamFailedRequestStore> {
    const store = new JetStreamFailedRequestStore(options);
    await store.setup();
    return store;
  }

  protected streamConfig() {
    return { subjects: [`${this.prefix}.>`], max_msgs_per_subject: 1 };
  }

  /** The subject holding the record `id` of `dataflowId`. */
  subjectOf(record: { id: string; dataflowId: string }): string {
    return `${this.prefix}.${dataflowToken(record.dataflowId)}.${recordToken(record.id)}`;
  }

  /**
   * Stores (or replaces) a record. Its `lastError` is masked once more with every secret the
   * process knows (a last line of defence: the sink masks it already); the payload is
   * customer data kept as is, for replay.
   */
  async put(record: FailedRequest): Promise<void> {
    await this.publish(this.subjectOf(record), { ...record, lastError: processRedactor.text(record.lastError) });
  }

  async list(filter?: { dataflowId?: string }): Promise<FailedRequest[]> {
    const subject = filter?.dataflowId ? `${this.prefix}.${dataflowToken(filter.dataflowId)}.*` : `${this.prefix}.>`;
    const records = parseRecords(await this.readAll(subject, true), isFailedRequest);
    return filter?.dataflowId ? records.filter((r) => r.dataflowId === filter.dataflowId) : records;
  }

  async remove(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    const { jsm } = await this.setup();
    const unique = [...new Set(ids)];
    const step = JETSTREAM_STORE_DEFAULTS.removeConcurrency;
    for (let i = 0; i < unique.length; i += step) {
      await Promise.all(
        unique.slice(i, i + step).map(async (id) => {
          try {
            await jsm.streams.purge(this.stream, { filter: `${this.prefix}.*.${recordToken(id)}` });
          } catch (err) {
            throw new StoreError(`cannot remove failed request ${id} from ${this.stream}: ${errMessage(err)}`, {
              cause: err,
            });
          }
        }),
      );
    }
  }
}

/**
 * Rejected input events in an append-only JetStream stream, bounded to 30 days, 256 MiB and
 * 1,000,000 events (oldest dropped first).
 *
 * @example
 * const rejected = await JetStreamRejectedEventStore.open({ servers: 'nats://127.0.0.1:4222' });
 * await rejected.put({ sourceKey: 'js:PROFILES:7', code: 'ERR_EVENT_JSON', reason, raw, rejectedAt });
 * console.table(await rejected.list());
 *
 * Options: `servers` or `nats` (required, one of them); `stream`
 * (@default `HTTP_DESTINATION_REJECTED`); `subjectPrefix` (@default the stream name).
 */
export class JetStreamRejectedEventStore extends JetStreamStreamStore implements RejectedEventStore {
  constructor(options: JetStreamStoreOptions) {
    super(options, JETSTREAM_STORE_DEFAULTS.rejectedStream);
  }

  /** Creates the store and connects at once (so a bad server fails the start). */
  static async open(options: JetStreamStoreOptions): Promise<JetStreamRejectedEventStore> {
    const store = new JetStreamRejectedEventStore(options);
    await store.setup();
    return store;
  }

  protected streamConfig() {
    return {
      subjects: [this.prefix],
      max_age: nanos(JETSTREAM_STORE_DEFAULTS.rejectedMaxAgeMs),
      max_bytes: JETSTREAM_STORE_DEFAULTS.rejectedMaxBytes,
      max_msgs: JETSTREAM_STORE_DEFAULTS.rejectedMaxMsgs,
    };
  }

  async put(record: RejectedEvent): Promise<void> {
    await this.publish(this.prefix, record);
  }

  async list(): Promise<RejectedEvent[]> {
    return parseRecords(await this.readAll(this.prefix, false), isRejectedEvent);
  }
}

/** Both stores on one connection, as `failedRequests.kind: jetstream` configures them. */
export interface JetStreamStores {
  failed: JetStreamFailedRequestStore;
  rejected: JetStreamRejectedEventStore;
  /** Closes both stores and their shared connection. */
  close(): Promise<void>;
}

/**
 * Opens the failed-request and rejected-event stores on one shared connection.
 *
 * @example
 * const stores = await openJetStreamStores({
 *   servers: config.failedRequests.servers,
 *   stream: config.failedRequests.stream,
 *   rejectedStream: config.failedRequests.rejectedStream,
 * });
 */
export async function openJetStreamStores(options: {
  servers: string | string[];
  /** @default `HTTP_DESTINATION_FAILED` */
  stream?: string;
  /** @default `HTTP_DESTINATION_REJECTED` */
  rejectedStream?: string;
}): Promise<JetStreamStores> {
  let nats: NatsHandle;
  try {
    nats = await connectNats({ servers: options.servers, name: 'http-destination:stores' });
  } catch (err) {
    throw new StoreError(`JetStream stores unavailable: ${errMessage(err)}`, { cause: err });
  }
  try {
    const failed = await JetStreamFailedRequestStore.open({ nats, stream: options.stream });
    const rejected = await JetStreamRejectedEventStore.open({ nats, stream: options.rejectedStream });
    return {
      failed,
      rejected,
      async close() {
        await failed.close();
        await rejected.close();
        await nats.close();
      },
    };
  } catch (err) {
    await nats.close();
    throw err;
  }
}
