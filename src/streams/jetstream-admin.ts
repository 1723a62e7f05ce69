/**
 * JetStream administration: `ensureStream`, `ensureConsumer`, `createConsumer`,
 * `deleteConsumer` (used by `run`, `publish`, the sources and the pool's takeovers), and the
 * helpers they share with the source.
 */
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type ConsumerInfo,
  type JetStreamManager,
  type StreamInfo,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { NatsError } from './nats.js';
import { JETSTREAM_SOURCE_DEFAULTS } from './jetstream-defaults.js';

/** True when `err` is a JetStream API error with this code. */
export function isApiError(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

/**
 * The first stream sequence a consumer taking over from `info`'s must deliver so that nothing
 * unacknowledged is skipped: just above its ack floor. A consumer created from sequence S
 * reports an ack floor of 0 until its first ack, yet everything below S was acked before:
 * never below S.
 */
export function consumerResumePoint(info: ConsumerInfo): number {
  const c = info.config;
  const startedAt = c.deliver_policy === DeliverPolicy.StartSequence ? (c.opt_start_seq ?? 1) : 1;
  return Math.max(info.ack_floor.stream_seq + 1, startedAt);
}

/** JetStream API error code: "stream name already in use with a different configuration". */
const STREAM_NAME_IN_USE = 10058;

/** Does subject pattern `pattern` (with `*` / `>`) match every subject `subject` matches? */
export function subjectCovers(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i < s.length;
    if (i >= s.length) return false;
    if (p[i] === '*') {
      if (s[i] === '>') return false;
      continue;
    }
    if (p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

export interface EnsureStreamOptions {
  jsm: JetStreamManager;
  stream: string;
  /** The stream covers `subject` and `subject.>` (the latter for the partitioned pool). */
  subject: string;
  /** Limits for a stream this creates. @default no age / size limit */
  maxAgeMs?: number;
  maxBytes?: number;
}

/**
 * Makes sure the stream exists (file storage, limits retention) and covers `subject` and
 * `subject.>`; adds those subjects to an existing stream that lacks them.
 *
 * @example
 * const jsm = await jetstreamManager(nats.nc);
 * await ensureStream({ jsm, stream: 'PROFILES', subject: 'profiles.updates' });
 */
export async function ensureStream(options: EnsureStreamOptions): Promise<StreamInfo> {
  const { jsm, stream, subject } = options;
  const wanted = [subject, `${subject}.>`];
  let info: StreamInfo;
  try {
    info = await jsm.streams.info(stream);
  } catch (err) {
    if (!isApiError(err, JetStreamApiCodes.StreamNotFound)) throw jsError(`stream ${stream}`, err);
    try {
      return await jsm.streams.add({
        name: stream,
        subjects: wanted,
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        discard: DiscardPolicy.Old,
        ...(options.maxAgeMs ? { max_age: nanos(options.maxAgeMs) } : {}),
        ...(options.maxBytes ? { max_bytes: options.maxBytes } : {}),
      });
    } catch (addErr) {
      // Another worker created it first.
      if (!isApiError(addErr, STREAM_NAME_IN_USE)) throw jsError(`creating stream ${stream}`, addErr);
      info = await jsm.streams.info(stream).catch((e: unknown) => {
        throw jsError(`stream ${stream}`, e);
      });
    }
  }
  const have = info.config.subjects ?? [];
  const missing = wanted.filter((w) => !have.some((h) => subjectCovers(h, w)));
  if (missing.length === 0) return info;
  try {
    return await jsm.streams.update(stream, { ...info.config, subjects: [...have, ...missing] });
  } catch (err) {
    throw new NatsError(
      'ERR_JETSTREAM_CONFIG',
      `stream ${stream} does not cover ${missing.join(', ')} and cannot be extended: ${errMessage(err)}`,
      { cause: err },
    );
  }
}

export interface EnsureConsumerOptions {
  jsm: JetStreamManager;
  stream: string;
  subject: string;
  durable: string;
  /** @default 2048 */
  maxAckPending?: number;
  /** @default 30000 */
  ackWaitMs?: number;
  /**
   * When the consumer exists with messages delivered but unacknowledged (its previous owner
   * crashed or lost its lease), recreate it to deliver again from just above its ack floor,
   * in stream order. (nats-server otherwise redelivers those after `ack_wait`, out of order
   * with newer messages, which would let a profile's newer update overtake an older one.)
   * Messages acked above the floor come again too; the snapshot store's watermark skips them.
   * @default false
   */
  resumeInOrder?: boolean;
}

/**
 * Makes sure the durable pull consumer exists with explicit ack, filtering on `subject`,
 * with the given `max_ack_pending` and `ack_wait` (updated when they differ).
 *
 * Another client may create, delete or re-create the same durable meanwhile (the previous
 * owner of a pool partition finishing its own start): when a step finds the consumer changed
 * under it (gone, or there with a start it cannot update), it starts over from the consumer's
 * current state, a few times, before it gives up.
 *
 * @example
 * await ensureConsumer({ jsm, stream: 'PROFILES', subject: 'profiles.updates', durable: 'hd' });
 *
 * @throws NatsError `ERR_JETSTREAM_CONFIG` when the durable exists with another filter or is
 * not an explicit-ack pull consumer.
 */
export async function ensureConsumer(options: EnsureConsumerOptions): Promise<ConsumerInfo> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await ensureConsumerOnce(options);
    } catch (err) {
      if (!(err instanceof ConsumerChanged)) throw err;
      if (attempt >= ENSURE_CONSUMER_ATTEMPTS) throw err.error;
    }
  }
}

/** Attempts of `ensureConsumer` when the consumer keeps changing under it. */
const ENSURE_CONSUMER_ATTEMPTS = 3;

/** A step of `ensureConsumer` met a consumer that someone else changed since it was read. */
class ConsumerChanged extends Error {
  constructor(readonly error: NatsError) {
    super(error.message);
  }
}

/** JetStream API error codes meaning "a consumer with this name is already there". */
const CONSUMER_EXISTS = new Set([
  10013, // consumer name already in use
  10105, // consumer already exists and is still active
  10148, // consumer already exists (2.10+, create action)
]);
/** JetStream API error code: create/update refused (2.9 treats a create of an existing durable as an update). */
const CONSUMER_CREATE_FAILED = 10012;
/** JetStream API error code: update of a consumer that does not exist (2.10+). */
const CONSUMER_DOES_NOT_EXIST = 10149;

/**
 * Whether a failed create/update means the consumer changed since it was read: it is there
 * now (created by someone else), it is gone (deleted by someone else), or it is there with a
 * deliver policy / start sequence this call did not read ("… can not be updated").
 */
function consumerChanged(err: unknown): boolean {
  if (!(err instanceof JetStreamApiError)) return false;
  if (CONSUMER_EXISTS.has(err.code)) return true;
  if (err.code === JetStreamApiCodes.ConsumerNotFound || err.code === CONSUMER_DOES_NOT_EXIST) return true;
  return err.code === CONSUMER_CREATE_FAILED && /can ?not be updated/i.test(err.message);
}

/** `jsError`, thrown as `ConsumerChanged` when the consumer changed under the step. */
function stepError(what: string, err: unknown): Error {
  const e = jsError(what, err);
  return consumerChanged(err) ? new ConsumerChanged(e) : e;
}

/** A durable pull consumer with explicit ack on `subject`, from the stream's start or from `startSeq`. */
function pullConsumerConfig(o: { durable: string; subject: string; startSeq?: number; maxAckPending: number; ackWait: number }) {
  return {
    durable_name: o.durable,
    ack_policy: AckPolicy.Explicit,
    ...(o.startSeq === undefined ? { deliver_policy: DeliverPolicy.All } : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: o.startSeq }),
    filter_subject: o.subject,
    max_ack_pending: o.maxAckPending,
    ack_wait: o.ackWait,
  };
}

async function ensureConsumerOnce(options: EnsureConsumerOptions): Promise<ConsumerInfo> {
  const { jsm, stream, subject, durable } = options;
  const maxAckPending = options.maxAckPending ?? JETSTREAM_SOURCE_DEFAULTS.maxAckPending;
  const ackWait = nanos(options.ackWaitMs ?? JETSTREAM_SOURCE_DEFAULTS.ackWaitMs);
  const config = (startSeq?: number) => pullConsumerConfig({ durable, subject, startSeq, maxAckPending, ackWait });
  let info: ConsumerInfo | undefined;
  try {
    info = await jsm.consumers.info(stream, durable);
  } catch (err) {
    if (!isApiError(err, JetStreamApiCodes.ConsumerNotFound)) {
      throw jsError(`consumer ${stream}/${durable}`, err);
    }
  }
  if (!info) {
    try {
      return await jsm.consumers.add(stream, config());
    } catch (err) {
      throw stepError(`creating consumer ${stream}/${durable}`, err);
    }
  }
  const c = info.config;
  if (options.resumeInOrder && (info.num_ack_pending > 0 || info.num_redelivered > 0)) {
    const start = consumerResumePoint(info);
    try {
      await jsm.consumers.delete(stream, durable);
    } catch (err) {
      // Already deleted by someone else: create it from the floor read above all the same
      // (if they create it first, the add below fails and `ensureConsumer` starts over).
      if (!isApiError(err, JetStreamApiCodes.ConsumerNotFound)) {
        throw jsError(`recreating consumer ${stream}/${durable} from sequence ${start}`, err);
      }
    }
    try {
      return await jsm.consumers.add(stream, config(start));
    } catch (err) {
      throw stepError(`recreating consumer ${stream}/${durable} from sequence ${start}`, err);
    }
  }
  const filters = c.filter_subjects?.length ? c.filter_subjects : c.filter_subject ? [c.filter_subject] : [];
  if (filters.length !== 1 || filters[0] !== subject || c.deliver_subject || c.ack_policy !== AckPolicy.Explicit) {
    throw new NatsError(
      'ERR_JETSTREAM_CONFIG',
      `consumer ${stream}/${durable} exists with filter ${filters.join(',') || '(none)'}` +
        `${c.deliver_subject ? ' as a push consumer' : ''}, ack ${c.ack_policy}; ` +
        `expected a pull consumer with explicit ack on ${subject}: delete it or choose another durable`,
    );
  }
  if (c.max_ack_pending !== maxAckPending || c.ack_wait !== ackWait) {
    try {
      // (Reads the consumer again and sends its whole config back with these two changed:
      // nats-server 2.9 lets max_ack_pending and ack_wait change on a durable, not its start.)
      return await jsm.consumers.update(stream, durable, {
        max_ack_pending: maxAckPending,
        ack_wait: ackWait,
      });
    } catch (err) {
      throw stepError(`updating consumer ${stream}/${durable}`, err);
    }
  }
  return info;
}

export interface CreateConsumerOptions {
  jsm: JetStreamManager;
  stream: string;
  subject: string;
  durable: string;
  /** First stream sequence to deliver. @default every message of the stream (DeliverAll) */
  startSeq?: number;
  /** @default 2048 */
  maxAckPending?: number;
  /** @default 30000 */
  ackWaitMs?: number;
}

/**
 * Creates a durable pull consumer with explicit ack filtering on `subject`, delivering from
 * `startSeq` (or from the start of the stream).
 *
 * @throws NatsError `ERR_JETSTREAM` when nats-server refuses (one of that name with another
 * configuration is there, the stream is missing…).
 */
export async function createConsumer(options: CreateConsumerOptions): Promise<ConsumerInfo> {
  const { jsm, stream, subject, durable, startSeq } = options;
  try {
    return await jsm.consumers.add(
      stream,
      pullConsumerConfig({
        durable,
        subject,
        startSeq,
        maxAckPending: options.maxAckPending ?? JETSTREAM_SOURCE_DEFAULTS.maxAckPending,
        ackWait: nanos(options.ackWaitMs ?? JETSTREAM_SOURCE_DEFAULTS.ackWaitMs),
      }),
    );
  } catch (err) {
    throw jsError(`creating consumer ${stream}/${durable}${startSeq !== undefined ? ` from sequence ${startSeq}` : ''}`, err);
  }
}

/**
 * Deletes a durable consumer. Resolves true when it deleted it, false when there was none
 * (already deleted, or its stream is gone).
 *
 * @throws NatsError `ERR_JETSTREAM` on any other failure.
 */
export async function deleteConsumer(jsm: JetStreamManager, stream: string, durable: string): Promise<boolean> {
  try {
    await jsm.consumers.delete(stream, durable);
    return true;
  } catch (err) {
    if (isApiError(err, JetStreamApiCodes.ConsumerNotFound) || isApiError(err, JetStreamApiCodes.StreamNotFound)) return false;
    throw jsError(`deleting consumer ${stream}/${durable}`, err);
  }
}

export function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function jsError(what: string, err: unknown): NatsError {
  if (err instanceof NatsError) return err;
  return new NatsError('ERR_JETSTREAM', `${what}: ${errMessage(err)}`, { cause: err });
}

