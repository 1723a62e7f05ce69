import { describe, it, expect } from 'vitest';
import { EventRejectedError } from '../../src/errors.js';
import { decodeEvent, isIsoDate, MAX_ATTRIBUTE_DEPTH, validateEvent } from '../../src/domain/validate.js';

/** Runs `fn`, expects an EventRejectedError, returns it. */
function rejection(fn: () => unknown): EventRejectedError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(EventRejectedError);
    return err as EventRejectedError;
  }
  throw new Error('expected a rejection, got none');
}

function shapeReason(input: unknown): string {
  const err = rejection(() => validateEvent(input));
  expect(err.code).toBe('ERR_EVENT_SHAPE');
  return err.message;
}

const full = {
  profileId: 'p-123',
  eventId: 'e-1',
  timestamp: '2026-11-26T10:00:00Z',
  attributes: { person: { name: { firstName: 'John' }, tags: ['a', 1, null, { x: [true] }] }, gone: null },
  identityMap: { ecid: [{ id: '1457', authenticatedState: 'ambiguous', primary: true }], email_lc_sha256: [{ id: '6553' }] },
  removedIdentities: { ecid: ['1457'] },
  segmentMembership: {
    ups: {
      'aud-1': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00Z' },
      'aud-2': { status: 'existing' },
      'aud-3': { status: 'exited', lastQualificationTime: '2026-11-26T10:00:00.123+01:00' },
    },
  },
};

describe('validateEvent: accepted', () => {
  it('accepts the full SPEC §2 example and returns every known field unchanged', () => {
    expect(validateEvent(full)).toEqual(full);
  });

  it('accepts a bare profileId', () => {
    expect(validateEvent({ profileId: 'p' })).toEqual({ profileId: 'p' });
  });

  it('drops unknown top-level keys instead of rejecting them', () => {
    const out = validateEvent({ profileId: 'p', futureField: { a: 1 }, _meta: 3 });
    expect(out).toEqual({ profileId: 'p' });
    expect('futureField' in out).toBe(false);
  });

  it('treats null optional fields as absent', () => {
    const out = validateEvent({
      profileId: 'p',
      eventId: null,
      timestamp: null,
      attributes: null,
      identityMap: null,
      removedIdentities: null,
      segmentMembership: { ups: null },
    });
    expect(out).toEqual({ profileId: 'p', segmentMembership: {} });
  });

  it('accepts empty containers', () => {
    const e = { profileId: 'p', attributes: {}, identityMap: { ecid: [] }, removedIdentities: {}, segmentMembership: { ups: {} } };
    expect(validateEvent(e)).toEqual(e);
  });

  it('keeps an attribute named __proto__ as data (the merge stores it as an own key)', () => {
    const out = validateEvent(JSON.parse('{"profileId":"p","attributes":{"a":{"__proto__":{"x":1}}}}'));
    expect(Object.keys((out.attributes as { a: object }).a)).toEqual(['__proto__']);
    expect(Object.getPrototypeOf((out.attributes as { a: object }).a)).toBe(Object.prototype);
  });

  it('accepts a null-prototype object (not only object literals)', () => {
    const e = Object.assign(Object.create(null) as object, { profileId: 'p' });
    expect(validateEvent(e)).toEqual({ profileId: 'p' });
  });

  it('accepts attributes nested exactly MAX_ATTRIBUTE_DEPTH deep', () => {
    let deep: Record<string, unknown> = { leaf: 1 };
    for (let i = 1; i < MAX_ATTRIBUTE_DEPTH; i++) deep = { n: deep };
    expect(validateEvent({ profileId: 'p', attributes: deep }).attributes).toBe(deep);
  });

  it('accepts an empty eventId and ISO dates with and without time and zone', () => {
    for (const ts of ['2026-11-26', '2026-11-26T10:00', '2026-11-26T10:00:00', '2026-11-26T10:00:00.5Z', '2026-11-26T10:00:00+0100', '2024-02-29T00:00:00-05:00']) {
      expect(validateEvent({ profileId: 'p', eventId: '', timestamp: ts }).timestamp).toBe(ts);
    }
  });
});

describe('validateEvent: rejected, with the field named', () => {
  it('requires the event to be a plain object', () => {
    expect(shapeReason([])).toBe('event: must be a JSON object, not an array');
    expect(shapeReason('x')).toBe('event: must be a JSON object, not a string');
    expect(shapeReason(null)).toBe('event: must be a JSON object, not null');
    expect(shapeReason(new Date())).toBe('event: must be a JSON object, not an instance of a class');
  });

  it('requires profileId, a non-empty string', () => {
    expect(shapeReason({})).toBe('profileId: required');
    expect(shapeReason({ profileId: null })).toBe('profileId: required');
    expect(shapeReason({ profileId: '' })).toBe('profileId: must be a non-empty string');
    expect(shapeReason({ profileId: 42 })).toBe('profileId: must be a non-empty string');
  });

  it('requires eventId to be a string', () => {
    expect(shapeReason({ profileId: 'p', eventId: 7 })).toBe('eventId: must be a string');
  });

  it('requires timestamp to be a real ISO-8601 date', () => {
    const rule = 'timestamp: must be an ISO-8601 date string, e.g. 2026-11-26T10:00:00Z';
    for (const ts of [17, 'yesterday', 'March 7, 2026', '2026-02-30T00:00:00Z', '2025-02-29', '2026-13-01', '2026-11-26T24:00:00Z', '2026-11-26 10:00:00Z', '']) {
      expect(shapeReason({ profileId: 'p', timestamp: ts })).toBe(rule);
    }
  });

  it('requires attributes to be a plain object', () => {
    expect(shapeReason({ profileId: 'p', attributes: [1] })).toBe('attributes: must be an object');
    expect(shapeReason({ profileId: 'p', attributes: 'x' })).toBe('attributes: must be an object');
  });

  it('requires attribute values to be JSON, naming the path', () => {
    expect(shapeReason({ profileId: 'p', attributes: { a: { b: undefined } } })).toBe('attributes.a.b: must be a JSON value');
    expect(shapeReason({ profileId: 'p', attributes: { a: [1, { c: NaN }] } })).toBe('attributes.a[1].c: must be a JSON value');
    expect(shapeReason({ profileId: 'p', attributes: { 'odd key': new Map() } })).toBe('attributes["odd key"]: must be a JSON value');
    expect(shapeReason({ profileId: 'p', attributes: { f: () => 1 } })).toBe('attributes.f: must be a JSON value');
  });

  it('refuses too-deep nesting', () => {
    let deep: Record<string, unknown> = { leaf: 1 };
    for (let i = 0; i < MAX_ATTRIBUTE_DEPTH; i++) deep = { n: deep };
    expect(shapeReason({ profileId: 'p', attributes: deep })).toMatch(
      new RegExp(`^attributes(\\.n){${MAX_ATTRIBUTE_DEPTH}}: nested deeper than ${MAX_ATTRIBUTE_DEPTH} levels$`),
    );
  });

  it('checks identityMap: an object of arrays of objects with a non-empty string id', () => {
    const r = (identityMap: unknown) => shapeReason({ profileId: 'p', identityMap });
    expect(r([])).toBe('identityMap: must be an object of arrays of identities');
    expect(r({ ecid: { id: 'x' } })).toBe('identityMap.ecid: must be an array of identities');
    expect(r({ ecid: ['x'] })).toBe('identityMap.ecid[0]: must be an object with a non-empty string id');
    expect(r({ ecid: [{ id: 'a' }, {}] })).toBe('identityMap.ecid[1].id: required');
    expect(r({ ecid: [{ id: '' }] })).toBe('identityMap.ecid[0].id: must be a non-empty string');
    expect(r({ ecid: [{ id: 5 }] })).toBe('identityMap.ecid[0].id: must be a non-empty string');
    expect(r({ ecid: [{ id: 'a', extra: { deep: undefined } }] })).toBe('identityMap.ecid[0].extra.deep: must be a JSON value');
    expect(r(JSON.parse('{"__proto__":[{"id":"a"}]}'))).toBe('identityMap.__proto__: key not allowed (__proto__ is no identity namespace or audience id)');
  });

  it('checks removedIdentities: an object of arrays of strings', () => {
    const r = (removedIdentities: unknown) => shapeReason({ profileId: 'p', removedIdentities });
    expect(r(['a'])).toBe('removedIdentities: must be an object of arrays of strings');
    expect(r({ ecid: 'a' })).toBe('removedIdentities.ecid: must be an array of strings');
    expect(r({ ecid: ['a', { id: 'b' }] })).toBe('removedIdentities.ecid[1]: must be a string');
    expect(r(JSON.parse('{"__proto__":["a"]}'))).toBe('removedIdentities.__proto__: key not allowed (__proto__ is no identity namespace or audience id)');
  });

  it('checks segmentMembership.ups records', () => {
    const r = (segmentMembership: unknown) => shapeReason({ profileId: 'p', segmentMembership });
    expect(r('x')).toBe('segmentMembership: must be an object');
    expect(r({ ups: [] })).toBe('segmentMembership.ups: must be an object');
    expect(r({ ups: { 'aud-1': 'realized' } })).toBe('segmentMembership.ups.aud-1: must be an object with a status');
    expect(r({ ups: { 'aud-1': {} } })).toBe('segmentMembership.ups.aud-1.status: required');
    expect(r({ ups: { 'aud-1': { status: 'qualified' } } })).toBe(
      'segmentMembership.ups.aud-1.status: must be one of realized, existing, exited',
    );
    expect(r({ ups: { 'aud.1': { status: 1 } } })).toBe(
      'segmentMembership.ups["aud.1"].status: must be one of realized, existing, exited',
    );
    expect(r({ ups: { a: { status: 'exited', lastQualificationTime: 'soon' } } })).toBe(
      'segmentMembership.ups.a.lastQualificationTime: must be an ISO-8601 date string, e.g. 2026-11-26T10:00:00Z',
    );
  });

  it('shortens very long keys in the reason', () => {
    const key = 'k'.repeat(1000);
    const reason = shapeReason({ profileId: 'p', segmentMembership: { ups: { [key]: {} } } });
    expect(reason.length).toBeLessThan(200);
    expect(reason).toBe(`segmentMembership.ups.${'k'.repeat(79)}….status: required`);
  });

  it('never puts the offending value in the reason', () => {
    const reason = shapeReason({ profileId: 'p', attributes: { email: { address: Symbol('john@x.com') } } });
    expect(reason).toBe('attributes.email.address: must be a JSON value');
    expect(shapeReason({ profileId: 'p', timestamp: 'secret-ish text' })).not.toContain('secret-ish');
  });
});

describe('decodeEvent', () => {
  const opts = { maxBytes: 1024 };

  it('decodes text and bytes (with or without a BOM) into the same update', () => {
    const text = JSON.stringify(full);
    const big = { maxBytes: 1 << 20 };
    expect(decodeEvent(text, big)).toEqual(full);
    expect(decodeEvent(new TextEncoder().encode(text), big)).toEqual(full);
    expect(decodeEvent(`\uFEFF${text}`, big)).toEqual(full);
    expect(decodeEvent(new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode(text)]), big)).toEqual(full);
  });

  it('rejects events over maxBytes, counting UTF-8 bytes', () => {
    const exactly = `{"profileId":"${'x'.repeat(1024 - 16)}"}`;
    expect(exactly.length).toBe(1024);
    expect(decodeEvent(exactly, opts).profileId).toHaveLength(1008);

    const over = rejection(() => decodeEvent(`${exactly} `, opts));
    expect(over.code).toBe('ERR_EVENT_TOO_LARGE');
    expect(over.message).toBe('event: 1025 bytes is over the limit of 1024 bytes');

    // 510 chars of 'é' are 1020 bytes: under the limit as chars, over it as bytes.
    const wide = `{"profileId":"${'é'.repeat(510)}"}`;
    expect(wide.length).toBeLessThan(1024);
    const e = rejection(() => decodeEvent(wide, opts));
    expect(e.code).toBe('ERR_EVENT_TOO_LARGE');
    expect(e.message).toBe('event: 1036 bytes is over the limit of 1024 bytes');

    const bytes = rejection(() => decodeEvent(new Uint8Array(1025), opts));
    expect(bytes.code).toBe('ERR_EVENT_TOO_LARGE');
    expect(bytes.message).toBe('event: 1025 bytes is over the limit of 1024 bytes');
  });

  it('rejects text that is not JSON with the parser message', () => {
    const e = rejection(() => decodeEvent('{"profileId": "p",}', opts));
    expect(e.code).toBe('ERR_EVENT_JSON');
    expect(e.message).toMatch(/^event: not valid JSON: .*position 18/);
    const empty = rejection(() => decodeEvent('', opts));
    expect(empty.message).toBe('event: not valid JSON: Unexpected end of JSON input');
  });

  it('keeps the parser message short', () => {
    const e = rejection(() => decodeEvent(`nope${'x'.repeat(900)}`, opts));
    expect(e.code).toBe('ERR_EVENT_JSON');
    expect(e.message.length).toBeLessThanOrEqual('event: not valid JSON: '.length + 200);
  });

  it('rejects bytes that are not UTF-8', () => {
    const e = rejection(() => decodeEvent(new Uint8Array([0x7b, 0xff, 0x7d]), opts));
    expect(e.code).toBe('ERR_EVENT_ENCODING');
    expect(e.message).toBe('event: not valid UTF-8');
  });

  it('requires a JSON object', () => {
    for (const [text, kind] of [['[]', 'an array'], ['"p"', 'a string'], ['3', 'a number'], ['null', 'null']]) {
      const e = rejection(() => decodeEvent(text, opts));
      expect(e.code).toBe('ERR_EVENT_SHAPE');
      expect(e.message).toBe(`event: must be a JSON object, not ${kind}`);
    }
  });

  it('validates after parsing', () => {
    const e = rejection(() => decodeEvent('{"profileId":"p","segmentMembership":{"ups":{"aud-1":{"status":"in"}}}}', opts));
    expect(e.code).toBe('ERR_EVENT_SHAPE');
    expect(e.message).toBe('segmentMembership.ups.aud-1.status: must be one of realized, existing, exited');
    const proto = rejection(() => decodeEvent('{"profileId":"p","segmentMembership":{"ups":{"__proto__":{"status":"realized"}}}}', opts));
    expect(proto.message).toBe('segmentMembership.ups.__proto__: key not allowed (__proto__ is no identity namespace or audience id)');
  });

  it('rejects deep nesting from JSON without overflowing the stack', () => {
    const n = 100_000;
    const text = `{"profileId":"p","attributes":${'{"a":'.repeat(n)}1${'}'.repeat(n + 1)}`;
    const e = rejection(() => decodeEvent(text, { maxBytes: 1 << 20 }));
    expect(e.code).toBe('ERR_EVENT_SHAPE');
    expect(e.message).toMatch(/nested deeper than 64 levels$/);
  });
});

describe('isIsoDate', () => {
  it('knows leap years and month lengths', () => {
    expect(isIsoDate('2000-02-29')).toBe(true);
    expect(isIsoDate('1900-02-29')).toBe(false);
    expect(isIsoDate('2026-04-31')).toBe(false);
    expect(isIsoDate('2026-12-31T23:59:59.999999999Z')).toBe(true);
    expect(isIsoDate('2026-12-31T23:60:00Z')).toBe(false);
    expect(isIsoDate('2026-12-31T10:00:00+24:00')).toBe(false);
    expect(isIsoDate('2026-12-31T10:00:00+01')).toBe(false);
  });

  it('accepts only forms that Date.parse can turn into a time', () => {
    const forms = ['2026-11-26', '2026-11-26T10:00', '2026-11-26t10:00:00z', '2026-11-26T10:00:00.123456789Z', '2026-11-26T10:00:00+0130', '2026-11-26T10:00:00-01:30'];
    for (const s of forms) {
      expect(isIsoDate(s)).toBe(true);
      expect(Number.isFinite(Date.parse(s))).toBe(true);
    }
  });

  it('reads exactly the grammar of its regular expression (a differential test over 200,000 near-dates)', () => {
    // The rule as it was written first: a regex and range checks. isIsoDate reads the same
    // grammar by character codes; any string on which they differ fails here.
    const RE = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(?:[Zz]|[+-](\d{2}):?(\d{2}))?)?$/;
    const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    const reference = (x: string): boolean => {
      const m = RE.exec(x);
      if (m === null) return false;
      const [year, month, day] = [+m[1], +m[2], +m[3]];
      if (month < 1 || month > 12 || day < 1) return false;
      const leap = month === 2 && ((year % 4 === 0 && year % 100 !== 0) || year % 400 === 0);
      if (day > DAYS[month - 1] + (leap ? 1 : 0)) return false;
      if (m[4] !== undefined && (+m[4] > 23 || +m[5] > 59 || (m[6] !== undefined && +m[6] > 59))) return false;
      if (m[7] !== undefined && (+m[7] > 23 || +m[8] > 59)) return false;
      return true;
    };
    let seed = 7;
    const rnd = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const pieces = ['2026', '2000', '1900', '-', '02', '29', '30', '31', '12', '13', '00', 'T', 't', ' ', ':', '23', '24', '59', '60', '.', '1', '123456789', '1234567890', 'Z', 'z', '+', '-', '01', '0130', '1', 'x', '٣', ''];
    const mutate = (x: string): string => {
      const i = rnd(x.length + 1);
      const op = rnd(3);
      const c = pieces[rnd(pieces.length)];
      return op === 0 ? x.slice(0, i) + c + x.slice(i) : op === 1 ? x.slice(0, i) + x.slice(i + 1) : x.slice(0, i) + c + x.slice(i + c.length);
    };
    const bases = ['2026-11-26', '2026-11-26T10:00', '2024-02-29T23:59:59.5Z', '2000-02-29t00:00:00.123456789+01:30', '2026-11-26T10:00:00-0130', '2026-12-31T10:00:00z'];
    let accepted = 0;
    for (let n = 0; n < 200_000; n++) {
      let x = bases[rnd(bases.length)];
      for (let k = rnd(4); k > 0; k--) x = mutate(x);
      const want = reference(x);
      if (isIsoDate(x) !== want) expect({ x, isIsoDate: isIsoDate(x) }).toEqual({ x, isIsoDate: want });
      if (want) accepted++;
    }
    expect(accepted).toBeGreaterThan(10_000);
  });
});
