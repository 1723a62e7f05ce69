import { describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/observability/logger.js';
import { MASK, SecretRegistry } from '../../src/observability/redact.js';

function capture(): { stream: Writable; lines: () => string } {
  let out = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out += chunk.toString('utf8');
      cb();
    },
  });
  return { stream, lines: () => out };
}

describe('logger masking (issue 14)', () => {
  it('masks config and runtime secrets in every form, at trace level, in messages, objects, errors and child bindings', () => {
    const registry = new SecretRegistry();
    const { stream, lines } = capture();
    const config = `cfg!'(${Date.now()})`;
    const log = createLogger({ level: 'trace', secrets: [config], registry, destination: stream });
    const runtime = `at!'(runtime-${Date.now()})*~`;
    registry.add(runtime); // an OAuth2 token obtained after the logger was made
    const form = (s: string) => new URLSearchParams({ s }).toString().slice(2);
    log.trace({ echo: `auth=${form(`Bearer ${runtime}`)}`, b64: Buffer.from(runtime).toString('base64url') }, `sent ${encodeURIComponent(config)}`);
    log.child({ binding: `k=${config}` }).debug({ err: new Error(`failed: ${JSON.stringify({ t: runtime })}`) }, 'child');
    const text = lines();
    expect(text).toContain('"level":10');
    expect(text).toContain('"level":20');
    for (const v of [config, runtime, encodeURIComponent(config), form(runtime), Buffer.from(runtime).toString('base64url')]) expect(text).not.toContain(v);
    expect(text).toContain(`"msg":"sent ${MASK}"`);
    expect(text).toContain(`"echo":"auth=Bearer+${MASK}"`);
    expect(text).toContain(`"binding":"k=${MASK}"`);
  });
});
