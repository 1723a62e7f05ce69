/**
 * Realistic profile updates for the bench, generated on the fly and deterministically (a seeded
 * PRNG): a mix of qualifying, attribute, identity, membership-refresh and exit updates over
 * many profiles, 0.5–1 KB each.
 *
 * Every update writes `bench.sentAt` (the publish time in ms, set by the publisher) and the
 * flow markers `bench.f1` / `bench.f2`. The bench dataflows map `bench.sentAt` and their own
 * marker, so each export body carries the publish time (for end-to-end latency at the
 * receiver) and says which dataflow sent it. Because a mapped attribute is written by every
 * update, every update of a profile that is in a mapped audience exports (SPEC §3), and the
 * generator knows exactly how many exports to expect.
 */

/** Audiences of the bench config: aud-1 and aud-2 share a merge policy; aud-3 has another. */
export const AUDIENCES = [
  { id: 'aud-1', name: 'First name equals John', mergePolicyId: 'mp-1', createdAt: 1648553325000, updatedAt: 1648553330000 },
  { id: 'aud-2', name: 'Loyal customers', mergePolicyId: 'mp-1', createdAt: 1648553325000, updatedAt: 1648553330000 },
  { id: 'aud-3', name: 'Other merge policy', mergePolicyId: 'mp-2', createdAt: 1648553325000, updatedAt: 1648553330000 },
] as const;

/** The mapped attributes of bench dataflow `n` (1-based). */
export function flowAttributes(n: number): string[] {
  const common = ['bench.sentAt', `bench.f${n}`];
  return n % 2 === 1
    ? ['person.name.firstName', 'person.name.lastName', 'person.birthDate', 'personalEmail.address', 'loyalty.tier', ...common]
    : ['person.name', 'personalEmail', 'homeAddress.city', ...common];
}

/** mulberry32: small, fast, good enough for test data (the backbone tests' workloads use it too). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FIRST = ['John', 'Barbara', 'Ada', 'Grace', 'Ken', 'Dennis', 'Margaret', 'Alan', 'Edsger', 'Frances', 'Donald', 'Leslie'];
const LAST = ['Liskov', 'Lovelace', 'Hopper', 'Thompson', 'Ritchie', 'Hamilton', 'Turing', 'Dijkstra', 'Allen', 'Knuth', 'Lamport'];
const CITIES = ['Paris', 'Lyon', 'Berlin', 'Hamburg', 'Madrid', 'Lisbon', 'Oslo', 'Dublin', 'Vienna', 'Prague'];
const TIERS = ['bronze', 'silver', 'gold', 'platinum'];
const PAGES = ['/home', '/products/shoes', '/products/bags', '/cart', '/checkout', '/account', '/search?q=summer'];

export type EventKind = 'qualify' | 'attribute' | 'identity' | 'membership' | 'exit' | 'outside';

export interface GeneratedEvent {
  /** The event without `bench.sentAt` / `timestamp` (the publisher sets them). */
  event: BenchEvent;
  kind: EventKind;
  /** Whether this update exports (to every bench dataflow: they map the same audiences). */
  exports: boolean;
}

export interface BenchEvent {
  profileId: string;
  eventId: string;
  timestamp?: string;
  attributes: { bench: { sentAt?: number; f1: number; f2: number }; [k: string]: unknown };
  identityMap?: Record<string, Array<{ id: string; primary?: boolean }>>;
  removedIdentities?: Record<string, string[]>;
  segmentMembership?: { ups: Record<string, { status: string; lastQualificationTime: string }> };
}

export interface GeneratorOptions {
  /** Distinct profiles the updates are spread over. */
  profiles: number;
  /** Prefix of profile and event ids (one per bench mode, so runs never share profiles). */
  prefix: string;
  seed?: number;
  /**
   * Profile of update i = i mod profiles instead of a random one: with `count = profiles`, every
   * update is its profile's first (qualifying, exporting once) — the embedded mode's backlog of
   * single-update profiles. @default false
   */
  sequential?: boolean;
}

/**
 * Generates updates one by one. A profile's first update qualifies it (full profile: person,
 * email, address, loyalty, preferences, three identities, aud-1 realized, aud-2 half the time).
 * Later updates of a profile that is in: 45% attribute, 20% identity (the phone replaced),
 * 30% membership refresh, 5% exit (out of every audience). A profile that is out re-qualifies
 * 70% of the time, else gets an attribute update that does not export.
 */
export class EventGenerator {
  private readonly rnd: () => number;
  /** 0 = never seen, 1 = in, 2 = out. */
  private readonly state: Uint8Array;
  /** Current phone number index per profile (identity updates replace it). */
  private readonly phone: Uint32Array;
  private n = 0;
  /** Updates generated so far that export. */
  exporting = 0;
  readonly kinds: Record<EventKind, number> = { qualify: 0, attribute: 0, identity: 0, membership: 0, exit: 0, outside: 0 };
  private readonly baseTime = Date.parse('2026-11-26T10:00:00Z');

  constructor(private readonly options: GeneratorOptions) {
    this.rnd = prng(options.seed ?? 42);
    this.state = new Uint8Array(options.profiles);
    this.phone = new Uint32Array(options.profiles);
  }

  private pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rnd() * xs.length)];
  }

  private hex(len: number): string {
    let s = '';
    while (s.length < len) s += (Math.floor(this.rnd() * 0x100000000) >>> 0).toString(16).padStart(8, '0');
    return s.slice(0, len);
  }

  private iso(offsetS: number): string {
    return new Date(this.baseTime + offsetS * 1000).toISOString();
  }

  /** A web context blob (unmapped attributes): what upstream events typically carry along. */
  private context(): Record<string, unknown> {
    return {
      lastVisit: {
        page: this.pick(PAGES),
        referrer: 'https://www.example.com/campaign/' + this.hex(8),
        userAgent: 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36',
        sessionId: this.hex(24),
        durationS: Math.floor(this.rnd() * 900),
      },
    };
  }

  next(): GeneratedEvent {
    const i = this.n++;
    const p = this.options.sequential ? i % this.options.profiles : Math.floor(this.rnd() * this.options.profiles);
    const profileId = `${this.options.prefix}-${p}`;
    const eventId = `${this.options.prefix}-e${i}`;
    const st = this.state[p];
    const first = this.pick(FIRST);
    const last = this.pick(LAST);
    const bench = { f1: 1, f2: 1 };
    let kind: EventKind;
    let event: BenchEvent;
    const r = this.rnd();
    const qual = (status: string) => ({ status, lastQualificationTime: this.iso(i) });

    if (st === 0 || (st === 2 && r < 0.7)) {
      kind = 'qualify';
      const isNew = st === 0;
      this.state[p] = 1;
      const ups: Record<string, { status: string; lastQualificationTime: string }> = { 'aud-1': qual('realized') };
      if (this.rnd() < 0.5) ups['aud-2'] = qual('realized');
      if (this.rnd() < 0.3) ups['aud-3'] = qual('realized');
      event = {
        profileId,
        eventId,
        attributes: {
          bench,
          person: {
            name: { firstName: first, lastName: last },
            birthDate: `19${50 + Math.floor(this.rnd() * 50)}-0${1 + Math.floor(this.rnd() * 9)}-1${Math.floor(this.rnd() * 10)}`,
            gender: this.pick(['female', 'male', 'not_specified']),
          },
          personalEmail: { address: `${first.toLowerCase()}.${last.toLowerCase()}.${p}@example.com`, status: 'active' },
          homeAddress: { street1: `${1 + Math.floor(this.rnd() * 200)} Main Street`, city: this.pick(CITIES), postalCode: String(10000 + p % 89999), countryCode: 'FR' },
          loyalty: { tier: this.pick(TIERS), points: Math.floor(this.rnd() * 10000), joinDate: this.iso(-86400 * 365) },
          preferences: { newsletter: this.rnd() < 0.5, language: this.pick(['fr', 'en', 'de', 'es']) },
        },
        segmentMembership: { ups },
      };
      // Identities come with the profile's first update only (a re-qualification keeps them).
      if (isNew) {
        event.identityMap = {
          ecid: [{ id: `${this.hex(18)}${p}`, primary: true }],
          email_lc_sha256: [{ id: this.hex(64) }],
          phone: [{ id: `+33 6 ${p} 0` }],
        };
      }
    } else if (st === 2) {
      kind = 'outside';
      event = { profileId, eventId, attributes: { bench, loyalty: { points: Math.floor(this.rnd() * 10000) }, ...this.context() } };
    } else if (r < 0.45) {
      kind = 'attribute';
      const attributes: BenchEvent['attributes'] = { bench, ...this.context() };
      const w = this.rnd();
      if (w < 0.3) attributes.person = { name: { firstName: first, lastName: last } };
      else if (w < 0.6) attributes.loyalty = { tier: this.pick(TIERS), points: Math.floor(this.rnd() * 10000) };
      else if (w < 0.8) attributes.personalEmail = { address: `${first.toLowerCase()}.${p}.${i}@example.org` };
      else attributes.homeAddress = { city: this.pick(CITIES) };
      attributes.commerce = {
        lastOrder: { id: `ord-${this.hex(12)}`, total: Math.round(this.rnd() * 50000) / 100, currency: 'EUR', items: 1 + Math.floor(this.rnd() * 5) },
      };
      event = { profileId, eventId, attributes };
    } else if (r < 0.65) {
      kind = 'identity';
      const old = this.phone[p];
      const next = (this.phone[p] = old + 1);
      event = {
        profileId,
        eventId,
        attributes: { bench, ...this.context() },
        identityMap: { phone: [{ id: `+33 6 ${p} ${next}` }] },
        removedIdentities: { phone: [`+33 6 ${p} ${old}`] },
      };
    } else if (r < 0.95) {
      kind = 'membership';
      const ups: Record<string, { status: string; lastQualificationTime: string }> = { 'aud-1': qual('existing') };
      if (this.rnd() < 0.5) ups['aud-3'] = qual('existing');
      event = { profileId, eventId, attributes: { bench, ...this.context() }, segmentMembership: { ups } };
    } else {
      kind = 'exit';
      this.state[p] = 2;
      event = {
        profileId,
        eventId,
        attributes: { bench, ...this.context() },
        segmentMembership: { ups: { 'aud-1': qual('exited'), 'aud-2': qual('exited') } },
      };
    }
    const exports = kind !== 'outside';
    if (exports) this.exporting++;
    this.kinds[kind]++;
    return { event, kind, exports };
  }
}

/** The event as it is published: publish time in `bench.sentAt` and in `timestamp`. */
export function stamp(e: BenchEvent, sentAt: number): string {
  e.attributes.bench.sentAt = sentAt;
  e.timestamp = new Date(sentAt).toISOString();
  return JSON.stringify(e);
}
