/**
 * The waiters of a rate limiter: `acquire()` subscribers in arrival order, first in, first out.
 * A doubly linked list, so a waiter that gives its place up (unsubscribes) leaves in O(1).
 * Shared by the in-memory token bucket and the Redis send slots.
 */
import type { Subscriber } from 'rxjs';

/** A queued `acquire()`. */
export interface Waiter {
  readonly subscriber: Subscriber<void>;
  prev: Waiter | null;
  next: Waiter | null;
  /** Still in the queue (false once granted or given up). */
  queued: boolean;
}

export class WaiterQueue {
  private first: Waiter | null = null;
  private last: Waiter | null = null;
  private count = 0;

  /** The waiter served next, or null when nobody waits. */
  get head(): Waiter | null {
    return this.first;
  }

  get size(): number {
    return this.count;
  }

  /** Queues `subscriber` last. */
  push(subscriber: Subscriber<void>): Waiter {
    const w: Waiter = { subscriber, prev: this.last, next: null, queued: true };
    if (this.last === null) this.first = w;
    else this.last.next = w;
    this.last = w;
    this.count++;
    return w;
  }

  /** Takes `w` out of the queue (it must be queued). */
  remove(w: Waiter): void {
    w.queued = false;
    this.count--;
    if (w.prev === null) this.first = w.next;
    else w.prev.next = w.next;
    if (w.next === null) this.last = w.prev;
    else w.next.prev = w.prev;
    w.prev = w.next = null;
  }

  /** Takes the first waiter out and grants it its permit (emits once, completes). */
  grantHead(): void {
    const w = this.first;
    if (w === null) return;
    this.remove(w);
    w.subscriber.next();
    w.subscriber.complete();
  }
}
