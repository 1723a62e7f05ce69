/**
 * `recordDelivered`: the versions of delivered exports are recorded before the envelope goes
 * on to its acknowledgement — in virtual time.
 */
import { describe, expect, it } from 'vitest';
import { map } from 'rxjs';
import type { TestScheduler } from 'rxjs/testing';
import { StoreError } from '../src/errors.js';
import type { SettledEnvelope } from '../src/operators/deliver-exports.js';
import { recordDelivered } from '../src/operators/record-delivered.js';
import type { DeliveryOutcome } from '../src/sinks/types.js';
import { job, later, scheduler } from './queue-stages.support.js';

type Mark = { dataflowId: string; profileId: string; version: number };

function marks(ts: TestScheduler, log: string[], o: { down?: boolean; throwing?: boolean } = {}): { record(m: readonly Mark[]): Promise<void> } {
  return {
    record: (m) => {
      if (o.throwing) throw new Error('marks broken');
      log.push(`${ts.now()} record ${m.map((x) => `${x.profileId}@${x.version}`).join(',')}`);
      return later(ts, 2, () => {
        if (o.down) throw new StoreError('marks store down');
      });
    },
  };
}

const env = (name: string, outcomes: DeliveryOutcome[]): SettledEnvelope => ({ name, outcomes }) as unknown as SettledEnvelope;
const delivered = (p: string, version?: number): DeliveryOutcome => ({ status: 'delivered', job: job(p, { version }), attempts: 1, statusCode: 200 });
const queued = (p: string, version: number): DeliveryOutcome => ({ status: 'queued', job: job(p, { version }), attempts: 1 });
const nameOf = map((e: SettledEnvelope) => (e as unknown as { name: string }).name);

describe('recordDelivered', () => {
  it('empty: completes with the source', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SettledEnvelope>('--|');
      expectObservable(src.pipe(recordDelivered({ marks: marks(ts, []) }))).toBe('--|');
      expectSubscriptions(src.subscriptions).toBe('^-!');
    });
  });

  it('one: an envelope with a delivered export goes on once its version is recorded', () => {
    const ts = scheduler();
    const log: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<SettledEnvelope>('a|', { a: env('A', [delivered('p', 7)]) }).pipe(recordDelivered({ marks: marks(ts, log) }), nameOf)).toBe('--(a|)', { a: 'A' });
    });
    expect(log).toEqual(['0 record p@7']);
  });

  it('many: only delivered exports with a version are recorded, one call per envelope; others pass at once', () => {
    const ts = scheduler();
    const log: string[] = [];
    const out: string[] = [];
    ts.run(({ cold }) => {
      const src = cold<SettledEnvelope>('abcd|', {
        a: env('A', [delivered('p', 1), delivered('q', 2), queued('r', 3)]),
        b: env('B', [queued('r', 4)]),
        c: env('C', [delivered('s')]),
        d: env('D', []),
      });
      src.pipe(recordDelivered({ marks: marks(ts, log) }), nameOf).subscribe({ next: (v) => out.push(`${ts.now()} ${v}`), complete: () => out.push(`${ts.now()} |`) });
    });
    expect(log).toEqual(['0 record p@1,q@2']);
    expect(out).toEqual(['1 B', '2 C', '2 A', '3 D', '4 |']);
  });

  it('error: a source error passes through; a marks store that fails is reported and the envelope still goes on', () => {
    const ts = scheduler();
    const errors: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<SettledEnvelope>('-#').pipe(recordDelivered({ marks: marks(ts, []) }))).toBe('-#');
      const op = recordDelivered({ marks: marks(ts, [], { down: true }), onError: (err) => errors.push((err as StoreError).code) });
      expectObservable(cold<SettledEnvelope>('a|', { a: env('A', [delivered('p', 1)]) }).pipe(op, nameOf)).toBe('--(a|)', { a: 'A' });
    });
    expect(errors).toEqual(['ERR_STORE']);
  });

  it('never-ending: does not complete while the source does not', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold<SettledEnvelope>('a-', { a: env('A', [delivered('p', 1)]) }).pipe(recordDelivered({ marks: marks(ts, []) }), nameOf)).toBe('--a', { a: 'A' });
    });
  });

  it('early unsubscribe: a record answered after the unsubscription emits nothing', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const src = cold<SettledEnvelope>('a--|', { a: env('A', [delivered('p', 1)]) });
      expectObservable(src.pipe(recordDelivered({ marks: marks(ts, []) })), '-!').toBe('--');
      expectSubscriptions(src.subscriptions).toBe('^!');
    });
  });

  it('throwing callback: a marks store that throws synchronously goes to onError; the envelope goes on at once', () => {
    const ts = scheduler();
    const errors: string[] = [];
    ts.run(({ cold, expectObservable }) => {
      const op = recordDelivered({ marks: marks(ts, [], { throwing: true }), onError: (err) => errors.push((err as Error).message) });
      expectObservable(cold<SettledEnvelope>('a|', { a: env('A', [delivered('p', 1)]) }).pipe(op, nameOf)).toBe('a|', { a: 'A' });
    });
    expect(errors).toEqual(['marks broken']);
  });
});
