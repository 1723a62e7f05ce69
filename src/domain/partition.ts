/**
 * The partition of a profile (pool mode): `fnv1a32(utf8(profileId)) mod partitions`.
 *
 * FNV-1a, 32 bits: start with 2166136261; for every byte of the UTF-8 encoding of the
 * profile id, `hash = (hash XOR byte) * 16777619 mod 2^32`. Producers in any language can
 * compute it and publish to `<subject>.<partition>`, e.g. in Python:
 *
 * ```py
 * def partition(profile_id: str, partitions: int = 16) -> int:
 *     h = 2166136261
 *     for b in profile_id.encode('utf-8'):
 *         h = ((h ^ b) * 16777619) & 0xFFFFFFFF
 *     return h % partitions
 * ```
 */

/** FNV-1a (32 bits) of the UTF-8 bytes of `text`. */
export function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  const bytes = Buffer.from(text, 'utf8');
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** The partition of a profile id among `partitions`. */
export function partitionOf(profileId: string, partitions: number): number {
  return fnv1a32(profileId) % partitions;
}

/** The subject a profile's updates are published to. */
export function partitionSubject(subject: string, profileId: string, partitions: number): string {
  return `${subject}.${partitionOf(profileId, partitions)}`;
}
