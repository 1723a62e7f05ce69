/**
 * `serializeBy`: one actor per key. Values of one key are projected strictly one after
 * another; different keys run concurrently, up to a global limit.
 */
import {
  from,
  Observable,
  type ObservableInput,
  type Observer,
  type OperatorFunction,
  type Subscriber,
  type Subscription,
} from 'rxjs';

export interface SerializeByOptions<T, R> {
  /** The actor a value belongs to (e.g. its profileId). Called once per value. */
  key: (value: T) => string;
  /**
   * The work for one value; `index` counts values in arrival order from 0. The next value
   * of the same key is projected only when this one completes.
   */
  project: (value: T, index: number) => ObservableInput<R>;
  /** Most projects running at once, over all keys (≥ 1). @default Infinity */
  concurrency?: number;
}

/** The defaults of `serializeBy`, named in one place. */
export const SERIALIZE_BY_DEFAULTS = {
  concurrency: Infinity,
} as const;

/**
 * Projects each value with `project`, one at a time per `key`, concurrently across keys, and
 * merges the results: an actor per key without a group per key.
 *
 * - For one key, projects run strictly in arrival order; the next starts only when the
 *   previous one has completed.
 * - At most `concurrency` projects run at once in total. Values beyond that wait; they start
 *   in arrival order, except that a value never overtakes an earlier value of its own key.
 * - A key holds state only while it has a project running or values waiting, so memory stays
 *   flat over millions of distinct keys.
 * - Completes when the source has completed and every key's queue has drained. An error of
 *   the source or of a project (or a throwing `key`/`project`) errors the output and
 *   unsubscribes everything in flight; so does unsubscribing the output.
 *
 * @example
 * // One profile's updates are applied in order; different profiles in parallel.
 * envelopes$.pipe(
 *   serializeBy({
 *     key: (env) => env.update.profileId,
 *     project: (env) => of(env).pipe(applySnapshot({ store }), deliverExports(...)),
 *     concurrency: 2_048,
 *   }),
 * )
 */
export function serializeBy<T, R>(options: SerializeByOptions<T, R>): OperatorFunction<T, R> {
  const concurrency = options.concurrency ?? SERIALIZE_BY_DEFAULTS.concurrency;
  if (!(concurrency >= 1)) throw new RangeError(`serializeBy: concurrency must be at least 1, got ${concurrency}`);
  const { key, project } = options;
  // `new Observable` because no combination of RxJS operators does this: groupBy + concatMap
  // keeps a group per key forever (or, with a duration selector, lets a closed group's tail
  // race a new group of the same key), and mergeMap's concurrency would count groups, not
  // running projects, letting a waiting value overtake an earlier one of its own key.
  return (source) =>
    new Observable<R>((subscriber) => {
      const run = new SerializeRun<T, R>(subscriber, key, project, concurrency);
      const sourceSub = source.subscribe({
        next: (value) => run.onValue(value),
        error: (err: unknown) => subscriber.error(err),
        complete: () => run.onSourceComplete(),
      });
      return () => {
        sourceSub.unsubscribe();
        run.dispose();
      };
    });
}

// ---------------------------------------------------------------------------------------

/** Key states alive in this process, over all subscriptions. @internal For tests only. */
let liveKeyStates = 0;

/**
 * How many per-key states exist right now, over every running `serializeBy`. @internal
 * For tests that check state is dropped as soon as a key's queue is empty; not part of the
 * public API (not exported by the package barrel).
 */
export function serializeByLiveKeys(): number {
  return liveKeyStates;
}

/** A value waiting for its key (a singly linked FIFO: O(1) at both ends, no array shifts). */
interface Waiting<T> {
  value: T;
  index: number;
  next: Waiting<T> | null;
}

/**
 * The state of one key: its running project, and its waiting values. It is also the
 * Observer of its projects (one at a time), which saves an object per project.
 */
class KeyState<T, R> implements Observer<R> {
  running = false;
  /** `true` while `subscribe` on the project is on the stack (to catch a synchronous end). */
  subscribing = false;
  endedWhileSubscribing = false;
  sub: Subscription | null = null;
  head: Waiting<T> | null = null;
  tail: Waiting<T> | null = null;

  constructor(
    readonly run: SerializeRun<T, R>,
    readonly key: string,
  ) {}

  push(value: T, index: number): void {
    const w: Waiting<T> = { value, index, next: null };
    if (this.tail === null) this.head = w;
    else this.tail.next = w;
    this.tail = w;
  }

  next(value: R): void {
    this.run.subscriber.next(value);
  }

  error(err: unknown): void {
    this.run.subscriber.error(err);
  }

  complete(): void {
    if (this.subscribing) this.endedWhileSubscribing = true;
    else this.run.finished(this);
  }
}

/** Everything one subscription of `serializeBy` holds. */
class SerializeRun<T, R> {
  private readonly states = new Map<string, KeyState<T, R>>();
  /**
   * Keys whose next value may start (not running, values waiting): a binary min-heap on the
   * arrival index of that next value, so the earliest waiting value starts first.
   */
  private readonly ready: KeyState<T, R>[] = [];
  private active = 0;
  private index = 0;
  private sourceDone = false;
  private pumping = false;

  constructor(
    readonly subscriber: Subscriber<R>,
    private readonly key: (value: T) => string,
    private readonly project: (value: T, index: number) => ObservableInput<R>,
    private readonly concurrency: number,
  ) {}

  onValue(value: T): void {
    if (this.subscriber.closed) return;
    const index = this.index++;
    let k: string;
    try {
      k = this.key(value);
    } catch (err) {
      this.subscriber.error(err);
      return;
    }
    const state = this.states.get(k);
    if (state !== undefined) {
      // Running, or already waiting in `ready`: queue behind its earlier values.
      state.push(value, index);
      return;
    }
    const fresh = new KeyState<T, R>(this, k);
    this.states.set(k, fresh);
    liveKeyStates++;
    if (this.active < this.concurrency && this.ready.length === 0) {
      this.start(fresh, value, index);
    } else {
      fresh.push(value, index);
      this.heapPush(fresh);
      this.pump();
    }
  }

  onSourceComplete(): void {
    this.sourceDone = true;
    this.completeIfDone();
  }

  /** A key's project completed: start its next value, or forget the key. */
  finished(state: KeyState<T, R>): void {
    if (this.subscriber.closed) return;
    state.running = false;
    state.sub = null;
    this.active--;
    if (state.head !== null) {
      this.heapPush(state);
    } else {
      this.states.delete(state.key);
      liveKeyStates--;
    }
    this.pump();
    this.completeIfDone();
  }

  dispose(): void {
    for (const state of this.states.values()) state.sub?.unsubscribe();
    liveKeyStates -= this.states.size;
    this.states.clear();
    this.ready.length = 0;
  }

  private completeIfDone(): void {
    if (this.sourceDone && this.active === 0 && this.ready.length === 0) this.subscriber.complete();
  }

  /**
   * Starts waiting values while there is room. A loop, not recursion: a project that
   * completes synchronously only marks its key ready, and this loop picks it up, so long
   * queues of synchronous projects cannot overflow the stack.
   */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.active < this.concurrency && this.ready.length > 0 && !this.subscriber.closed) {
        const state = this.heapPop();
        const w = state.head as Waiting<T>; // in `ready` means it has a waiting value
        state.head = w.next;
        if (state.head === null) state.tail = null;
        this.start(state, w.value, w.index);
      }
    } finally {
      this.pumping = false;
    }
  }

  private start(state: KeyState<T, R>, value: T, index: number): void {
    state.running = true;
    this.active++;
    let input: ObservableInput<R>;
    try {
      input = this.project(value, index);
    } catch (err) {
      this.subscriber.error(err);
      return;
    }
    state.subscribing = true;
    state.endedWhileSubscribing = false;
    const sub = from(input).subscribe(state);
    state.subscribing = false;
    if (this.subscriber.closed) {
      // The output ended while the project was subscribing (it errored, or the consumer
      // unsubscribed from inside a synchronous emission): the teardown missed this one.
      sub.unsubscribe();
      return;
    }
    if (state.endedWhileSubscribing) this.finished(state);
    else state.sub = sub;
  }

  private heapPush(state: KeyState<T, R>): void {
    const heap = this.ready;
    let i = heap.push(state) - 1;
    const at = (state.head as Waiting<T>).index;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((heap[parent].head as Waiting<T>).index <= at) break;
      heap[i] = heap[parent];
      i = parent;
    }
    heap[i] = state;
  }

  private heapPop(): KeyState<T, R> {
    const heap = this.ready;
    const top = heap[0];
    const last = heap.pop() as KeyState<T, R>;
    const n = heap.length;
    if (n > 0) {
      const at = (last.head as Waiting<T>).index;
      let i = 0;
      for (;;) {
        let smallest = 2 * i + 1;
        if (smallest >= n) break;
        const right = smallest + 1;
        if (right < n && (heap[right].head as Waiting<T>).index < (heap[smallest].head as Waiting<T>).index) {
          smallest = right;
        }
        if ((heap[smallest].head as Waiting<T>).index >= at) break;
        heap[i] = heap[smallest];
        i = smallest;
      }
      heap[i] = last;
    }
    return top;
  }
}
