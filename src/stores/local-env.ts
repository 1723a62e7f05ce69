/**
 * The local store's LMDB environment: one folder on this host (`store.path`, default
 * `http-destination.state` beside the config file) holding `data.mdb` and LMDB's own
 * `data.mdb-lock`. Every part of the local store (snapshots, memberships, backfills, read
 * positions, failed requests, rejected events, dataflow figures, active alerts) is a named
 * database in this one environment, so one process opens it once, whatever part asks first
 * (reference counted here).
 *
 * LMDB is multi-process safe: readers never block, one writer at a time (its own lock), so
 * `run`, `failed list`, `failed replay` and `rejected list` can use the folder at once.
 */
import { closeSync, chmodSync, mkdirSync, openSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { StoreError } from '../errors.js';

/** The named databases of the local store. */
export type LocalDbName = 'profiles' | 'replays' | 'members' | 'backfills' | 'frozen' | 'positions' | 'failed' | 'rejected' | 'meta' | 'figures' | 'alerts' | 'retries' | 'delivered';

export interface LocalEnv {
  /** The store's folder (absolute). */
  readonly path: string;
  readonly root: RootDatabase<unknown, string>;
  /**
   * The named database `name`. Values are JSON (`json`), or strings the caller encodes
   * itself (`string`: the snapshot store writes the JSON text it already has, see
   * local-snapshot-store.ts); a database keeps the encoding it was first opened with here.
   */
  db(name: LocalDbName, encoding?: 'json' | 'string'): Database<unknown, string>;
  /** Releases this reference; the environment closes (after its pending writes) with the last one. */
  release(): Promise<void>;
}

interface Shared {
  root: RootDatabase<unknown, string>;
  dbs: Map<LocalDbName, Database<unknown, string>>;
  refs: number;
}

const opened = new Map<string, Shared>();

/** Creates `file` with mode 0600 when missing (LMDB would create it 0644 under the usual umask). */
function touchPrivate(file: string): void {
  try {
    closeSync(openSync(file, 'a', 0o600));
    chmodSync(file, 0o600);
  } catch (err) {
    throw new StoreError(`local store: cannot create ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { cause: err });
  }
}

/**
 * Opens (or shares) the local store at `path`: the folder is created 0700, its files 0600.
 *
 * @example
 * const env = openLocalEnv('/var/lib/http-destination/http-destination.state');
 * const profiles = env.db('profiles');
 * await env.release();
 */
export function openLocalEnv(path: string): LocalEnv {
  const abs = resolve(path);
  let shared = opened.get(abs);
  if (!shared) {
    try {
      mkdirSync(abs, { recursive: true, mode: 0o700 });
      chmodSync(abs, 0o700);
    } catch (err) {
      throw new StoreError(`local store: cannot create the folder ${abs}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { cause: err });
    }
    const file = join(abs, 'data.mdb');
    touchPrivate(file);
    touchPrivate(`${file}-lock`);
    let root: RootDatabase<unknown, string>;
    try {
      // JSON values: what is stored is exactly what the JSON exports carry (and `__proto__`
      // in customer data stays a plain own key when read back).
      root = open<unknown, string>({ path: file, maxDbs: 16, encoding: 'json' });
    } catch (err) {
      throw new StoreError(`local store: cannot open ${abs}: ${(err as Error).message}`, { cause: err });
    }
    shared = { root, dbs: new Map(), refs: 0 };
    opened.set(abs, shared);
  }
  shared.refs++;
  const s = shared;
  let released = false;
  return {
    path: abs,
    root: s.root,
    db(name, encoding = 'json') {
      let db = s.dbs.get(name);
      if (!db) {
        db = s.root.openDB<unknown, string>(name, { encoding });
        s.dbs.set(name, db);
      }
      return db;
    },
    async release() {
      if (released) return;
      released = true;
      s.refs--;
      if (s.refs > 0) return;
      opened.delete(abs);
      await s.root.committed;
      await s.root.close();
    },
  };
}
