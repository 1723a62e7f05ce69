/** `supersede`: a newer export replacing a queued one keeps the older one's audience exits. */
import { describe, expect, it } from 'vitest';
import { supersede } from '../../src/domain/supersede.js';

describe('supersede', () => {
  it('carries over an exit the newer payload does not name', () => {
    const older = { name: 'a', segmentMembership: { ups: { x: { status: 'exited', lastQualificationTime: 't1' }, y: { status: 'realized' } } } };
    const newer = { name: 'b', segmentMembership: { ups: { y: { status: 'realized' } } } };
    expect(supersede(older, newer)).toEqual({ name: 'b', segmentMembership: { ups: { y: { status: 'realized' }, x: { status: 'exited', lastQualificationTime: 't1' } } } });
    expect(newer).toEqual({ name: 'b', segmentMembership: { ups: { y: { status: 'realized' } } } });
  });

  it('keeps the newer record of an audience it names (entered again), and adds nothing without exits', () => {
    const older = { segmentMembership: { ups: { x: { status: 'exited' } } } };
    const newer = { segmentMembership: { ups: { x: { status: 'realized' } } } };
    expect(supersede(older, newer)).toBe(newer);
    expect(supersede({ name: 'a' }, newer)).toBe(newer);
    expect(supersede({ segmentMembership: { ups: { y: { status: 'realized' } } } }, newer)).toBe(newer);
  });

  it('works when the newer payload has no memberships, and keeps `__proto__` a plain key', () => {
    const older = JSON.parse('{"segmentMembership":{"ups":{"__proto__":{"status":"exited"}}}}') as Record<string, never>;
    const out = supersede(older, { name: 'b' }) as { segmentMembership: { ups: Record<string, unknown> } };
    expect(Object.keys(out.segmentMembership.ups)).toEqual(['__proto__']);
    expect(Object.getPrototypeOf(out.segmentMembership.ups)).toBe(Object.prototype);
  });
});
