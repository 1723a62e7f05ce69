/**
 * `profileGate`: the per-profile actor of the chain, as a gate around the stages that must
 * stay in order for one profile.
 */
import { Observable, type MonoTypeOperatorFunction, type Subscriber } from 'rxjs';

export interface ProfileGateOptions<T> {
  /** The actor a value belongs to (its profileId). Called on entering and on leaving. */
  key: (value: T) => string;
  /** Most values inside the gate at once, over all keys (≥ 1). @default Infinity */
  maxInside?: number;
}

/** The two ends of a gate: pipe `enter()` before the ordered stages and `leave()` after them. */
export interface ProfileGate<T> {
  /**
   * Lets a value in when no earlier value of its key is inside and fewer than `maxInside`
   * values are; otherwise it waits (a key's values in arrival order; waiting keys in the
   * order they became free). Completes once its source has completed and nothing waits.
   */
  enter(): MonoTypeOperatorFunction<T>;
  /** Passes each value on, then lets it out of the gate (its key's next value may enter). */
  leave<U extends T = T>(): MonoTypeOperatorFunction<U>;
  /** Values inside right now. */
  readonly inside: number;
}

/**
 * A gate per key: the values of one key go through the stages between `enter()` and
 * `leave()` strictly one after another; values of different keys concurrently, at most
 * `maxInside` at once. Memory: a key holds state only while one of its values is inside or
 * waiting, so millions of distinct profiles cost nothing once they are through. Per value the
 * cost is a map lookup on each side, not an inner Observable.
 *
 * Every value that entered must reach `leave()` (a stage in between must never drop a value:
 * mark it and let it through instead), or its key stays closed. Unsubscribing from `enter()`
 * forgets everything waiting. One gate serves one subscription of its chain: build it inside
 * `defer` when the chain may be subscribed more than once.
 *
 * @example
 * const gate = profileGate<Envelope>({ key: (e) => e.update.profileId, maxInside: 1_024 });
 * envelopes$.pipe(gate.enter(), applySnapshot({ store }), acknowledge({ store }), gate.leave())
 */
export function profileGate<T>(options: ProfileGateOptions<T>): ProfileGate<T> {
  const maxInside = options.maxInside ?? Infinity;
  if (!(maxInside >= 1)) throw new RangeError(`profileGate: maxInside must be at least 1, got ${maxInside}`);
  return new Gate<T>(options.key, maxInside);
}

/** A value waiting: a singly linked FIFO node (per key, and in the ready list). */
interface Waiting<T> {
  value: T;
  next: Waiting<T> | null;
}

/** The keys present: a value inside or ready, and the values queued behind it. */
interface KeyQueue<T> {
  head: Waiting<T> | null;
  tail: Waiting<T> | null;
}

class Gate<T> implements ProfileGate<T> {
  inside = 0;
  private readonly keys = new Map<string, KeyQueue<T>>();
  /** Values whose key is free, waiting for room (at most one per key). */
  private readyHead: Waiting<T> | null = null;
  private readyTail: Waiting<T> | null = null;
  /** Values waiting, ready or queued behind their key. */
  private waiting = 0;
  private out: Subscriber<T> | null = null;
  private sourceDone = false;
  private pumping = false;

  constructor(
    private readonly key: (value: T) => string,
    private readonly maxInside: number,
  ) {}

  enter(): MonoTypeOperatorFunction<T> {
    return (source) =>
      new Observable<T>((subscriber) => {
        this.out = subscriber;
        const sub = source.subscribe({
          next: (value) => this.arrive(value),
          error: (err: unknown) => subscriber.error(err),
          complete: () => {
            this.sourceDone = true;
            this.completeIfDone();
          },
        });
        return () => {
          sub.unsubscribe();
          this.keys.clear();
          this.readyHead = this.readyTail = null;
          this.waiting = 0;
          this.out = null;
        };
      });
  }

  leave<U extends T = T>(): MonoTypeOperatorFunction<U> {
    return (source) =>
      new Observable<U>((subscriber) =>
        source.subscribe({
          next: (value) => {
            subscriber.next(value);
            this.release(value);
          },
          error: (err: unknown) => subscriber.error(err),
          complete: () => subscriber.complete(),
        }),
      );
  }

  private arrive(value: T): void {
    let k: string;
    try {
      k = this.key(value);
    } catch (err) {
      this.out?.error(err);
      return;
    }
    const queue = this.keys.get(k);
    if (queue !== undefined) {
      // An earlier value of this key is inside (or ready): queue behind it.
      const w: Waiting<T> = { value, next: null };
      if (queue.tail === null) queue.head = w;
      else queue.tail.next = w;
      queue.tail = w;
      this.waiting++;
      return;
    }
    this.keys.set(k, { head: null, tail: null });
    if (this.inside < this.maxInside && this.readyHead === null) {
      this.inside++;
      this.out?.next(value);
    } else {
      this.pushReady(value);
      this.pump();
    }
  }

  private release(value: T): void {
    if (this.out === null) return;
    this.inside--;
    const k = this.key(value);
    const queue = this.keys.get(k);
    if (queue !== undefined && queue.head !== null) {
      const w = queue.head;
      queue.head = w.next;
      if (queue.head === null) queue.tail = null;
      this.waiting--;
      this.pushReady(w.value);
    } else {
      this.keys.delete(k);
    }
    this.pump();
    this.completeIfDone();
  }

  private pushReady(value: T): void {
    const w: Waiting<T> = { value, next: null };
    if (this.readyTail === null) this.readyHead = w;
    else this.readyTail.next = w;
    this.readyTail = w;
    this.waiting++;
  }

  /** Lets ready values in while there is room: a loop, so a synchronous chain cannot recurse deeply. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.inside < this.maxInside && this.readyHead !== null && this.out !== null && !this.out.closed) {
        const w = this.readyHead;
        this.readyHead = w.next;
        if (this.readyHead === null) this.readyTail = null;
        this.waiting--;
        this.inside++;
        this.out.next(w.value);
      }
    } finally {
      this.pumping = false;
    }
  }

  private completeIfDone(): void {
    if (this.sourceDone && this.waiting === 0) this.out?.complete();
  }
}
