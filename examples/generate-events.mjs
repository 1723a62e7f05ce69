#!/usr/bin/env node
// Generates examples/events.jsonl: a few hundred deterministic update events that exercise
// every export rule of SPEC §2–§4, plus a few malformed lines that must be rejected.
// Usage: node examples/generate-events.mjs [count-of-profiles] > examples/events.jsonl
const profiles = Number(process.argv[2] ?? 60);
let seed = 42;
const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
const pick = (a) => a[Math.floor(rand() * a.length)];
const first = ['John', 'Ada', 'Grace', 'Linus', 'Barbara', 'Ken', 'Margaret', 'Dennis'];
const last = ['Doe', 'Lovelace', 'Hopper', 'Torvalds', 'Liskov', 'Thompson', 'Hamilton', 'Ritchie'];
let t = Date.parse('2026-11-26T10:00:00Z');
const ts = () => new Date((t += 1000)).toISOString();
const lines = [];
const emit = (e) => lines.push(JSON.stringify(e));
let n = 0;
const id = () => `evt-${++n}`;
for (let i = 1; i <= profiles; i++) {
  const p = `p-${String(i).padStart(4, '0')}`;
  const fn = pick(first);
  // 1. first sight: attributes and identities, no audience yet → nothing is exported
  emit({ profileId: p, eventId: id(), timestamp: ts(),
    attributes: { person: { name: { firstName: fn, lastName: pick(last) }, birthDate: `19${50 + (i % 50)}-0${1 + (i % 9)}-1${i % 10}`, gender: pick(['f', 'm', 'x']) },
      personalEmail: { address: `${fn.toLowerCase()}.${i}@example.com` }, loyalty: { tier: pick(['gold', 'silver']) } },
    identityMap: { ecid: [{ id: `ecid-${1000 + i}` }], email_lc_sha256: [{ id: `sha-${i}` }] } });
  // 2. qualifies: aud-1 (flow-1 and flow-2) or aud-2 (flow-2 only); every third also aud-3 (another merge policy)
  const aud = i % 2 === 0 ? 'aud-1' : 'aud-2';
  const ups = { [aud]: { status: 'realized', lastQualificationTime: ts() } };
  if (i % 3 === 0) ups['aud-3'] = { status: 'realized', lastQualificationTime: ts() };
  emit({ profileId: p, eventId: id(), timestamp: ts(), segmentMembership: { ups } });
  // 3. realized → existing: no membership change, nothing exported
  emit({ profileId: p, eventId: id(), timestamp: ts(), segmentMembership: { ups: { [aud]: { status: 'existing', lastQualificationTime: ts() } } } });
  // 4. an unmapped attribute written (sibling of a mapped one): nothing exported
  emit({ profileId: p, eventId: id(), timestamp: ts(), attributes: { person: { gender: pick(['f', 'm', 'x']) }, loyalty: { tier: 'platinum' } } });
  // 5. a mapped attribute written (sometimes the same value: still a write)
  if (i % 4 === 0) emit({ profileId: p, eventId: id(), timestamp: ts(), attributes: { person: { name: { firstName: i % 8 === 0 ? fn : pick(first) } } } });
  // 6. identity added, or an existing one re-sent (no change)
  if (i % 5 === 0) emit({ profileId: p, eventId: id(), timestamp: ts(), identityMap: { ecid: [{ id: `ecid-${2000 + i}` }] } });
  if (i % 5 === 1) emit({ profileId: p, eventId: id(), timestamp: ts(), identityMap: { ecid: [{ id: `ecid-${1000 + i}` }] } });
  // 7. exits the audience: exported once more, with status exited
  if (i % 6 === 0) emit({ profileId: p, eventId: id(), timestamp: ts(), segmentMembership: { ups: { [aud]: { status: 'exited', lastQualificationTime: ts() } } } });
  // 8. after exiting, a mapped attribute write exports nothing
  if (i % 6 === 0) emit({ profileId: p, eventId: id(), timestamp: ts(), attributes: { personalEmail: { address: `new.${i}@example.com` } } });
  // 9. an attribute removed with null while in the audience
  if (i % 7 === 0) emit({ profileId: p, eventId: id(), timestamp: ts(), attributes: { person: { birthDate: null } } });
}
// profiles the demo receiver refuses (HTTP 500 every time): retried twice, then stored as failed
emit({ profileId: 'p-fail-1', eventId: id(), timestamp: ts(), attributes: { person: { name: { firstName: 'Fail' } } }, segmentMembership: { ups: { 'aud-1': { status: 'realized', lastQualificationTime: ts() } } } });
// malformed input: rejected with a reason, the stream goes on
lines.push('{"profileId": "p-broken", "attributes": ');
lines.push(JSON.stringify({ attributes: { person: { name: { firstName: 'NoId' } } } }));
lines.push(JSON.stringify({ profileId: 'p-0001', segmentMembership: { ups: { 'aud-1': { status: 'maybe' } } } }));
lines.push(JSON.stringify({ profileId: '', attributes: {} }));
process.stdout.write(lines.join('\n') + '\n');
