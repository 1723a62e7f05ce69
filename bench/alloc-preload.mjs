/**
 * Preloaded into the worker (`npm run bench -- --mode embedded "--node-args=--import ./bench/alloc-preload.mjs"`):
 * samples every allocation of the process — those the garbage collector has already freed
 * included, unlike `--heap-prof` — and writes the profile when the process exits, to
 * `$HD_ALLOC_DIR` (default the OS temp folder) as `alloc-<pid>.heapprofile`. Summarise it
 * with `npx tsx bench/alloc-profile.ts FILE [--exports N]`. Allocation figures do not depend on
 * the machine's load, unlike CPU time: they are how a change to the garbage is measured here.
 */
import inspector from 'node:inspector';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const session = new inspector.Session();
session.connect();
session.post('HeapProfiler.enable');
session.post('HeapProfiler.startSampling', {
  samplingInterval: 4096,
  includeObjectsCollectedByMajorGC: true,
  includeObjectsCollectedByMinorGC: true,
});
let written = false;
const stop = () => {
  if (written) return;
  written = true;
  session.post('HeapProfiler.stopSampling', (err, result) => {
    if (err) return;
    writeFileSync(join(process.env.HD_ALLOC_DIR ?? tmpdir(), `alloc-${process.pid}.heapprofile`), JSON.stringify(result.profile));
  });
};
process.on('beforeExit', stop);
const exit = process.exit;
process.exit = (code) => {
  stop();
  return exit.call(process, code);
};
