#!/usr/bin/env bash
# The full test suite from a fresh machine: installs the npm packages and the servers the
# integration tests start (nats-server, redis-server), builds, type-checks, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/servers.sh install
[ -d node_modules ] && [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund
npm run build --silent
npm run typecheck --silent
mkdir -p .data
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json=.data/vitest.json "$@" || status=$?
# One plain closing line: "N passed, N failed, N skipped".
node -e '
  const r = JSON.parse(require("fs").readFileSync(".data/vitest.json", "utf8"));
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' || true
exit $status
