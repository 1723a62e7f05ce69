/**
 * The local store's run lock: one `run` per local store. LMDB itself lets any number of
 * processes write, so this lock is what keeps two workers from reading the same file source
 * into one store. It is a file `run.lock` in the store's folder holding the owner's pid,
 * created exclusively; a lock whose pid is no longer alive (a `run` killed with SIGKILL) is
 * taken over.
 */
import { link, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StoreLockedError } from '../errors.js';

export { StoreLockedError };

export interface RunLock {
  readonly file: string;
  release(): Promise<void>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes the run lock of the store folder `dir`.
 *
 * @throws {StoreLockedError} when a live process holds it
 * @example
 * const lock = await acquireRunLock('/var/lib/http-destination/http-destination.state');
 * try { … } finally { await lock.release(); }
 */
export async function acquireRunLock(dir: string): Promise<RunLock> {
  const file = join(dir, 'run.lock');
  if (held.has(file)) throw new StoreLockedError(dir, process.pid);
  held.add(file);
  try {
    return await take(dir, file);
  } catch (err) {
    held.delete(file);
    throw err;
  }
}

/** Locks held by this process (a pid in the file equal to ours but not here is a previous life's). */
const held = new Set<string>();

async function take(dir: string, file: string): Promise<RunLock> {
  // Written whole to a private temp file, then linked into place: `link` fails when the lock
  // exists, so no process ever reads a half-written pid.
  const tmp = join(dir, `.run.lock.${process.pid}`);
  await writeFile(tmp, `${process.pid}\n`, { mode: 0o600 });
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(tmp, file);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 5) throw err;
      }
      const owner = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10);
      if (Number.isSafeInteger(owner) && owner > 0 && owner !== process.pid && alive(owner)) {
        throw new StoreLockedError(dir, owner);
      }
      // A stale lock (its process is gone) or an unreadable one: take it over.
      await unlink(file).catch(() => undefined);
    }
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  let released = false;
  return {
    file,
    async release() {
      if (released) return;
      released = true;
      held.delete(file);
      const owner = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10);
      if (owner === process.pid) await unlink(file).catch(() => undefined);
    },
  };
}
