/**
 * Exact input (issue 14): numbers outside ±(2^53−1) are rejected (1e400 would become
 * Infinity, exported as null; 12345678901234567890 would become another number), bytes
 * must be UTF-8, strings and keys must not hold lone surrogates.
 */
import { describe, expect, it } from 'vitest';
import { decodeEvent, validateEvent } from '../../src/domain/validate.js';
import { EventRejectedError } from '../../src/errors.js';

const opts = { maxBytes: 1 << 20 };

function rejection(fn: () => unknown): EventRejectedError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(EventRejectedError);
    return err as EventRejectedError;
  }
  throw new Error('expected a rejection');
}

const RANGE = 'must be a number within ±9007199254740991 (2^53−1, where JSON numbers are exact); send larger numbers as strings';

describe('numbers: within ±(2^53−1)', () => {
  it('rejects numbers that overflow to ±Infinity, naming the field', () => {
    for (const n of ['1e400', '-1e400', '1.8e308']) {
      const e = rejection(() => decodeEvent(`{"profileId":"p","attributes":{"a":{"b":${n}}}}`, opts));
      expect(e.code).toBe('ERR_EVENT_SHAPE');
      expect(e.message).toBe(`attributes.a.b: ${RANGE}`);
    }
  });

  it('rejects integers beyond 2^53−1 that would silently change', () => {
    const e = rejection(() => decodeEvent('{"profileId":"p","attributes":{"ids":[1,12345678901234567890]}}', opts));
    expect(e.message).toBe(`attributes.ids[1]: ${RANGE}`);
    expect(rejection(() => decodeEvent('{"profileId":"p","attributes":{"n":9007199254740992}}', opts)).code).toBe('ERR_EVENT_SHAPE');
    expect(rejection(() => decodeEvent('{"profileId":"p","attributes":{"n":-9007199254740993}}', opts)).code).toBe('ERR_EVENT_SHAPE');
  });

  it('checks extra identity fields too', () => {
    const e = rejection(() => decodeEvent('{"profileId":"p","identityMap":{"ecid":[{"id":"1","score":1e999}]}}', opts));
    expect(e.message).toBe(`identityMap.ecid[0].score: ${RANGE}`);
  });

  it('accepts the edges of the range, fractions and tiny numbers', () => {
    const u = decodeEvent('{"profileId":"p","attributes":{"max":9007199254740991,"min":-9007199254740991,"f":0.1,"t":1e-300,"z":-0}}', opts);
    expect(u.attributes).toEqual({ max: 9007199254740991, min: -9007199254740991, f: 0.1, t: 1e-300, z: -0 });
  });

  it('applies to objects given to validateEvent as well (Infinity and big numbers)', () => {
    expect(rejection(() => validateEvent({ profileId: 'p', attributes: { a: Infinity } })).message).toBe('attributes.a: must be a JSON value');
    expect(rejection(() => validateEvent({ profileId: 'p', attributes: { a: 2 ** 60 } })).message).toBe(`attributes.a: ${RANGE}`);
  });
});

describe('text: UTF-8 bytes, no lone surrogates', () => {
  it('rejects bytes that are not UTF-8 with ERR_EVENT_ENCODING (no U+FFFD exported)', () => {
    const prefix = Buffer.from('{"profileId":"p","attributes":{"a":"');
    const suffix = Buffer.from('"}}');
    for (const bad of [[0xff], [0xc0, 0xaf] /* overlong */, [0xed, 0xa0, 0x80] /* encoded surrogate */, [0xe2, 0x82] /* truncated */]) {
      const e = rejection(() => decodeEvent(new Uint8Array(Buffer.concat([prefix, Buffer.from(bad), suffix])), opts));
      expect(e.code).toBe('ERR_EVENT_ENCODING');
      expect(e.message).toBe('event: not valid UTF-8');
    }
    expect(decodeEvent(new Uint8Array(Buffer.concat([prefix, Buffer.from('€😀'), suffix])), opts).attributes).toEqual({ a: '€😀' });
  });

  it('rejects a lone surrogate escape in a value, a key or the profileId', () => {
    for (const json of [
      '{"profileId":"p","attributes":{"a":"x\\ud800"}}',
      '{"profileId":"p","attributes":{"\\udc00":"x"}}',
      '{"profileId":"p\\ud800"}',
      '{"profileId":"p","identityMap":{"ecid":[{"id":"\\udbff"}]}}',
      '{"profileId":"p","segmentMembership":{"ups":{"\\ud800":{"status":"realized"}}}}',
    ]) {
      const e = rejection(() => decodeEvent(json, opts));
      expect(e.code).toBe('ERR_EVENT_ENCODING');
      expect(e.message).toBe('event: a string or key holds a lone UTF-16 surrogate (not Unicode text)');
      expect(rejection(() => decodeEvent(new TextEncoder().encode(json), opts)).code).toBe('ERR_EVENT_ENCODING');
    }
  });

  it('rejects a lone surrogate in a string argument (not escaped) and in objects given to validateEvent', () => {
    expect(rejection(() => decodeEvent('{"profileId":"p\ud800"}', opts)).code).toBe('ERR_EVENT_ENCODING');
    expect(rejection(() => validateEvent({ profileId: 'p', attributes: { a: ['\udfff'] } })).code).toBe('ERR_EVENT_ENCODING');
  });

  it('accepts surrogate pairs (escaped or not) and ignores unknown top-level fields', () => {
    expect(decodeEvent('{"profileId":"p","attributes":{"a":"\\ud83d\\ude00"}}', opts).attributes).toEqual({ a: '😀' });
    expect(decodeEvent('{"profileId":"p😀"}', opts).profileId).toBe('p😀');
    expect(decodeEvent('{"profileId":"p","futureField":"\\ud800"}', opts)).toEqual({ profileId: 'p' });
    // An escaped backslash before "ud800" is no surrogate.
    expect(decodeEvent('{"profileId":"p","attributes":{"a":"\\\\ud800"}}', opts).attributes).toEqual({ a: '\\ud800' });
  });

  it('does not hang on a cycle in a field validateEvent does not walk', () => {
    const record: Record<string, unknown> = { status: 'realized' };
    record.self = record;
    expect(validateEvent({ profileId: 'p', segmentMembership: { ups: { a: record } } }).profileId).toBe('p');
  });
});
