#!/usr/bin/env bash
# The web console on the demo's config, live (`npm run demo:console`): builds when needed,
# starts the demo receiver (examples/receiver.mjs: it refuses profiles named "Fail"), runs
# `http-destination run --metrics-port 9464` over examples/config.yaml's events and settings in
# .data/console-demo/ (its own local store, an admin token for the console's actions, and an
# alert rule on failed requests),
# then keeps adding updates — a new profile entering aud-1 every 200 ms, one in 20 of them
# refused — so the charts move and failed requests come in. Open the printed URL; Ctrl-C stops.
#   CONSOLE_PORT   the admin server's port (default 9464)
set -euo pipefail
cd "$(dirname "$0")/.."
port=${CONSOLE_PORT:-9464}

[ -d node_modules ] || npm ci --no-audit --no-fund
[ -f dist/cli/main.js ] && [ -z "$(find src -newer dist/cli/main.js -type f -print -quit)" ] || npm run build --silent

dir=.data/console-demo
rm -rf "$dir" && mkdir -p .data && mkdir -m 700 "$dir"
cp examples/events.jsonl "$dir/events.jsonl"
# The demo's config with its events and store in $dir (relative paths resolve there) and an admin token.
sed -e 's#^\(  path: \)events.jsonl.*#\1events.jsonl#' -e 's#^\(  path: \)\.\./\.data/demo/http-destination\.state.*#\1state#' examples/config.yaml >"$dir/config.yaml"
cat >>"$dir/config.yaml" <<'YAML'
admin: { token: "${ADMIN_TOKEN}" }
alerts:   # so the console has an alert to show: the receiver gets it at /alerts
  channels:
    - { id: receiver, kind: webhook, url: "http://127.0.0.1:${DEMO_PORT}/alerts" }
  rules:
    - { id: failures, kind: failedRequests, threshold: 1, windowMs: 60000, channels: [receiver] }
YAML

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT INT TERM
node examples/receiver.mjs 0 >"$dir/receiver.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do grep -q '^listening' "$dir/receiver.log" 2>/dev/null && break; sleep 0.1; done
export DEMO_PORT="$(awk '/^listening/ {print $2; exit}' "$dir/receiver.log")"
export DEMO_TOKEN="demo-bearer-token-not-a-real-secret"
export DEMO_API_KEY="demo-api-key-not-a-real-secret"
ADMIN_TOKEN="$(node -e 'process.stdout.write(require("crypto").randomBytes(12).toString("hex"))')"
export ADMIN_TOKEN

node dist/cli/main.js run --config "$dir/config.yaml" --metrics-port "$port" 2>"$dir/worker.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q 'admin server listening' "$dir/worker.log" 2>/dev/null && break; sleep 0.1; done
grep -q 'admin server listening' "$dir/worker.log" || { echo "the worker did not start; see $dir/worker.log" >&2; tail -5 "$dir/worker.log" >&2; exit 1; }

# Live updates: a new profile entering aud-1 every 200 ms (every 20th named "Fail": refused, stored as failed).
node -e '
  const fs = require("fs");
  let i = 0;
  setInterval(() => {
    i++;
    const now = new Date().toISOString();
    const e = { profileId: `live-${i}`, eventId: `live-${i}`, timestamp: now,
      attributes: { person: { name: { firstName: i % 20 === 0 ? "Fail" : "John", lastName: "Live" } }, personalEmail: { address: `live-${i}@example.com` } },
      segmentMembership: { ups: { "aud-1": { status: "realized", lastQualificationTime: now } } } };
    fs.appendFileSync(process.argv[1], JSON.stringify(e) + "\n");
  }, 200);
' "$dir/events.jsonl" &
pids+=($!)

cat <<MSG
== the console: http://127.0.0.1:$port/   (Dataflows, Failed requests)
   admin token for its actions (replay), paste it in the page: $ADMIN_TOKEN
   JSON API: curl -s 127.0.0.1:$port/api/dataflows | head -c 400
   logs: $dir/worker.log, receiver: $dir/receiver.log — Ctrl-C stops everything
MSG
wait "${pids[1]}"
