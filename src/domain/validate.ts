/**
 * Validation of input events (SPEC §2). Pure: no I/O, no RxJS.
 *
 * Hand-written checks, not zod: this runs once per message at 10,000+ messages/s, so it
 * walks each object once, builds no path strings on success (only the result object), and
 * spells out a message only on failure.
 *
 * Input rules beyond SPEC §2's shape (all rejections, with a reason):
 * - **Numbers** must lie within ±(2^53−1) (`Number.MAX_SAFE_INTEGER`), the range where every
 *   integer is exact in JSON (I-JSON, RFC 7493 §2.2). Beyond it a literal such as
 *   `12345678901234567890` silently becomes another number, and `1e400` becomes Infinity
 *   (exported as `null`): send large numbers and numeric ids as strings. Fractions inside the
 *   range are kept as IEEE doubles, as every JSON reader does.
 * - **Text** must be Unicode: bytes must be valid UTF-8 (`ERR_EVENT_ENCODING`), and no string
 *   or key may hold a lone surrogate (`"\ud800"`), which has no UTF-8 form (it would turn into
 *   U+FFFD on the way to Redis or the endpoint, and two profile ids could become one).
 * - `__proto__` is refused as an identity namespace or audience id (it names neither, and a
 *   receiver's JavaScript would read it as the object's prototype); as an attribute name it
 *   is data. Every other key (`constructor`, `toString`…) is ordinary data.
 *
 * Every failure is an `EventRejectedError` whose message names the offending field, e.g.
 * `segmentMembership.ups.aud-1.status: must be one of realized, existing, exited`. Messages
 * describe the rule that was broken, never the value (values may hold personal data).
 */
import { EventRejectedError } from '../errors.js';
import type {
  IdentityMap,
  JsonObject,
  MembershipRecord,
  ProfileUpdate,
} from './types.js';

/** Options of `decodeEvent`. */
export interface DecodeEventOptions {
  /** Largest accepted event, in UTF-8 bytes. */
  maxBytes: number;
}

/**
 * How deep `attributes` may nest. JSON itself has no limit, but the deep merge and diff
 * downstream are recursive; an event nested thousands deep would overflow their stack, so
 * it is rejected here, with a reason, instead.
 */
export const MAX_ATTRIBUTE_DEPTH = 64;

const STATUSES: ReadonlySet<string> = new Set(['realized', 'existing', 'exited']);

/**
 * Checks that `input` is a profile update as SPEC §2 describes and returns it typed.
 *
 * Unknown top-level keys are accepted and left out of the result: upstream schemas grow,
 * and an event must not be rejected for carrying a field this version does not know yet.
 * An optional top-level field (and `segmentMembership.ups`, `lastQualificationTime`) that
 * is `null` counts as absent, as many JSON writers emit `null` for "not set".
 *
 * @example
 * const update = validateEvent({ profileId: 'p-1', attributes: { person: { age: 3 } } });
 * @throws {EventRejectedError} code `ERR_EVENT_SHAPE`, the message naming the field.
 */
export function validateEvent(input: unknown): ProfileUpdate {
  const out = check(input, false);
  if (!allWellFormed(out)) throw loneSurrogate();
  return out;
}

/**
 * Decodes one raw event: size limit, UTF-8, JSON, then `validateEvent`.
 *
 * @example
 * const update = decodeEvent('{"profileId":"p-1"}', { maxBytes: 1_048_576 });
 * @throws {EventRejectedError} `ERR_EVENT_TOO_LARGE` over `maxBytes`; `ERR_EVENT_ENCODING` for
 *   bytes that are not UTF-8 or a lone surrogate in a string or key; `ERR_EVENT_JSON` for text
 *   that is not JSON (with the parser's message); else `ERR_EVENT_SHAPE`.
 */
export function decodeEvent(data: string | Uint8Array, opts: DecodeEventOptions): ProfileUpdate {
  const { maxBytes } = opts;
  let text: string;
  if (typeof data === 'string') {
    // A UTF-16 unit is 1–3 UTF-8 bytes (a surrogate pair, 2 units, is 4 bytes), so only
    // strings in the ambiguous band need an exact count.
    if (data.length > maxBytes || (data.length * 3 > maxBytes && Buffer.byteLength(data, 'utf8') > maxBytes)) {
      throw tooLarge(Buffer.byteLength(data, 'utf8'), maxBytes);
    }
    text = data;
  } else {
    if (data.byteLength > maxBytes) throw tooLarge(data.byteLength, maxBytes);
    try {
      text = utf8.decode(data);
    } catch {
      throw new EventRejectedError('ERR_EVENT_ENCODING', 'event: not valid UTF-8');
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (err) {
    throw new EventRejectedError('ERR_EVENT_JSON', `event: not valid JSON: ${shortMessage(err)}`);
  }
  // A lone surrogate gets into the parsed value only through a `\uD8xx`-style escape (bytes
  // were decoded strictly) or a string argument that holds one: only then walk every string.
  // JSON.parse only produces JSON values: the attribute walk can skip the value checks.
  const out = check(parsed, true);
  // Only fields the update keeps are checked: an unknown top-level field is ignored whatever it holds.
  if (((text.includes('\\u') && LONE_SURROGATE_ESCAPE.test(text)) || (typeof data === 'string' && !isWellFormed(text))) && !allWellFormed(out)) {
    throw loneSurrogate();
  }
  return out;
}

// ---------------------------------------------------------------------------------------

/** Fatal: invalid UTF-8 is a rejection, not silently replaced characters. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A JSON escape of a surrogate code unit (a pair written as two escapes matches too). */
const LONE_SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;
/** A surrogate code unit that is not part of a pair. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** `String.prototype.isWellFormed` (Node 20; not in the ES2022 typings), else a regex. */
const nativeWellFormed = (String.prototype as { isWellFormed?: (this: string) => boolean }).isWellFormed;

function isWellFormed(s: string): boolean {
  return nativeWellFormed ? nativeWellFormed.call(s) : !LONE_SURROGATE.test(s);
}

function loneSurrogate(): EventRejectedError {
  return new EventRejectedError('ERR_EVENT_ENCODING', 'event: a string or key holds a lone UTF-16 surrogate (not Unicode text)');
}

/**
 * Whether every string and key under `root` is well-formed UTF-16. Iterative (any depth), and
 * each object is visited once (a non-JSON input may hold cycles in fields no walk checked).
 */
function allWellFormed(root: unknown): boolean {
  const stack: unknown[] = [root];
  const seen = new Set<object>();
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') {
      if (!isWellFormed(v)) return false;
    } else if (typeof v === 'object' && v !== null) {
      if (seen.has(v)) continue;
      seen.add(v);
      if (Array.isArray(v)) {
        for (const x of v) stack.push(x);
        continue;
      }
      for (const k of Object.keys(v)) {
        if (!isWellFormed(k)) return false;
        stack.push((v as Record<string, unknown>)[k]);
      }
    }
  }
  return true;
}

/** The exact range of JSON numbers (I-JSON): beyond it integers are not exact. */
const MAX_NUMBER = Number.MAX_SAFE_INTEGER;
const NUMBER_RULE = `must be a number within ±${MAX_NUMBER} (2^53−1, where JSON numbers are exact); send larger numbers as strings`;

function tooLarge(bytes: number, maxBytes: number): EventRejectedError {
  return new EventRejectedError(
    'ERR_EVENT_TOO_LARGE',
    `event: ${bytes} bytes is over the limit of ${maxBytes} bytes`,
  );
}

function shortMessage(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}

function reject(path: string, rule: string): never {
  throw new EventRejectedError('ERR_EVENT_SHAPE', `${path}: ${rule}`);
}

/** A plain object: not null, not an array, not a Date/Map/class instance. */
function isObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function kindOf(v: unknown): string {
  if (v === null || v === undefined) return String(v);
  if (Array.isArray(v)) return 'an array';
  const t = typeof v;
  return t === 'object' ? 'an instance of a class' : `a ${t}`;
}

const SIMPLE_KEY = /^[A-Za-z0-9_$-]+$/;

/** `parent.key`, or `parent["odd key"]` when the key would make the path ambiguous. */
function child(parent: string, key: string): string {
  const shown = key.length > 80 ? `${key.slice(0, 79)}…` : key;
  return SIMPLE_KEY.test(key) ? `${parent}.${shown}` : `${parent}[${JSON.stringify(shown)}]`;
}

function check(input: unknown, fromJson: boolean): ProfileUpdate {
  if (!isObject(input)) reject('event', `must be a JSON object, not ${kindOf(input)}`);

  const profileId = input.profileId;
  if (typeof profileId !== 'string' || profileId.length === 0) {
    reject('profileId', profileId == null ? 'required' : 'must be a non-empty string');
  }
  const out: ProfileUpdate = { profileId };

  const eventId = input.eventId;
  if (eventId != null) {
    if (typeof eventId !== 'string') reject('eventId', 'must be a string');
    out.eventId = eventId;
  }

  const timestamp = input.timestamp;
  if (timestamp != null) {
    if (typeof timestamp !== 'string' || !isIsoDate(timestamp)) {
      reject('timestamp', 'must be an ISO-8601 date string, e.g. 2026-11-26T10:00:00Z');
    }
    out.timestamp = timestamp;
  }

  const attributes = input.attributes;
  if (attributes != null) {
    checkAttributes(attributes, fromJson);
    out.attributes = attributes as JsonObject;
  }

  const identityMap = input.identityMap;
  if (identityMap != null) {
    checkIdentityMap(identityMap, fromJson);
    out.identityMap = identityMap as IdentityMap;
  }

  const removed = input.removedIdentities;
  if (removed != null) {
    checkRemovedIdentities(removed);
    out.removedIdentities = removed as Record<string, string[]>;
  }

  const segmentMembership = input.segmentMembership;
  if (segmentMembership != null) {
    if (!isObject(segmentMembership)) reject('segmentMembership', 'must be an object');
    const ups = segmentMembership.ups;
    if (ups != null) {
      checkUps(ups);
      out.segmentMembership = { ups: ups as Record<string, MembershipRecord> };
    } else {
      out.segmentMembership = {};
    }
  }
  return out;
}

/**
 * Keys and indexes from the walk's root to the current node. Shared (the walk is synchronous
 * and never re-entered) so that a successful walk builds no path strings at all; the path is
 * only spelled out when a rule is broken.
 */
const trail: (string | number)[] = [];

function rejectAt(root: string, rule: string): never {
  let path = root;
  for (const k of trail) path = typeof k === 'number' ? `${path}[${k}]` : child(path, k);
  trail.length = 0;
  reject(path, rule);
}

/**
 * Walks a JSON tree under `root` (with `trail` already holding the keys down to `node`):
 * refuses nesting beyond MAX_ATTRIBUTE_DEPTH always; for input that did not come from
 * JSON.parse, also checks that every value is JSON (no undefined, function, NaN, Date…).
 * A key named `__proto__` is data here (the attribute merge stores it as an own property).
 */
function walk(root: string, node: object, depth: number, fromJson: boolean): void {
  if (depth > MAX_ATTRIBUTE_DEPTH) rejectAt(root, `nested deeper than ${MAX_ATTRIBUTE_DEPTH} levels`);
  if (Array.isArray(node)) {
    for (let i = 0; i < node.length; i++) {
      const v: unknown = node[i];
      if (typeof v === 'object' && v !== null) {
        trail.push(i);
        walk(root, v, depth + 1, fromJson);
        trail.pop();
      } else if (!fromJson && !isJsonScalar(v)) {
        trail.push(i);
        rejectAt(root, 'must be a JSON value');
      } else if (typeof v === 'number' && !(v <= MAX_NUMBER && v >= -MAX_NUMBER)) {
        trail.push(i);
        rejectAt(root, NUMBER_RULE);
      }
    }
    return;
  }
  if (!fromJson && !isObject(node)) rejectAt(root, 'must be a JSON value');
  const obj = node as Record<string, unknown>;
  for (const key in obj) {
    const v = obj[key];
    if (typeof v === 'object' && v !== null) {
      trail.push(key);
      walk(root, v, depth + 1, fromJson);
      trail.pop();
    } else if (!fromJson && !isJsonScalar(v)) {
      trail.push(key);
      rejectAt(root, 'must be a JSON value');
    } else if (typeof v === 'number' && !(v <= MAX_NUMBER && v >= -MAX_NUMBER)) {
      trail.push(key);
      rejectAt(root, NUMBER_RULE);
    }
  }
}

function isJsonScalar(v: unknown): boolean {
  return v === null || typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v));
}

function checkAttributes(attributes: unknown, fromJson: boolean): void {
  if (!isObject(attributes)) reject('attributes', 'must be an object');
  trail.length = 0;
  walk('attributes', attributes, 1, fromJson);
}

// `__proto__` names no identity namespace and no audience, and in the payload it would reach
// the endpoint as `identityMap.__proto__` / `ups.__proto__`, which a receiver's JavaScript
// (a naive merge) could take for the object's prototype. JSON.parse makes it an ordinary own
// key, so it reaches us: it is refused with that reason. (The domain would store it as data:
// it never reads a key through the prototype chain, nor assigns one with `obj[key] =`.)
const PROTO_RULE = 'key not allowed (__proto__ is no identity namespace or audience id)';

function checkIdentityMap(map: unknown, fromJson: boolean): void {
  if (!isObject(map)) reject('identityMap', 'must be an object of arrays of identities');
  trail.length = 0;
  for (const ns in map) {
    trail.push(ns);
    if (ns === '__proto__') rejectAt('identityMap', PROTO_RULE);
    const list = map[ns];
    if (!Array.isArray(list)) rejectAt('identityMap', 'must be an array of identities');
    for (let i = 0; i < list.length; i++) {
      trail.push(i);
      const identity: unknown = list[i];
      if (!isObject(identity)) rejectAt('identityMap', 'must be an object with a non-empty string id');
      const id = identity.id;
      if (typeof id !== 'string' || id.length === 0) {
        trail.push('id');
        rejectAt('identityMap', id === undefined ? 'required' : 'must be a non-empty string');
      }
      // Extra identity fields (authenticatedState, primary…) are kept; they must be JSON.
      walk('identityMap', identity, 1, fromJson);
      trail.pop();
    }
    trail.pop();
  }
}

function checkRemovedIdentities(removed: unknown): void {
  if (!isObject(removed)) reject('removedIdentities', 'must be an object of arrays of strings');
  for (const ns in removed) {
    if (ns === '__proto__') reject(child('removedIdentities', ns), PROTO_RULE);
    const list = removed[ns];
    if (!Array.isArray(list)) reject(child('removedIdentities', ns), 'must be an array of strings');
    for (let i = 0; i < list.length; i++) {
      if (typeof list[i] !== 'string') reject(`${child('removedIdentities', ns)}[${i}]`, 'must be a string');
    }
  }
}

function checkUps(ups: unknown): void {
  if (!isObject(ups)) reject('segmentMembership.ups', 'must be an object');
  for (const audienceId in ups) {
    if (audienceId === '__proto__') reject(child('segmentMembership.ups', audienceId), PROTO_RULE);
    const record = ups[audienceId];
    if (!isObject(record)) reject(child('segmentMembership.ups', audienceId), 'must be an object with a status');
    const status = record.status;
    if (typeof status !== 'string' || !STATUSES.has(status)) {
      reject(
        `${child('segmentMembership.ups', audienceId)}.status`,
        status === undefined ? 'required' : 'must be one of realized, existing, exited',
      );
    }
    const lqt = record.lastQualificationTime;
    if (lqt != null && (typeof lqt !== 'string' || !isIsoDate(lqt))) {
      reject(
        `${child('segmentMembership.ups', audienceId)}.lastQualificationTime`,
        'must be an ISO-8601 date string, e.g. 2026-11-26T10:00:00Z',
      );
    }
  }
}

// ISO-8601 calendar date, optionally with a time (hh:mm[:ss[.fff]]) and a zone (Z or ±hh[:]mm):
// the forms that Date.parse also reads, so every accepted timestamp can be turned into a time.
// In regular-expression terms (what `isIsoDate` reads, character by character, without the
// match array and substrings a regex would allocate for every timestamp):
//   ^(\d{4})-(\d{2})-(\d{2})(?:[Tt](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(?:[Zz]|[+-](\d{2}):?(\d{2}))?)?$

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** The value of the `n` ASCII digits of `s` at `at`, or -1 when one of them is no digit. */
function digits(s: string, at: number, n: number): number {
  let v = 0;
  for (let i = at; i < at + n; i++) {
    const c = s.charCodeAt(i) - 48;
    if (!(c >= 0 && c <= 9)) return -1; // NaN (past the end) fails too
    v = v * 10 + c;
  }
  return v;
}

/**
 * An ISO-8601 date or date-time that names a real instant. Stricter than `Date.parse`,
 * which takes free text ("March 7") and rolls impossible dates over (Feb 30 → Mar 2); and
 * cheaper (character codes and a few comparisons, nothing allocated).
 */
export function isIsoDate(s: string): boolean {
  const len = s.length;
  if (len < 10) return false;
  const year = digits(s, 0, 4);
  const month = digits(s, 5, 2);
  const day = digits(s, 8, 2);
  if (year < 0 || month < 0 || day < 0 || s.charCodeAt(4) !== 45 /* - */ || s.charCodeAt(7) !== 45) return false;
  if (month < 1 || month > 12 || day < 1) return false;
  const leap = month === 2 && ((year % 4 === 0 && year % 100 !== 0) || year % 400 === 0);
  if (day > DAYS_IN_MONTH[month - 1] + (leap ? 1 : 0)) return false;
  if (len === 10) return true;
  // Time: [Tt]hh:mm
  const t = s.charCodeAt(10);
  if ((t !== 84 /* T */ && t !== 116) /* t */ || len < 16 || s.charCodeAt(13) !== 58 /* : */) return false;
  const hh = digits(s, 11, 2);
  const mm = digits(s, 14, 2);
  if (hh < 0 || mm < 0 || hh > 23 || mm > 59) return false;
  let i = 16;
  // [:ss[.f{1,9}]]
  if (s.charCodeAt(i) === 58) {
    const ss = digits(s, i + 1, 2);
    if (ss < 0 || ss > 59) return false;
    i += 3;
    if (s.charCodeAt(i) === 46 /* . */) {
      i++;
      const from = i;
      while (i < len && i - from < 10 && digits(s, i, 1) >= 0) i++;
      if (i === from || i - from > 9) return false;
    }
  }
  if (i === len) return true;
  // Zone: [Zz] | [+-]hh[:]mm
  const z = s.charCodeAt(i);
  if (z === 90 /* Z */ || z === 122 /* z */) return i + 1 === len;
  if (z !== 43 /* + */ && z !== 45 /* - */) return false;
  const zh = digits(s, i + 1, 2);
  i += 3;
  if (s.charCodeAt(i) === 58) i++;
  const zm = digits(s, i, 2);
  if (zh < 0 || zm < 0 || i + 2 !== len) return false;
  return zh <= 23 && zm <= 59;
}
