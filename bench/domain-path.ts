/**
 * CPU per update of the worker's domain and memory-store path in one process, without I/O:
 * decode (JSON.parse + validation) → memory store apply (merge, size check, audience index) →
 * export decision → payload → Idempotency-Key → body JSON, over 60,000 single-update bench
 * profiles (as `--mode embedded`), 512 in flight, each confirmed a turn after its apply.
 *
 *   npx tsx bench/domain-path.ts [ROOT]
 *
 * ROOT is a checkout of this repository (default: this one), so an older commit can be
 * measured beside this one, alternately, in separate processes (`git archive <commit> | tar -x
 * -C /tmp/old`, then `npx tsx bench/domain-path.ts /tmp/old`). It prints the µs of CPU per
 * update (GC included) and a checksum of the bodies built (the same for equal behaviour).
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(process.argv[2] ?? fileURLToPath(new URL('..', import.meta.url)));
const N = 60_000;
// The modules of ROOT, which may be another commit: imported by path, so untyped (any) on purpose.
const { EventGenerator, AUDIENCES } = await import(`${root}/bench/events.ts`);
const { dataflowRules } = await import(`${root}/bench/config.ts`);
const { decodeEvent } = await import(`${root}/src/domain/validate.ts`);
const { MemorySnapshotStore } = await import(`${root}/src/stores/memory-snapshot-store.ts`);
const { decideExports } = await import(`${root}/src/domain/diff.ts`);
const { buildPayload, preparePayloadRules } = await import(`${root}/src/domain/payload.ts`);
const { idempotencyKey } = await import(`${root}/src/domain/keys.ts`);
const flows = dataflowRules(1);
const rules = preparePayloadRules(flows[0], AUDIENCES);
const gen = new EventGenerator({ profiles: N, prefix: 'x', sequential: true });
const lines: Buffer[] = [];
for (let i = 0; i < N; i++) {
  const e = gen.next().event;
  e.attributes.bench.sentAt = 1764000000000 + i;
  e.timestamp = '2026-11-26T10:00:00Z';
  lines.push(Buffer.from(JSON.stringify(e)));
}
const store = new MemorySnapshotStore();
let bodies = 0;
const c0 = process.cpuUsage();
let next = 0;
const lane = async () => {
  while (next < N) {
    const i = next++;
    const data = lines[i];
    const update = decodeEvent(data, { maxBytes: 1 << 20 });
    const applied = await store.apply(update, { key: `k${i}`, seq: i, updateBytes: 4 * data.byteLength });
    for (const d of decideExports(applied, flows)) {
      const payload = buildPayload(applied, rules);
      bodies += JSON.stringify(payload).length + idempotencyKey({ dataflowId: d.dataflowId, profileId: update.profileId, event: `k${i}` }).length;
    }
    await new Promise<void>((r) => setImmediate(r));
    await store.confirm(update.profileId, `k${i}`);
  }
};
await Promise.all(Array.from({ length: 512 }, lane));
const c = process.cpuUsage(c0);
console.log(root, 'cpu µs/update', ((c.user + c.system) / N).toFixed(1), 'bodies', bodies);
