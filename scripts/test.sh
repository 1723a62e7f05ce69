#!/usr/bin/env bash
# The full test suite from a fresh machine: installs the npm packages and the servers the
# integration tests start (nats-server, redis-server), builds, type-checks, runs every test.
#
# The few tests that measure real-time rates at a receiver (rate limits over 1-second windows)
# run first and alone, so that the rest of the suite does not load the 2 cores under them;
# everything else then runs two files at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/servers.sh install
[ -d node_modules ] && [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund
npm run build --silent
npm run typecheck --silent
mkdir -p .data
rm -f .data/vitest-*.json

TIMED=(test/e2e/rate-limit.test.ts test/stores/redis-rate-limiter.test.ts test/pool/rate-limit.test.ts)
status=0
if [ $# -gt 0 ]; then
  npx vitest run --reporter=default --reporter=json --outputFile.json=.data/vitest-1.json "$@" || status=$?
else
  existing=()
  for f in "${TIMED[@]}"; do [ -f "$f" ] && existing+=("$f"); done
  npx vitest run --maxWorkers=1 --reporter=default --reporter=json --outputFile.json=.data/vitest-1.json "${existing[@]}" || status=$?
  excludes=()
  for f in "${existing[@]}"; do excludes+=(--exclude "$f"); done
  npx vitest run "${excludes[@]}" --reporter=default --reporter=json --outputFile.json=.data/vitest-2.json || status=$?
fi
# One plain closing line over both runs: "N passed, N failed, N skipped".
node -e '
  const fs = require("fs");
  let p = 0, f = 0, s = 0;
  for (const file of fs.readdirSync(".data").filter((n) => /^vitest-\d\.json$/.test(n))) {
    const r = JSON.parse(fs.readFileSync(".data/" + file, "utf8"));
    p += r.numPassedTests; f += r.numFailedTests; s += r.numPendingTests + r.numTodoTests;
  }
  console.log(`${p} passed, ${f} failed, ${s} skipped`);
' || true
exit $status
