import { describe, expect, it } from 'vitest';
import { csvToEvents, detectDelimiter, parseCsv } from '../../src/streams/audience-import.js';

const now = new Date('2026-11-26T10:00:00Z');

describe('parseCsv', () => {
  it('splits rows and fields, with quotes, escaped quotes, CRLF and embedded newlines', () => {
    const rows = parseCsv('a,b\r\n"x,1","say ""hi"""\n"multi\nline",z\n');
    expect(rows).toEqual([
      { line: 1, fields: ['a', 'b'] },
      { line: 2, fields: ['x,1', 'say "hi"'] },
      { line: 3, fields: ['multi\nline', 'z'] },
    ]);
  });
  it('reports an unterminated quote with its line and skips blank lines', () => {
    expect(parseCsv('a\n\n"oops\n')).toEqual([{ line: 1, fields: ['a'] }, { line: 3, error: 'unterminated quoted field' }]);
  });
});

describe('csvToEvents', () => {
  it('makes one realized membership event per row, identities from the other columns', () => {
    const r = csvToEvents('profileId,ecid,email_lc_sha256\np-1,111,aaa\np-2,,bbb\n', { audienceId: 'aud-up', now });
    expect(r.bad).toEqual([]);
    expect(r.events).toHaveLength(2);
    expect(r.events[0]).toMatchObject({
      profileId: 'p-1',
      timestamp: '2026-11-26T10:00:00.000Z',
      identityMap: { ecid: [{ id: '111' }], email_lc_sha256: [{ id: 'aaa' }] },
      segmentMembership: { ups: { 'aud-up': { status: 'realized', lastQualificationTime: '2026-11-26T10:00:00.000Z' } } },
    });
    expect(r.events[1].identityMap).toEqual({ email_lc_sha256: [{ id: 'bbb' }] });
  });
  it('reports bad rows with line numbers and imports the rest', () => {
    const r = csvToEvents('profileId,ecid\np-1,1\n,2\np-3\np-4,4,extra\n"p-5,5\n', { audienceId: 'a', now });
    expect(r.events.map((e) => e.profileId)).toEqual(['p-1']);
    expect(r.bad).toEqual([
      { line: 3, reason: 'profileId is empty' },
      { line: 4, reason: 'expected 2 fields, found 1' },
      { line: 5, reason: 'expected 2 fields, found 3' },
      { line: 6, reason: 'unterminated quoted field' },
    ]);
  });
  it('needs a profileId column', () => {
    expect(csvToEvents('id,ecid\n1,2\n', { audienceId: 'a', now }).bad).toEqual([
      { line: 1, reason: 'header: no profileId column (fields split on ","; use --delimiter for another one)' },
    ]);
    expect(csvToEvents('', { audienceId: 'a', now }).bad[0].line).toBe(1);
  });
  it('gives the same event ids for the same file, different ones for another file', () => {
    const a = csvToEvents('profileId\np-1\n', { audienceId: 'a', now });
    const b = csvToEvents('profileId\np-1\n', { audienceId: 'a', now: new Date() });
    const c = csvToEvents('profileId\np-1\np-2\n', { audienceId: 'a', now });
    expect(a.events[0].eventId).toBe(b.events[0].eventId);
    expect(c.events[0].eventId).not.toBe(a.events[0].eventId);
  });
});

describe('delimiters', () => {
  it('detects ; and tab from the header row; , by default and on a tie', () => {
    expect(detectDelimiter('profileId;ecid;email\np-1;1;a,b\n')).toBe(';');
    expect(detectDelimiter('profileId\tecid\np-1\t1\n')).toBe('\t');
    expect(detectDelimiter('profileId,ecid\np-1;1\n')).toBe(',');
    expect(detectDelimiter('profileId\np-1\n')).toBe(',');
    expect(detectDelimiter('"a;b;c",profileId\n')).toBe(',');
    expect(detectDelimiter('profileId,ecid;x\n')).toBe(',');
  });

  it('imports a ;-separated and a tab-separated file like a ,-separated one', () => {
    const comma = csvToEvents('profileId,ecid\np-1,1\n"p;2",2\n', { audienceId: 'a', now });
    const semi = csvToEvents('profileId;ecid\np-1;1\n"p;2";2\n', { audienceId: 'a', now });
    const tab = csvToEvents('profileId\tecid\np-1\t1\n"p;2"\t2\n', { audienceId: 'a', now });
    for (const r of [comma, semi, tab]) {
      expect(r.bad).toEqual([]);
      expect(r.rows).toBe(2);
      expect(r.events.map((e) => [e.profileId, e.identityMap])).toEqual([
        ['p-1', { ecid: [{ id: '1' }] }],
        ['p;2', { ecid: [{ id: '2' }] }],
      ]);
    }
    expect([comma.delimiter, semi.delimiter, tab.delimiter]).toEqual([',', ';', '\t']);
  });

  it('uses the delimiter given, whatever the header looks like', () => {
    const r = csvToEvents('profileId|ecid\np-1|1\n', { audienceId: 'a', now, delimiter: '|' });
    expect(r.events.map((e) => e.identityMap)).toEqual([{ ecid: [{ id: '1' }] }]);
    const forced = csvToEvents('profileId;ecid\np-1;1\n', { audienceId: 'a', now, delimiter: ',' });
    expect(forced.events).toEqual([]);
    expect(forced.bad[0].reason).toMatch(/no profileId column/);
  });
});
