import { describe, expect, it } from 'vitest';
import { createRedactor, MASK, SecretRegistry } from '../../src/observability/redact.js';

/** Characters that every encoding treats differently: `!'()*~`, space, `/`, `"`, `\`, `+`, `&`, `=`, `%`, non-ASCII. */
const SECRET = `brr!T0k'()*~ é/"\\+&=%x9`;

const lowerHex = (s: string): string => s.replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase());
const rfc3986 = (s: string): string => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
const form = (s: string): string => new URLSearchParams({ s }).toString().slice(2);
/** PHP-style json_encode: `\/` and `\u00e9`. */
const jsonEscaped = (s: string): string =>
  JSON.stringify(s)
    .slice(1, -1)
    .replace(/\//g, '\\/')
    .replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** Every form an endpoint may echo a secret in. */
function echoForms(s: string): Record<string, string> {
  return {
    raw: s,
    encodeURIComponent: encodeURIComponent(s),
    'encodeURIComponent, lower-case hex': lowerHex(encodeURIComponent(s)),
    form: form(s),
    'form, lower-case hex': lowerHex(form(s)),
    'RFC 3986': rfc3986(s),
    'double-encoded': encodeURIComponent(encodeURIComponent(s)),
    'JSON string': JSON.stringify(s).slice(1, -1),
    'JSON, \\/ and \\u00xx': jsonEscaped(s),
    'JSON of the form-encoded value': JSON.stringify(form(s)).slice(1, -1),
    'HTML-escaped': s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/'/g, '&#39;'),
    base64: Buffer.from(s).toString('base64'),
    base64url: Buffer.from(s).toString('base64url'),
    'base64 of the form-encoded value': Buffer.from(form(s)).toString('base64'),
  };
}

/** Every 8-character window of every form of `s` (what must not survive anywhere). */
function fragments(s: string): string[] {
  const out = new Set<string>();
  for (const f of Object.values(echoForms(s))) for (let i = 0; i + 8 <= f.length; i++) out.add(f.slice(i, i + 8));
  return [...out];
}

function expectNoFragment(text: string, s: string): void {
  const found = fragments(s).filter((f) => text.includes(f));
  expect(found, `fragments of the secret in ${JSON.stringify(text)}`).toEqual([]);
}

const redactor = (secrets: string[] = [SECRET]) => createRedactor(secrets, { registry: new SecretRegistry() });

describe('createRedactor().text', () => {
  for (const [name, f] of Object.entries(echoForms(SECRET))) {
    it(`masks the secret echoed ${name}`, () => {
      const out = redactor().text(`before ${f} after`);
      expect(out).toBe(`before ${MASK} after`);
    });
  }

  it('masks a secret whose characters are encoded in mixed ways (some raw, some %xx, some \\u00xx)', () => {
    const mixed = `brr%21T0k'%28)*~+\\u00e9%2f\\"\\\\%2B&amp;=%25x9`;
    expect(redactor().text(`[${mixed}]`)).toBe(`[${MASK}]`);
  });

  it('masks the base64 and base64url of a secret inside a larger blob, at each of the 3 alignments', () => {
    const r = redactor();
    for (const pre of ['', 'a', 'ab', 'abc']) {
      for (const enc of ['base64', 'base64url'] as const) {
        const blob = Buffer.from(`{"authorization":"Bearer ${pre}${SECRET}","n":1}`).toString(enc);
        const out = r.text(blob);
        expect(out).toContain(MASK);
        // what is left beside the mask holds at most a few bits of the secret's first and last bytes
        const decodedRest = out.split(MASK).map((p) => p.length);
        expect(decodedRest.reduce((a, b) => a + b, 0)).toBeLessThan(blob.length - 20);
        expectNoFragment(out, SECRET);
      }
    }
  });

  it('masks the Basic credentials of an OAuth2 client (base64 of urlencoded id:secret)', () => {
    const basic = Buffer.from(`${form('client id')}:${form(SECRET)}`).toString('base64');
    const out = redactor().text(`Authorization: Basic ${basic}`);
    expectNoFragment(out, SECRET);
  });

  it('leaves text without secrets alone, and ignores values shorter than 4 characters', () => {
    const r = redactor([SECRET, 'abc']);
    const text = 'HTTP 500: {"error":"abc def","detail":"upstream%20timeout \\u00e9"}';
    expect(r.text(text)).toBe(text);
  });

  it('masks longer secrets first: a whole `Bearer x` header rather than its `x`', () => {
    const r = redactor(['tok-123456', 'Bearer tok-123456']);
    expect(r.text('auth=Bearer+tok-123456;')).toBe(`auth=${MASK};`);
  });

  it('masks very long secrets (a PEM key) in their whole-string forms', () => {
    const pem = `-----BEGIN ENCRYPTED PRIVATE KEY-----\n${'MIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI'.repeat(30)}\n-----END ENCRYPTED PRIVATE KEY-----\n`;
    const r = redactor([pem]);
    expect(r.text(`k=${pem}.`)).toBe(`k=${MASK}.`);
    expect(r.text(`k=${encodeURIComponent(pem)}.`)).toBe(`k=${MASK}.`);
    expect(r.text(`k=${Buffer.from(pem).toString('base64')}.`)).toBe(`k=${MASK}.`);
  });
});

describe('the secret registry (runtime secrets)', () => {
  it('a redactor made before a secret is registered masks it once it is', () => {
    const registry = new SecretRegistry();
    const r = createRedactor(['config-secret-1'], { registry });
    expect(r.text('token at-xyz-987654')).toBe('token at-xyz-987654');
    registry.add('at-xyz-987654');
    expect(r.text('token at-xyz-987654 and config-secret-1')).toBe(`token ${MASK} and ${MASK}`);
    // and every other redactor of the same registry, the logger's included
    expect(createRedactor([], { registry }).text(form('at-xyz-987654'))).toBe(MASK);
  });

  it('the secrets given to one redactor are known to every redactor of its registry', () => {
    const registry = new SecretRegistry();
    createRedactor(['from-the-config-42'], { registry });
    expect(createRedactor([], { registry }).text('x from-the-config-42 y')).toBe(`x ${MASK} y`);
    expect(registry.has('from-the-config-42')).toBe(true);
    expect(registry.values()).toEqual(['from-the-config-42']);
  });
});

describe('fragments at a cut', () => {
  for (const [name, f] of Object.entries(echoForms(SECRET))) {
    it(`tail() masks what a cut leaves of the secret echoed ${name}`, () => {
      const r = redactor();
      for (const keep of [4, 8, Math.floor(f.length / 2), f.length - 1]) {
        const text = `answer: ${f.slice(0, keep)}`;
        const out = r.tail(r.text(text));
        expect(out.startsWith('answer: ')).toBe(true);
        expectNoFragment(out, SECRET);
        // (base64 padding `=` may stay: it carries nothing)
        expect(out).toMatch(/^answer: \[REDACTED\]=*$/);
      }
    });
  }

  it('tail() masks a fragment followed by the ellipsis an endpoint put after its own cut', () => {
    expect(redactor().tail(`token=${SECRET.slice(0, 9)}…`)).toBe(`token=${MASK}…`);
    expect(redactor().tail(`token=${SECRET.slice(0, 9)}...`)).toBe(`token=${MASK}...`);
  });

  it('tail() leaves a text that ends with no fragment alone', () => {
    const r = redactor();
    expect(r.tail('HTTP 500: upstream failed')).toBe('HTTP 500: upstream failed');
    expect(r.tail(`x ${MASK}`)).toBe(`x ${MASK}`);
  });

  it('cut() masks before cutting: a secret straddling the cut leaves nothing, and no mask is cut in half', () => {
    const r = redactor();
    for (const [name, f] of Object.entries(echoForms(SECRET))) {
      for (let before = 200 - f.length + 1; before < 200; before += 3) {
        const text = `${'p'.repeat(before)}${f} and more text after it`;
        const out = r.cut(text, 200);
        expect(out.length, name).toBeLessThanOrEqual(201);
        expect(out.split(MASK).join(''), name).not.toMatch(/\[R?E?D?A?C?T?E?D?…$/);
        expectNoFragment(out, SECRET);
      }
    }
  });

  it('cut() leaves a short text as it is (masked) and cuts a long one with …', () => {
    const r = redactor();
    expect(r.cut(`a ${SECRET} b`, 200)).toBe(`a ${MASK} b`);
    expect(r.cut('x'.repeat(300), 200)).toBe(`${'x'.repeat(200)}…`);
  });
});

describe('createRedactor().value', () => {
  it('masks credential keys whatever their value, and secrets inside every string', () => {
    const r = redactor();
    const out = r.value({ authorization: 'anything', nested: { list: [`x ${form(SECRET)}`], password: 1 }, err: new Error(`bad ${SECRET}`) });
    expect(out).toEqual({ authorization: MASK, nested: { list: [`x ${MASK}`], password: MASK }, err: { type: 'Error', message: `bad ${MASK}` } });
  });
});
