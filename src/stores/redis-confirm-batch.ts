/**
 * The confirms of one event-loop turn of the Redis snapshot store (redis-snapshot-store.ts),
 * deleted by one script: one round trip for every profile confirmed in that turn.
 */

/** Confirms collected during one tick, deleted by one script (per `max` of them). */
interface Batch {
  /** Profile ids with a confirm in the batch (an `apply` on one of them sends the batch first). */
  profiles: Set<string>;
  keys: string[];
  fields: string[];
  done: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export interface ConfirmBatcherOptions {
  /** Most confirms one script deletes; a full batch is sent at once. */
  max: number;
  /** Runs the script deleting `fields[i]` of hash `keys[i]` for every i. */
  send: (keys: string[], fields: string[]) => Promise<unknown>;
}

export class ConfirmBatcher {
  /** Confirms of this tick not sent yet. */
  private batch: Batch | null = null;
  /** Scripts sent and not answered yet (`settled` waits for them). */
  private readonly sending = new Set<Promise<void>>();

  constructor(private readonly o: ConfirmBatcherOptions) {}

  /**
   * Deletes `field` of hash `key` with every other confirm of this event-loop turn; resolves
   * once that script has run, rejects when it fails.
   */
  add(profileId: string, key: string, field: string): Promise<void> {
    let batch = this.batch;
    if (!batch) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      const fresh: Batch = { profiles: new Set(), keys: [], fields: [], done, resolve, reject };
      batch = this.batch = fresh;
      setImmediate(() => this.flush(fresh));
    }
    batch.profiles.add(profileId);
    batch.keys.push(key);
    batch.fields.push(field);
    const done = batch.done;
    if (batch.keys.length >= this.o.max) this.flush(batch);
    return done;
  }

  /**
   * Sends the pending batch now if it holds a confirm of `profileId` (an apply of that profile
   * must come after it, as if it had been sent at once: commands leave in order on one connection).
   */
  flushFor(profileId: string): void {
    if (this.batch?.profiles.has(profileId)) this.flush(this.batch);
  }

  /** Sends the pending batch and waits for every script sent. */
  async settled(): Promise<void> {
    if (this.batch) this.flush(this.batch);
    await Promise.all([...this.sending]);
  }

  /** Sends `batch` (once): one script deleting every replay record it holds. */
  private flush(batch: Batch): void {
    if (this.batch !== batch) return; // sent already (it was full, or `settled`)
    this.batch = null;
    const sent = this.o.send(batch.keys, batch.fields).then(
      () => batch.resolve(),
      (err: unknown) => batch.reject(err),
    );
    this.sending.add(sent);
    void sent.then(() => this.sending.delete(sent));
  }
}
