#!/usr/bin/env bash
# The demo on the embedded default: no servers needed. Installs and builds when needed,
# starts a local receiver, runs the worker over examples/events.jsonl on the local store
# (.data/demo/http-destination.state), runs it a second time (nothing is exported again),
# shows the summary, the stored failed requests and the rejected events.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -d node_modules ] || npm ci --no-audit --no-fund
[ -f dist/cli/main.js ] && [ -z "$(find src -newer dist/cli/main.js -name '*.ts' -print -quit)" ] || npm run build --silent

rm -rf .data/demo && mkdir -p .data && mkdir -m 700 .data/demo
log=.data/demo/receiver.log
node examples/receiver.mjs 0 >"$log" 2>&1 &
receiver=$!
trap 'kill $receiver 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do grep -q '^listening' "$log" 2>/dev/null && break; sleep 0.1; done
export DEMO_PORT="$(awk '/^listening/ {print $2; exit}' "$log")"
export DEMO_TOKEN="demo-bearer-token-not-a-real-secret"
export DEMO_API_KEY="demo-api-key-not-a-real-secret"

store=.data/demo/http-destination.state
echo "== receiver on 127.0.0.1:$DEMO_PORT; state in the local store $store (LMDB, durable)"
echo "== running: http-destination run --config examples/config.yaml --once"
node dist/cli/main.js run --config examples/config.yaml --once 2>.data/demo/worker.log
received=$(grep -c '^#' "$log")
echo
echo "== the same run --once again: the local store remembers what was read and delivered"
node dist/cli/main.js run --config examples/config.yaml --once 2>>.data/demo/worker.log
again=$(grep -c '^#' "$log")
echo "   the receiver got $((again - received)) more requests (it had $received)"
echo
echo "== what the receiver got (first 25 of $(grep -c '^#' "$log") requests; full log: $log)"
# awk, not grep | head: with pipefail, head closing the pipe early kills grep (SIGPIPE, exit 141)
awk '/^#/ && n++ < 25' "$log"
echo
echo "== http-destination failed list"
node dist/cli/main.js failed list --config examples/config.yaml
echo
echo "== http-destination rejected list"
node dist/cli/main.js rejected list --config examples/config.yaml
