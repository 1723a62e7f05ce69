#!/usr/bin/env node
// A tiny HTTP receiver for the demo: prints one line per export it gets and answers 200,
// except for profiles whose id starts with "p-fail" (HTTP 500: retried, then stored as failed).
// Usage: node examples/receiver.mjs [port] — prints "listening <port>" first.
import { createServer } from 'node:http';

const port = Number(process.argv[2] ?? 0);
let count = 0;
const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      res.writeHead(400).end('bad json');
      return;
    }
    const profile = body?.identityMap?.ecid?.[0]?.id ?? '?';
    const ups = Object.entries(body?.segmentMembership?.ups ?? {}).map(([id, r]) => `${id}:${r.status}`).join(' ');
    const name = body?.person?.name?.firstName ?? '-';
    const fail = JSON.stringify(body).includes('"Fail"');
    count++;
    const auth = req.headers.authorization ? 'bearer ok' : 'no auth';
    process.stdout.write(`#${String(count).padStart(3)} ${req.method} ${req.url}  ${auth}  key=${String(req.headers['idempotency-key']).slice(0, 8)}  ecid=${profile}  firstName=${name}  [${ups}]${fail ? '  → 500' : ''}\n`);
    if (fail) {
      res.writeHead(500).end('demo failure');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  });
});
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
process.on('SIGTERM', () => {
  process.stdout.write(`receiver: ${count} requests\n`);
  server.close(() => process.exit(0));
});
