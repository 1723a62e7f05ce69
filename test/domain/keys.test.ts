import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { eventIdentity, eventTime, idempotencyKey } from '../../src/domain/keys.js';

const UUID_SHAPE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('idempotencyKey (SPEC §4 Idempotency-Key)', () => {
  const parts = { dataflowId: 'flow-1', profileId: 'p-1', event: 'js:PROFILES:42' };

  it('is UUID-shaped', () => {
    expect(idempotencyKey(parts)).toMatch(UUID_SHAPE);
  });

  it('is stable: the same export always gets the same key', () => {
    const k = idempotencyKey(parts);
    expect(idempotencyKey({ ...parts })).toBe(k);
    expect(idempotencyKey({ profileId: 'p-1', event: 'js:PROFILES:42', dataflowId: 'flow-1' })).toBe(k);
  });

  it('is a pinned value (it must not change across releases, or replays after an upgrade would duplicate)', () => {
    // sha256("flow-1\0p-1\0js:PROFILES:42"), first 32 hex digits, grouped 8-4-4-4-12.
    expect(idempotencyKey(parts)).toBe('c41bcb09-fad7-8975-117c-439c273ef1fe');
    const h = createHash('sha256').update('flow-1\u0000p-1\u0000js:PROFILES:42').digest('hex');
    expect(h.startsWith('c41bcb09fad78975117c439c273ef1fe')).toBe(true);
  });

  it('differs per dataflow, per profile and per event', () => {
    const keys = new Set([
      idempotencyKey(parts),
      idempotencyKey({ ...parts, dataflowId: 'flow-2' }),
      idempotencyKey({ ...parts, profileId: 'p-2' }),
      idempotencyKey({ ...parts, event: 'js:PROFILES:43' }),
    ]);
    expect(keys.size).toBe(4);
  });

  it('does not confuse field boundaries', () => {
    const a = idempotencyKey({ dataflowId: 'ab', profileId: 'c', event: 'e' });
    const b = idempotencyKey({ dataflowId: 'a', profileId: 'bc', event: 'e' });
    const c = idempotencyKey({ dataflowId: 'a', profileId: 'b', event: 'ce' });
    expect(new Set([a, b, c]).size).toBe(3);
  });
});

describe('eventIdentity', () => {
  it('prefers the eventId when upstream gave one', () => {
    expect(eventIdentity({ profileId: 'p-1', eventId: 'ev-1' }, 'js:PROFILES:42')).toBe('event:ev-1');
  });

  it('the same eventId under two source keys (published twice) has one identity', () => {
    expect(eventIdentity({ profileId: 'p-1', eventId: 'ev-1' }, 'js:PROFILES:1')).toBe(
      eventIdentity({ profileId: 'p-1', eventId: 'ev-1' }, 'js:PROFILES:2'),
    );
  });

  it('falls back to the source message key', () => {
    expect(eventIdentity({ profileId: 'p-1' }, 'file:events.jsonl:7')).toBe('file:events.jsonl:7');
    expect(eventIdentity({ profileId: 'p-1' }, 'a')).not.toBe(eventIdentity({ profileId: 'p-1' }, 'b'));
  });

  it('feeds idempotencyKey: a redelivery of the same message gets the same key', () => {
    const key = (src: string) =>
      idempotencyKey({ dataflowId: 'flow-1', profileId: 'p-1', event: eventIdentity({ profileId: 'p-1' }, src) });
    expect(key('js:PROFILES:9')).toBe(key('js:PROFILES:9'));
    expect(key('js:PROFILES:9')).not.toBe(key('js:PROFILES:10'));
  });
});

describe('eventTime', () => {
  it('parses the upstream timestamp to Unix ms', () => {
    expect(eventTime({ profileId: 'p', timestamp: '2026-11-26T10:00:00Z' })).toBe(Date.UTC(2026, 10, 26, 10, 0, 0));
    expect(eventTime({ profileId: 'p', timestamp: '2026-11-26T10:00:00.250+01:00' })).toBe(Date.UTC(2026, 10, 26, 9, 0, 0, 250));
  });

  it('is undefined without a timestamp or with an invalid one', () => {
    expect(eventTime({ profileId: 'p' })).toBeUndefined();
    expect(eventTime({ profileId: 'p', timestamp: 'not a date' })).toBeUndefined();
    expect(eventTime({ profileId: 'p', timestamp: '' })).toBeUndefined();
  });
});
