/**
 * Experiment (issue 12, latency headroom): what sending a request costs the main thread when
 * undici runs on it, and when it runs on a worker thread fed bodies in batches (one
 * `postMessage` per event-loop turn each way). Main-thread cost = event-loop utilisation ×
 * wall time (the loop's busy time) per request; process CPU counts every thread.
 *
 * Run: `node bench/thread-transport.mjs [REQUESTS] [CONNECTIONS]` (defaults 30000, 64)
 */
import { createServer } from 'node:http';
import { performance } from 'node:perf_hooks';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Agent } from 'undici';

async function send(agent, origin, body) {
  const res = await agent.request({ origin, path: '/x', method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer t' }, body });
  await res.body.dump();
  return res.statusCode;
}

if (!isMainThread && workerData.role === 'receiver') {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-length': '0' });
      res.end();
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));
} else if (!isMainThread) {
  const agent = new Agent({ connections: workerData.connections, pipelining: 1 });
  let out = [];
  let queued = false;
  const flush = () => {
    queued = false;
    const batch = out;
    out = [];
    parentPort.postMessage(batch);
  };
  parentPort.on('message', (jobs) => {
    for (const j of jobs) {
      void send(agent, workerData.origin, j.body).then((status) => {
        out.push([j.id, status]);
        if (!queued) {
          queued = true;
          setImmediate(flush);
        }
      });
    }
  });
} else {
  const n = Number(process.argv[2] ?? 30000);
  const connections = Number(process.argv[3] ?? 64);
  // The receiver in a thread of its own (its CPU is in the process figure, not in the loop's busy time).
  const rx = new Worker(new URL(import.meta.url), { workerData: { role: 'receiver' } });
  const port = await new Promise((r) => rx.once('message', r));
  const origin = `http://127.0.0.1:${port}`;
  const body = JSON.stringify({ profileId: 'p-1', attributes: { person: { name: { first: 'Ada', last: 'Lovelace' } }, x: 'y'.repeat(500) } });

  const measure = async (start) => {
    let next = 0;
    let finished = 0;
    const elu0 = performance.eventLoopUtilization();
    await new Promise((resolve) => {
      const done = () => {
        finished++;
        if (finished === n) resolve();
        else if (next < n) start(next++, done);
      };
      for (let i = 0; i < connections && next < n; i++) start(next++, done);
    });
    const elu = performance.eventLoopUtilization(elu0);
    return (elu.active * 1000) / n;
  };

  const agent = new Agent({ connections, pipelining: 1 });
  const inline = (id, done) => void send(agent, origin, body).then(done);

  const sender = new Worker(new URL(import.meta.url), { workerData: { role: 'sender', origin, connections } });
  const waiting = new Map();
  sender.on('message', (batch) => {
    for (const [id] of batch) {
      const d = waiting.get(id);
      waiting.delete(id);
      d();
    }
  });
  let jobs = [];
  let queued = false;
  const threaded = (id, done) => {
    waiting.set(id, done);
    jobs.push({ id, body });
    if (!queued) {
      queued = true;
      setImmediate(() => {
        queued = false;
        const batch = jobs;
        jobs = [];
        sender.postMessage(batch);
      });
    }
  };

  await measure(inline);
  await measure(threaded);
  for (let round = 1; round <= 3; round++) {
    const a = await measure(inline);
    const b = await measure(threaded);
    console.log(`round ${round}: main-thread busy per request — undici on the main thread ${a.toFixed(1)} µs; on a worker thread ${b.toFixed(1)} µs`);
  }
  await sender.terminate();
  await rx.terminate();
  await agent.close();
}
