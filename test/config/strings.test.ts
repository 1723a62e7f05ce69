import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { appendQuery, parseHeaders, parseQueryParameters } from '../../src/config/strings.js';

const P = 'destinations[0].headers';
const Q = 'destinations[0].queryParameters';

/** Runs `fn`, which must throw a ConfigError, and returns it. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

describe('parseHeaders — string form "h1:v1,h2:v2"', () => {
  it('parses name:value items separated by commas', () => {
    expect(parseHeaders('h1:v1,h2:v2', P)).toEqual({ h1: 'v1', h2: 'v2' });
  });

  it('keeps everything after the first ":" so values may contain ":"', () => {
    expect(parseHeaders('x-origin:https://a.example:8443/p,x-time:12:30:00', P)).toEqual({
      'x-origin': 'https://a.example:8443/p',
      'x-time': '12:30:00',
    });
  });

  it('trims whitespace around names, values and items', () => {
    expect(parseHeaders('  x-api-key :  abc def  ,\tx-tenant:acme ', P)).toEqual({
      'x-api-key': 'abc def',
      'x-tenant': 'acme',
    });
  });

  it('ignores empty items (trailing comma) and gives {} for undefined or an empty string', () => {
    expect(parseHeaders('x-a:1,', P)).toEqual({ 'x-a': '1' });
    expect(parseHeaders(undefined, P)).toEqual({});
    expect(parseHeaders('', P)).toEqual({});
  });

  it('allows an empty value', () => {
    expect(parseHeaders('x-empty:', P)).toEqual({ 'x-empty': '' });
  });

  it('an item without ":" is an error naming the item', () => {
    const err = configError(() => parseHeaders('x-a:1,x-b', P));
    expect(err.path).toBe(`${P}[1]`);
    expect(err.message).toBe(`${P}[1]: must be written name:value`);
  });

  it.each([
    ['CR in a value', 'x-a:1,x-b:2\rx-evil:1'],
    ['LF in a value', 'x-a:1,x-b:2\nx-evil:1'],
    ['CRLF in a value', 'x-a:1,x-b:2\r\nx-evil:1'],
    ['LF in a name', 'x-a:1,x-\nb:2'],
  ])('%s is an error naming the header item', (_label, input) => {
    const err = configError(() => parseHeaders(input, P));
    expect(err.path).toBe(`${P}[1]`);
    expect(err.message).toBe(`${P}[1]: header names and values must not contain CR or LF`);
  });

  it('a name that is not an RFC 9110 token is an error', () => {
    expect(configError(() => parseHeaders('x a:1', P)).path).toBe(`${P}[0]`);
    expect(configError(() => parseHeaders(':1', P)).path).toBe(`${P}[0]`);
    expect(configError(() => parseHeaders('x-a:1,x(b):2', P)).path).toBe(`${P}[1]`);
  });

  it('a value with other control characters is an error; a tab is allowed', () => {
    expect(configError(() => parseHeaders('x-a:a\u0000b', P)).path).toBe(`${P}[0]`);
    expect(configError(() => parseHeaders('x-a:a\u007fb', P)).path).toBe(`${P}[0]`);
    expect(parseHeaders('x-a:a\tb', P)).toEqual({ 'x-a': 'a\tb' });
  });

  it('the error message does not echo the header value', () => {
    const err = configError(() => parseHeaders('x-api-key:Zq9secretZq9\r\nx-evil:1', P));
    expect(err.message).not.toContain('Zq9');
  });
});

describe('parseHeaders — map form', () => {
  it('takes the map as is, trimming names and values', () => {
    expect(parseHeaders({ 'x-api-key': ' abc ', 'x-list': 'a, b, c', 'x-url': 'https://h:1/p' }, P)).toEqual({
      'x-api-key': 'abc',
      'x-list': 'a, b, c',
      'x-url': 'https://h:1/p',
    });
  });

  it('CR or LF in a value is an error naming the header by name', () => {
    const err = configError(() => parseHeaders({ 'x-a': '1', 'x-b': 'two\r\nx-evil: 1' }, P));
    expect(err.path).toBe(`${P}.x-b`);
    expect(err.message).toBe(`${P}.x-b: header names and values must not contain CR or LF`);
  });

  it('CR or LF in a name is an error', () => {
    expect(configError(() => parseHeaders({ 'x-b\r': 'v' }, P)).path).toBe(`${P}.x-b\r`);
  });

  it('an invalid name is an error naming it', () => {
    expect(configError(() => parseHeaders({ 'bad name': 'v' }, P)).path).toBe(`${P}.bad name`);
  });
});

describe('parseQueryParameters', () => {
  it('parses "a=1&b=2" into ordered pairs', () => {
    expect(parseQueryParameters('a=1&b=2', Q)).toEqual([
      ['a', '1'],
      ['b', '2'],
    ]);
  });

  it('accepts plain and already-encoded values, decoding them once', () => {
    expect(parseQueryParameters('b=two words&c=two%20words&d=a+b&e=x%26y%3Dz&f=100%25', Q)).toEqual([
      ['b', 'two words'],
      ['c', 'two words'],
      ['d', 'a b'],
      ['e', 'x&y=z'],
      ['f', '100%'],
    ]);
  });

  it('a leading "?" and empty items are ignored; a name without "=" has an empty value', () => {
    expect(parseQueryParameters('?a=1&&flag&', Q)).toEqual([
      ['a', '1'],
      ['flag', ''],
    ]);
  });

  it('keeps "=" inside a value and repeated names', () => {
    expect(parseQueryParameters('a=1=2&a=3', Q)).toEqual([
      ['a', '1=2'],
      ['a', '3'],
    ]);
  });

  it('gives [] for undefined, an empty string and an empty map', () => {
    expect(parseQueryParameters(undefined, Q)).toEqual([]);
    expect(parseQueryParameters('', Q)).toEqual([]);
    expect(parseQueryParameters({}, Q)).toEqual([]);
  });

  it('takes a map as is (no decoding)', () => {
    expect(parseQueryParameters({ a: '1', 'b c': 'x&y=z', d: '50%' }, Q)).toEqual([
      ['a', '1'],
      ['b c', 'x&y=z'],
      ['d', '50%'],
    ]);
  });

  it('an empty name is an error naming the item', () => {
    const err = configError(() => parseQueryParameters('a=1&=2', Q));
    expect(err.path).toBe(`${Q}[1]`);
    expect(err.message).toBe(`${Q}[1]: parameter name must not be empty`);
  });

  it('an invalid %-escape is an error naming the item, without echoing the value', () => {
    const err = configError(() => parseQueryParameters('a=1&token=Zq9secret%zz', Q));
    expect(err.path).toBe(`${Q}[1]`);
    expect(err.message).toBe(`${Q}[1]: is not validly URL-encoded`);
    expect(err.message).not.toContain('Zq9');
  });
});

describe('appendQuery', () => {
  it('returns the endpoint unchanged when there is nothing to append', () => {
    expect(appendQuery('https://x.example/p?flag&k=a%20b', [])).toBe('https://x.example/p?flag&k=a%20b');
    expect(appendQuery('https://x.example/p', [])).toBe('https://x.example/p');
  });

  it('appends to an endpoint without a query, encoding names and values', () => {
    const url = appendQuery('https://x.example/p', [
      ['a', '1'],
      ['b', 'two words'],
      ['c d', 'x&y=z#?'],
      ['e', 'é'],
    ]);
    expect(url).not.toMatch(/\s/);
    expect(url).not.toContain('#');
    const u = new URL(url);
    expect(u.origin + u.pathname).toBe('https://x.example/p');
    expect([...u.searchParams]).toEqual([
      ['a', '1'],
      ['b', 'two words'],
      ['c d', 'x&y=z#?'],
      ['e', 'é'],
    ]);
  });

  it('keeps the query the endpoint already has, then the new parameters, repeated names included', () => {
    const url = appendQuery('https://x.example/p?k=1&a=0', [
      ['a', '1'],
      ['b', 'two words'],
    ]);
    expect(url.startsWith('https://x.example/p?k=1&a=0&')).toBe(true);
    expect([...new URL(url).searchParams]).toEqual([
      ['k', '1'],
      ['a', '0'],
      ['a', '1'],
      ['b', 'two words'],
    ]);
  });

  it('keeps the endpoint\'s own query exactly as written (not re-encoded)', () => {
    // A pre-signed or hand-encoded endpoint query must reach the server byte for byte:
    // `flag` is not `flag=`, and `%20` is not `+` for servers that do not form-decode.
    const url = appendQuery('https://x.example/p?flag&q=a%20b&t=x~y', [['a', '1']]);
    expect(url).toBe('https://x.example/p?flag&q=a%20b&t=x~y&a=1');
  });

  it('puts the query before a fragment', () => {
    const url = appendQuery('https://x.example/p?k=1#frag', [['a', '1']]);
    const u = new URL(url);
    expect(u.hash).toBe('#frag');
    expect([...u.searchParams]).toEqual([
      ['k', '1'],
      ['a', '1'],
    ]);
  });
});
