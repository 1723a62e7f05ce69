import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import type { DestinationConfig } from '../../src/config/load.js';
import { buildRequest, requestBuilder, USER_AGENT } from '../../src/sinks/http/request.js';
import { verifyWebhook } from '../../src/sinks/http/signing.js';
import type { ExportJob } from '../../src/sinks/types.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

function dest(over: Partial<DestinationConfig> = {}): DestinationConfig {
  return {
    id: 'dest-1',
    url: 'https://collector.example.com/profiles?source=aep&v=2',
    headers: { 'X-Tenant': 'acme', 'x-api-key': 'k-123456' },
    auth: { type: 'bearer', token: 'tok-secret' },
    includeSegmentNames: false,
    includeSegmentTimestamps: false,
    retry: { minDelayMs: 10, maxDelayMs: 100, retryAfterMaxMs: 1000 },
    timeoutMs: 1000,
    connections: 4,
    ...over,
  };
}

const job: ExportJob = {
  dataflowId: 'flow-1',
  destinationId: 'dest-1',
  profileId: 'p-1',
  idempotencyKey: 'flow-1:js:PROFILES:42',
  payload: { person: { name: { firstName: 'John' } }, identityMap: { ecid: [{ id: '1457' }] } },
};

describe('buildRequest', () => {
  it('POSTs the payload as JSON to the resolved URL', () => {
    const req = buildRequest(dest(), job);
    expect(req.method).toBe('POST');
    expect(req.url).toBe('https://collector.example.com/profiles?source=aep&v=2');
    expect(req.body).toBe(JSON.stringify(job.payload));
    expect(JSON.parse(req.body)).toEqual(job.payload);
  });

  it('sends custom headers, content type, idempotency key and user agent', () => {
    const req = buildRequest(dest(), job);
    expect(req.headers).toEqual({
      'x-tenant': 'acme',
      'x-api-key': 'k-123456',
      'content-type': 'application/json',
      'idempotency-key': 'flow-1:js:PROFILES:42',
      'user-agent': `http-destination/${pkg.version}`,
    });
    expect(USER_AGENT).toBe(`http-destination/${pkg.version}`);
  });

  it('adds no auth header', () => {
    const req = buildRequest(dest(), job);
    expect(Object.keys(req.headers)).not.toContain('authorization');
    expect(JSON.stringify(req)).not.toContain('tok-secret');
  });

  it('keeps our content type and idempotency key over custom ones, but lets a custom user agent win', () => {
    const req = buildRequest(
      dest({ headers: { 'Content-Type': 'text/plain', 'Idempotency-Key': 'x', 'User-Agent': 'acme-bot/1' } }),
      job,
    );
    expect(req.headers['content-type']).toBe('application/json');
    expect(req.headers['idempotency-key']).toBe(job.idempotencyKey);
    expect(req.headers['user-agent']).toBe('acme-bot/1');
    expect(Object.keys(req.headers).filter((k) => k.toLowerCase() === 'content-type')).toHaveLength(1);
  });

  it('adds no webhook headers without signing', () => {
    const req = buildRequest(dest(), job);
    expect(Object.keys(req.headers).some((k) => k.startsWith('webhook-'))).toBe(false);
  });

  it('signs with Standard Webhooks headers when signing is set', () => {
    const secret = 'whsec_' + Buffer.from('0123456789abcdef0123456789abcdef').toString('base64');
    const now = Date.UTC(2026, 10, 26, 10, 0, 0, 750);
    const req = buildRequest(dest({ signing: { secrets: [secret] } }), job, now);
    expect(req.headers['webhook-id']).toBe(job.idempotencyKey);
    expect(req.headers['webhook-timestamp']).toBe(String(Math.floor(now / 1000)));
    expect(req.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(
      verifyWebhook({
        secrets: [secret],
        id: req.headers['webhook-id']!,
        timestamp: req.headers['webhook-timestamp']!,
        body: req.body,
        signature: req.headers['webhook-signature']!,
        now,
      }),
    ).toBe(true);
    expect(JSON.stringify(req.headers)).not.toContain(secret.slice(6));
  });

  it('gives one signature per secret', () => {
    const s1 = 'whsec_' + Buffer.from('first-secret-first-secret-first!').toString('base64');
    const s2 = 'whsec_' + Buffer.from('second-secret-second-secret-sec!').toString('base64');
    const req = buildRequest(dest({ signing: { secrets: [s1, s2] } }), job, 1_000_000);
    expect(req.headers['webhook-signature']!.split(' ')).toHaveLength(2);
  });
});

describe('requestBuilder', () => {
  it('builds the request with the headers in buildRequest\'s order, signed or not', () => {
    const secret = 'whsec_' + Buffer.from('0123456789abcdef0123456789abcdef').toString('base64');
    const now = Date.UTC(2026, 10, 26, 10, 0, 0);
    const plain = requestBuilder(dest({ headers: { 'X-Tenant': 'acme', 'User-Agent': 'acme-bot/1', 'Content-Type': 'text/plain' } }))(job, now);
    expect(plain.url).toBe('https://collector.example.com/profiles?source=aep&v=2');
    expect(plain.body).toBe(JSON.stringify(job.payload));
    expect(Object.entries(plain.headers)).toEqual([
      ['user-agent', 'acme-bot/1'],
      ['x-tenant', 'acme'],
      ['content-type', 'application/json'],
      ['idempotency-key', job.idempotencyKey],
    ]);
    const signed = requestBuilder(dest({ signing: { secrets: [secret] } }))(job, now);
    expect(Object.keys(signed.headers)).toEqual([
      'user-agent',
      'x-tenant',
      'x-api-key',
      'content-type',
      'idempotency-key',
      'webhook-id',
      'webhook-timestamp',
      'webhook-signature',
    ]);
    expect(signed.headers['webhook-timestamp']).toBe(String(Math.floor(now / 1000)));
    expect(
      verifyWebhook({
        secrets: [secret],
        id: signed.headers['webhook-id']!,
        timestamp: signed.headers['webhook-timestamp']!,
        body: signed.body,
        signature: signed.headers['webhook-signature']!,
        now,
      }),
    ).toBe(true);
  });

  it('gives every request its own headers object', () => {
    const build = requestBuilder(dest());
    const a = build(job);
    a.headers.authorization = 'Bearer x';
    const b = build({ ...job, idempotencyKey: 'k-2' });
    expect(b.headers.authorization).toBeUndefined();
    expect(b.headers['idempotency-key']).toBe('k-2');
    expect(a.headers['idempotency-key']).toBe(job.idempotencyKey);
  });
});
