import { describe, expect, it } from 'vitest';
import { lastValueFrom, Subject, toArray, type Subscription } from 'rxjs';
import { idempotencyKey } from '../../src/domain/keys.js';
import type { DataflowRules, MembershipStatus } from '../../src/domain/types.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { ExportJob } from '../../src/sinks/types.js';
import type { Envelope } from '../../src/streams/envelope.js';
import type { SourceMessage } from '../../src/streams/types.js';
import { MemorySnapshotStore } from '../../src/stores/memory-snapshot-store.js';
import { BACKFILL_DEFAULTS, backfillId, backfillSource, type BackfillOptions } from '../../src/streams/backfill.js';
import { exportPipeline } from '../../src/worker/pipeline.js';
import { fakeMessage } from '../support/messages.js';
import { fakeSink, openLimiter } from '../support/sinks.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, ms = 3_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(2);
  }
}

const flow = (id: string, audiences: Array<[string, number]>): DataflowRules => ({
  id,
  destinationId: 'dest-1',
  audiences: audiences.map(([a, createdAt]) => ({ id: a, mappingCreatedAt: createdAt, mappingUpdatedAt: createdAt })),
  attributes: [],
  includeSegmentNames: false,
  includeSegmentTimestamps: false,
});

let seq = 0;
/** Sets the membership of `profileId` in `audienceId` through the store's ordinary apply. */
async function member(store: MemorySnapshotStore, profileId: string, audienceId: string, status: MembershipStatus = 'realized'): Promise<void> {
  const key = `setup:${++seq}`;
  await store.apply({ profileId, segmentMembership: { ups: { [audienceId]: { status } } } }, { key, seq });
  await store.confirm(profileId, key);
}

async function members(store: MemorySnapshotStore, audienceId: string, ids: string[]): Promise<void> {
  for (const id of ids) await member(store, id, audienceId);
}

interface Run {
  got: Envelope[];
  sub: Subscription;
  done: () => boolean;
  error: () => unknown;
}

function subscribe(options: BackfillOptions, onItem?: (e: Envelope, run: Run) => void): Run {
  const got: Envelope[] = [];
  let done = false;
  let error: unknown;
  const run: Run = { got, sub: undefined as unknown as Subscription, done: () => done, error: () => error };
  run.sub = backfillSource(options).subscribe({
    next: (e) => {
      got.push(e);
      onItem?.(e, run);
    },
    complete: () => (done = true),
    error: (e: unknown) => (error = e),
  });
  return run;
}

const ackAll = (e: Envelope): void => e.msg.ack();

/**
 * A backfill in pages of 2 cut short like a crash: page 1 is acked (and checkpointed), the
 * first item of page 2 arrives and the source is unsubscribed before acking it.
 */
async function stopAfterFirstPage(options: Pick<BackfillOptions, 'store' | 'dataflows'>): Promise<Run> {
  const run = subscribe({ ...options, pageSize: 2 }, (e, r) => {
    if (r.got.length <= 2) e.msg.ack();
    else r.sub.unsubscribe();
  });
  await until(() => run.got.length === 3);
  await sleep(30);
  return run;
}
const label = (e: Envelope): string => `${e.backfill?.dataflowId}/${e.backfill?.audienceId}/${e.update.profileId}`;

describe('backfillSource', () => {
  it('emits one envelope per member of each mapped audience, and completes', async () => {
    const store = new MemorySnapshotStore();
    await members(store, 'aud-1', ['p-1', 'p-2', 'p-3']);
    await members(store, 'aud-2', ['q-1']);
    await member(store, 'p-4', 'aud-1');
    await member(store, 'p-4', 'aud-1', 'exited'); // no longer a member
    await member(store, 'x-1', 'aud-9'); // an unmapped audience
    const dataflows = [flow('flow-1', [['aud-1', 100]]), flow('flow-2', [['aud-2', 200], ['aud-1', 300]])];
    const progress: string[] = [];
    const run = subscribe({ store, dataflows, onProgress: (e) => progress.push(`${e.phase} ${e.id} ${e.sent}`) }, ackAll);
    await until(run.done);
    expect(run.got.map(label)).toEqual([
      'flow-1/aud-1/p-1',
      'flow-1/aud-1/p-2',
      'flow-1/aud-1/p-3',
      'flow-2/aud-2/q-1',
      'flow-2/aud-1/p-1',
      'flow-2/aud-1/p-2',
      'flow-2/aud-1/p-3',
    ]);
    expect(run.got[0]).toEqual({
      msg: expect.objectContaining({ data: '', key: 'backfill:flow-1:aud-1:p-1', seq: 1 }),
      update: { profileId: 'p-1' },
      backfill: { dataflowId: 'flow-1', audienceId: 'aud-1' },
    });
    // Increasing seqs; keys stable per (dataflow, audience, profile).
    expect(run.got.map((e) => e.msg.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(progress).toEqual([
      'start flow-1|aud-1|100 0',
      'done flow-1|aud-1|100 3',
      'start flow-2|aud-2|200 0',
      'done flow-2|aud-2|200 1',
      'start flow-2|aud-1|300 0',
      'done flow-2|aud-1|300 3',
    ]);
    expect(run.error()).toBeUndefined();
  });

  it('marks an audience without members done at once', async () => {
    const store = new MemorySnapshotStore();
    const run = subscribe({ store, dataflows: [flow('flow-1', [['aud-empty', 1]])] }, ackAll);
    await until(run.done);
    expect(run.got).toEqual([]);
    expect(await store.getBackfill(backfillId('flow-1', 'aud-empty', 1))).toEqual({ done: true, cursor: '0', sent: 0 });
  });

  it('saves the page checkpoint only after every item of the page is acked, and reads the next page only then', async () => {
    const store = new MemorySnapshotStore();
    await members(store, 'aud-1', ['p-1', 'p-2', 'p-3', 'p-4', 'p-5']);
    const id = backfillId('flow-1', 'aud-1', 1);
    const run = subscribe({ store, dataflows: [flow('flow-1', [['aud-1', 1]])], pageSize: 2 });
    await until(() => run.got.length === 2);
    await sleep(30);
    expect(run.got).toHaveLength(2);
    expect(await store.getBackfill(id)).toEqual({ done: false, cursor: '0', sent: 0 });
    run.got[1].msg.ack();
    run.got[1].msg.ack(); // twice: counts once
    await sleep(30);
    expect(run.got).toHaveLength(2);
    expect(await store.getBackfill(id)).toEqual({ done: false, cursor: '0', sent: 0 });
    run.got[0].msg.ack();
    await until(() => run.got.length === 4);
    expect(await store.getBackfill(id)).toMatchObject({ done: false, cursor: expect.not.stringMatching(/^0$/), sent: 2 });
    run.got[2].msg.ack();
    run.got[3].msg.ack();
    await until(() => run.got.length === 5);
    expect(await store.getBackfill(id)).toMatchObject({ done: false, cursor: expect.not.stringMatching(/^0$/), sent: 4 });
    expect(run.done()).toBe(false);
    run.got[4].msg.ack();
    await until(run.done);
    expect(run.got.map((e) => e.update.profileId)).toEqual(['p-1', 'p-2', 'p-3', 'p-4', 'p-5']);
    expect(await store.getBackfill(id)).toEqual({ done: true, cursor: '0', sent: 5 });
  });

  it('never repeats a finished backfill: a second source over the same store emits nothing', async () => {
    const store = new MemorySnapshotStore();
    await members(store, 'aud-1', ['p-1', 'p-2']);
    const dataflows = [flow('flow-1', [['aud-1', 1]])];
    const first = subscribe({ store, dataflows, pageSize: 1 }, ackAll);
    await until(first.done);
    expect(first.got).toHaveLength(2);
    expect(await store.getBackfill(backfillId('flow-1', 'aud-1', 1))).toEqual({ done: true, cursor: '0', sent: 2 });
    await member(store, 'p-3', 'aud-1'); // joins later: its own update exports it, not a backfill
    const progress: string[] = [];
    const second = subscribe({ store, dataflows, onProgress: (e) => progress.push(e.phase) }, ackAll);
    await until(second.done);
    expect(second.got).toEqual([]);
    expect(progress).toEqual([]);
    // A new mapping of the same audience (another mappingCreatedAt) is backfilled again.
    const remapped = subscribe({ store, dataflows: [flow('flow-1', [['aud-1', 2]])] }, ackAll);
    await until(remapped.done);
    expect(remapped.got.map((e) => e.update.profileId)).toEqual(['p-1', 'p-2', 'p-3']);
  });

  it('resumes from the stored cursor: a new source continues after the last checkpointed page', async () => {
    const store = new MemorySnapshotStore();
    await members(store, 'aud-1', ['p-1', 'p-2', 'p-3', 'p-4', 'p-5']);
    const dataflows = [flow('flow-1', [['aud-1', 1]])];
    // The first source: page 1 is acked; the first item of page 2 arrives and the worker stops.
    const first = await stopAfterFirstPage({ store, dataflows });
    expect(first.got.map((e) => e.update.profileId)).toEqual(['p-1', 'p-2', 'p-3']);
    expect(first.done()).toBe(false);
    expect(await store.getBackfill(backfillId('flow-1', 'aud-1', 1))).toMatchObject({ done: false, cursor: expect.not.stringMatching(/^0$/), sent: 2 });

    const progress: string[] = [];
    const second = subscribe({ store, dataflows, pageSize: 2, onProgress: (e) => progress.push(`${e.phase} ${e.sent}`) }, ackAll);
    await until(second.done);
    expect(second.got.map((e) => e.update.profileId)).toEqual(['p-3', 'p-4', 'p-5']);
    expect(progress).toEqual(['resume 2', 'progress 4', 'done 5']);
    expect(await store.getBackfill(backfillId('flow-1', 'aud-1', 1))).toEqual({ done: true, cursor: '0', sent: 5 });
  });

  it('exports every member present for the whole scan, even when another member leaves between pages', async () => {
    const store = new MemorySnapshotStore();
    await members(store, 'aud-1', ['p-1', 'p-2', 'p-3', 'p-4', 'p-5']);
    const run = subscribe({ store, dataflows: [flow('flow-1', [['aud-1', 1]])], pageSize: 2 });
    await until(() => run.got.length === 2);
    // p-1 (already sent) exits the audience before its page is checkpointed.
    await member(store, 'p-1', 'aud-1', 'exited');
    run.got[0].msg.ack();
    run.got[1].msg.ack();
    while (!run.done()) {
      for (const e of run.got) e.msg.ack();
      await sleep(2);
    }
    // p-3, p-4 and p-5 were members all along: each is backfilled (SPEC §8).
    expect(new Set(run.got.map((e) => e.update.profileId))).toEqual(new Set(['p-1', 'p-2', 'p-3', 'p-4', 'p-5']));
  });

  it('emits a nak\'ed item again after the delay, and checkpoints only once it is acked', async () => {
    const store = new MemorySnapshotStore();
    await members(store, 'aud-1', ['p-1', 'p-2']);
    const id = backfillId('flow-1', 'aud-1', 1);
    const run = subscribe({ store, dataflows: [flow('flow-1', [['aud-1', 1]])] });
    await until(() => run.got.length === 2);
    run.got[1].msg.ack();
    const t0 = Date.now();
    run.got[0].msg.nak(40);
    await sleep(10);
    expect(run.got).toHaveLength(2);
    await until(() => run.got.length === 3);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(35);
    expect(run.got[2]).toBe(run.got[0]);
    expect(await store.getBackfill(id)).toEqual({ done: false, cursor: '0', sent: 0 });
    run.got[2].msg.ack();
    await until(run.done);
    expect(await store.getBackfill(id)).toEqual({ done: true, cursor: '0', sent: 2 });
    expect(BACKFILL_DEFAULTS.retryDelayMs).toBe(1_000);
  });

  it('drops a pending redelivery and emits nothing more when unsubscribed', async () => {
    const store = new MemorySnapshotStore();
    await members(store, 'aud-1', ['p-1', 'p-2', 'p-3']);
    const run = subscribe({ store, dataflows: [flow('flow-1', [['aud-1', 1]])], pageSize: 1 });
    await until(() => run.got.length === 1);
    run.got[0].msg.nak(20);
    run.sub.unsubscribe();
    run.got[0].msg.ack();
    await sleep(60);
    expect(run.got).toHaveLength(1);
    // Unsubscribed before the page's checkpoint: nothing was recorded past the start.
    expect(await store.getBackfill(backfillId('flow-1', 'aud-1', 1))).toEqual({ done: false, cursor: '0', sent: 0 });
  });

  it('errors when the store fails (bookkeeping or member scan)', async () => {
    const failing = new MemorySnapshotStore();
    failing.getBackfill = () => Promise.reject(new Error('redis down'));
    const a = subscribe({ store: failing, dataflows: [flow('flow-1', [['aud-1', 1]])] });
    await until(() => a.error() !== undefined);
    expect((a.error() as Error).message).toBe('redis down');

    const scanFails = new MemorySnapshotStore();
    await members(scanFails, 'aud-1', ['p-1']);
    scanFails.scanMembers = () => Promise.reject(new Error('scan failed'));
    const b = subscribe({ store: scanFails, dataflows: [flow('flow-1', [['aud-1', 1]])] });
    await until(() => b.error() !== undefined);
    expect((b.error() as Error).message).toBe('scan failed');
    expect(b.got).toEqual([]);

    const checkpointFails = new MemorySnapshotStore();
    await members(checkpointFails, 'aud-1', ['p-1']);
    let calls = 0;
    const set = checkpointFails.setBackfill.bind(checkpointFails);
    // The first state is written by beginBackfill; the first setBackfill is the page checkpoint.
    checkpointFails.setBackfill = (id, state) => (++calls === 1 ? Promise.reject(new Error('write failed')) : set(id, state));
    const c = subscribe({ store: checkpointFails, dataflows: [flow('flow-1', [['aud-1', 1]])] }, ackAll);
    await until(() => c.error() !== undefined);
    expect((c.error() as Error).message).toBe('write failed');
    expect(c.done()).toBe(false);
  });

  it('reads the members frozen when the backfill began: one entering later is not an item, one leaving later still is', async () => {
    const store = new MemorySnapshotStore();
    await members(store, 'aud-1', ['p-1', 'p-2', 'p-3', 'p-4', 'p-5']);
    const progress: string[] = [];
    const run = subscribe({ store, dataflows: [flow('flow-1', [['aud-1', 1]])], pageSize: 2, onProgress: (e) => progress.push(e.phase) });
    await until(() => run.got.length === 2);
    // After the first page: entries sorting before, between and after the members, and an exit.
    for (const id of ['p-0', 'p-25', 'p-9']) await member(store, id, 'aud-1');
    await member(store, 'p-4', 'aud-1', 'exited');
    while (!run.done()) {
      for (const e of run.got) e.msg.ack();
      await sleep(2);
    }
    expect(run.got.map((e) => e.update.profileId)).toEqual(['p-1', 'p-2', 'p-3', 'p-4', 'p-5']);
    expect(progress).toEqual(['start', 'progress', 'progress', 'done']);
    expect(await store.getBackfill(backfillId('flow-1', 'aud-1', 1))).toEqual({ done: true, cursor: '0', sent: 5 });
  });

  it('a resumed backfill reads the same frozen members, whatever changed while it was stopped', async () => {
    const store = new MemorySnapshotStore();
    await members(store, 'aud-1', ['p-1', 'p-2', 'p-3', 'p-4', 'p-5']);
    const dataflows = [flow('flow-1', [['aud-1', 1]])];
    const first = await stopAfterFirstPage({ store, dataflows });
    // While no worker runs: p-6 enters, p-5 leaves.
    await member(store, 'p-6', 'aud-1');
    await member(store, 'p-5', 'aud-1', 'exited');
    const progress: string[] = [];
    const second = subscribe({ store, dataflows, pageSize: 2, onProgress: (e) => progress.push(`${e.phase} ${e.sent}`) }, ackAll);
    await until(second.done);
    expect(second.got.map((e) => e.update.profileId)).toEqual(['p-3', 'p-4', 'p-5']);
    expect(progress).toEqual(['resume 2', 'progress 4', 'done 5']);
  });

  it('drops the frozen members once done; a frozen copy found gone on resume is made again and the scan restarts', async () => {
    const store = new MemorySnapshotStore();
    await members(store, 'aud-1', ['p-1', 'p-2', 'p-3']);
    const id = backfillId('flow-1', 'aud-1', 1);
    const dataflows = [flow('flow-1', [['aud-1', 1]])];
    const first = await stopAfterFirstPage({ store, dataflows });
    await expect(store.scanMembers('aud-1', { cursor: '0', count: 10, frozenAs: id })).resolves.toEqual({ ids: ['p-1', 'p-2', 'p-3'], cursor: '0' });
    // The copy is lost (a store that lost data), and p-4 entered meanwhile.
    (store as unknown as { frozen: Map<string, string[]> }).frozen.delete(id); // reaching in: the only way to lose it
    await member(store, 'p-4', 'aud-1');
    const progress: string[] = [];
    const second = subscribe({ store, dataflows, pageSize: 2, onProgress: (e) => progress.push(`${e.phase} ${e.sent}`) }, ackAll);
    await until(second.done);
    // Frozen again, from the start: duplicates (p-1, p-2), never a member missed.
    expect(progress).toEqual(['restart 2', 'progress 4', 'done 6']);
    expect(second.got.map((e) => e.update.profileId)).toEqual(['p-1', 'p-2', 'p-3', 'p-4']);
    expect(await store.getBackfill(id)).toEqual({ done: true, cursor: '0', sent: 6 });
    await expect(store.scanMembers('aud-1', { cursor: '0', count: 10, frozenAs: id })).rejects.toMatchObject({ code: 'ERR_STORE' });
  });

  it('in the pipeline, a profile entering during the backfill is exported once, by its own update; one leaving is not backfilled', async () => {
    const store = new MemorySnapshotStore();
    await members(store, 'aud-1', ['p-1', 'p-2', 'p-3', 'p-4', 'p-5']);
    const dataflows = [flow('flow-1', [['aud-1', 1]])];
    const live = new Subject<SourceMessage>();
    const liveEvents = [
      { profileId: 'p-0', eventId: 'e-0', segmentMembership: { ups: { 'aud-1': { status: 'realized' as const } } } },
      { profileId: 'p-9', eventId: 'e-9', segmentMembership: { ups: { 'aud-1': { status: 'realized' as const } } } },
      { profileId: 'p-5', eventId: 'e-5', segmentMembership: { ups: { 'aud-1': { status: 'exited' as const } } } },
    ];
    const jobs: ExportJob[] = [];
    const sink = fakeSink(() => ({ delayMs: 20 }), {
      onAttempt: (job) => {
        jobs.push(job);
        // The first export (a backfill item of page 1) lets the live updates in, and the page
        // is acked (and the next one read) only after they were applied.
        if (jobs.length === 1) {
          liveEvents.forEach((e, i) => live.next(fakeMessage(JSON.stringify(e), i + 1)));
          live.complete();
        }
      },
    });
    const settled = await lastValueFrom(
      live.pipe(
        exportPipeline({
          dataflows,
          audiences: [{ id: 'aud-1', name: 'A', mergePolicyId: 'mp-1', createdAt: 1, updatedAt: 1, origin: 'segmentation' }],
          store,
          rejected: { put: () => Promise.resolve(), list: () => Promise.resolve([]), close: () => Promise.resolve() },
          sinkFor: () => sink,
          limiterFor: () => openLimiter,
          metrics: new Metrics(),
          logger: createLogger({ level: 'silent' }),
          concurrency: 4,
          maxEventBytes: 1_048_576,
          backfill$: backfillSource({ store, dataflows, pageSize: 2 }),
        }),
        toArray(),
      ),
    );
    expect(settled.filter((s) => s.backfill)).toHaveLength(5); // every frozen member is an item…
    const key = (profileId: string, event: string): string => idempotencyKey({ dataflowId: 'flow-1', profileId, event });
    const exported = (profileId: string): string[] => jobs.filter((j) => j.profileId === profileId).map((j) => j.idempotencyKey);
    // …exported while still in the audience; p-5 left before its page: only its exit goes out.
    for (const id of ['p-1', 'p-2', 'p-3', 'p-4']) expect(exported(id)).toEqual([key(id, `backfill:flow-1:aud-1:${id}`)]);
    expect(exported('p-5')).toEqual([key('p-5', 'event:e-5')]);
    // Entered during the backfill: exported once, by the live path.
    expect(exported('p-0')).toEqual([key('p-0', 'event:e-0')]);
    expect(exported('p-9')).toEqual([key('p-9', 'event:e-9')]);
    expect(jobs).toHaveLength(7);
  });
});
