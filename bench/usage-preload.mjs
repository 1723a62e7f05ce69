// Preloaded into the worker process by the bench (`node --import ./bench/usage-preload.mjs …`):
// at exit, writes the process's own resource usage (CPU time, peak RSS) as JSON to
// $BENCH_USAGE_FILE. Plain JS so it runs beside the compiled worker without a loader.
import { writeFileSync } from 'node:fs';

const file = process.env.BENCH_USAGE_FILE;
if (file) {
  process.on('exit', () => {
    const r = process.resourceUsage();
    writeFileSync(
      file,
      JSON.stringify({
        userMs: r.userCPUTime / 1000,
        systemMs: r.systemCPUTime / 1000,
        maxRssMb: r.maxRSS / 1024,
        uptimeMs: Math.round(process.uptime() * 1000),
      }),
    );
  });
}
