#!/usr/bin/env bash
# The full test suite from a fresh machine: installs the npm packages and the servers the
# integration tests start (nats-server, redis-server), builds, type-checks, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/servers.sh install
[ -d node_modules ] && [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund
npm run build --silent
npm run typecheck --silent
npx vitest run "$@"
