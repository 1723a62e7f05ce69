/**
 * The local store's side of `embedded-steady`, alone and in one process, for A/B of two
 * checkouts on a loaded machine: CPU µs per event (`process.cpuUsage`: LMDB's write thread
 * and the kernel's fsync included) of what the worker asks of the store per event at 4,000
 * events/s — `apply`, then about `--rtt` ms later (the HTTP answer) the delivered mark
 * (`LocalDeliveredMarks.record`), `confirm`, and once per event-loop turn with acks the file
 * position (`setPosition`, one at a time as the file source writes it). Turns are paced by a
 * 1-ms timer, 4 events each, as the file source reads a steadily appended file. The updates are
 * the bench's (`EventGenerator`, 4 per profile). Each ROOT's store code is imported from
 * `ROOT/src`; the checkouts alternate, ROUNDS rounds each, and the median is printed.
 *
 * Run: `npx tsx bench/local-steady-store.ts [--seconds 8] [--rounds 3] [--rtt 3] ROOT_A [ROOT_B …]`
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { EventGenerator, stamp } from './events.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { seconds: { type: 'string', default: '8' }, rounds: { type: 'string', default: '3' }, rtt: { type: 'string', default: '3' } },
});
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const RTT = Number(values.rtt);
const PER_TURN = 4;
const roots = (positionals.length > 0 ? positionals : ['.']).map((r) => resolve(r));

interface Store {
  apply(u: unknown, ctx: { key: string; seq: number }): Promise<unknown>;
  confirm(profileId: string, key: string): Promise<void>;
  setPosition(key: string, p: unknown): Promise<void>;
  close(): Promise<void>;
}
interface Marks {
  record(m: Array<{ dataflowId: string; profileId: string; version: number }>): Promise<void>;
  close(): Promise<void>;
}

async function once(root: string, dir: string): Promise<{ us: number; sys: number; events: number }> {
  const { LocalSnapshotStore } = (await import(join(root, 'src/stores/local-snapshot-store.ts'))) as { LocalSnapshotStore: { open(o: object): Promise<Store> } };
  const { LocalDeliveredMarks } = (await import(join(root, 'src/stores/local-retry-queue.ts'))) as { LocalDeliveredMarks: new (o: { path: string }) => Marks };
  const path = join(dir, `state-${Math.random().toString(36).slice(2)}`);
  const store = await LocalSnapshotStore.open({ path, exclusive: true, ...(process.env.WINDOW_MS ? { commitWindowMs: Number(process.env.WINDOW_MS) } : {}) });
  const marks = new LocalDeliveredMarks({ path });
  const total = 4_000 * SECONDS;
  const gen = new EventGenerator({ profiles: Math.floor(total / 4), prefix: 'ls' });
  const updates = Array.from({ length: total }, () => JSON.parse(stamp(gen.next().event, Date.now())) as { profileId: string });
  let seq = 0;
  let positionBusy = false;
  let positionAgain = false;
  const writePosition = async (): Promise<void> => {
    if (positionBusy) {
      positionAgain = true;
      return;
    }
    positionBusy = true;
    do {
      positionAgain = false;
      await store.setPosition('file:/bench', { offset: seq * 700, line: seq, ino: 1, dev: 1, size: seq * 700, head: 'h', headBytes: 4096 });
    } while (positionAgain);
    positionBusy = false;
  };
  const c0 = process.cpuUsage();
  let settled = 0;
  const done = new Promise<void>((resolveDone) => {
    const turn = (): void => {
      for (let k = 0; k < PER_TURN && seq < total; k++) {
        const u = updates[seq];
        const key = `file:/bench:${++seq}`;
        void store.apply(u, { key, seq }).then(() =>
          setTimeout(() => {
            void marks
              .record([{ dataflowId: 'flow-1', profileId: u.profileId, version: seq }])
              .then(() => store.confirm(u.profileId, key))
              .then(() => {
                void writePosition();
                if (++settled === total) resolveDone();
              });
          }, RTT),
        );
      }
      if (seq < total) setTimeout(turn, 1);
    };
    turn();
  });
  await done;
  while (positionBusy) await new Promise((r) => setTimeout(r, 1));
  await store.close();
  await marks.close();
  const c = process.cpuUsage(c0);
  return { us: (c.user + c.system) / total, sys: c.system / total, events: total };
}

const dir = mkdtempSync(join(tmpdir(), 'bench-local-steady-'));
try {
  const results = new Map<string, number[]>(roots.map((r) => [r, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const root of roots) {
      const r = await once(root, dir);
      results.get(root)!.push(r.us);
      console.log(`round ${round + 1} ${root}: ${r.us.toFixed(1)} µs CPU per event, ${r.sys.toFixed(1)} of it system (${r.events} events; load ${(await import('node:os')).loadavg()[0].toFixed(1)})`);
    }
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const [root, xs] of results) console.log(`median ${root}: ${median(xs).toFixed(1)} µs CPU per event`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
