import { describeSnapshotStoreContract } from './snapshot-store-contract.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ProfileUpdate } from '../../src/domain/types.js';
import { MAX_PENDING_PER_PROFILE, MemorySnapshotStore } from '../../src/stores/memory-snapshot-store.js';

async function collect(it: AsyncIterable<string[]>): Promise<string[][]> {
  const out: string[][] = [];
  for await (const batch of it) out.push(batch);
  return out;
}

async function allMembers(store: MemorySnapshotStore, audienceId: string): Promise<string[]> {
  return (await collect(store.members(audienceId))).flat().sort();
}

const enter = (profileId: string, aud: string, status: 'realized' | 'existing' = 'realized'): ProfileUpdate => ({
  profileId,
  segmentMembership: { ups: { [aud]: { status } } },
});
const exit = (profileId: string, aud: string): ProfileUpdate => ({
  profileId,
  segmentMembership: { ups: { [aud]: { status: 'exited' } } },
});

describe('MemorySnapshotStore', () => {
  let store: MemorySnapshotStore;
  let seq = 0;
  const ctx = (key?: string) => {
    seq++;
    return { key: key ?? `k:${seq}`, seq };
  };

  beforeEach(() => {
    store = new MemorySnapshotStore();
  });
  afterEach(async () => {
    await store.close();
  });

  describe('apply / get', () => {
    it('get returns null for an unknown profile', async () => {
      expect(await store.get('nobody')).toBeNull();
    });

    it('first apply on a new profile: before is null, after is the merged snapshot', async () => {
      const update: ProfileUpdate = { profileId: 'p-1', attributes: { a: { b: 1 } }, identityMap: { ecid: [{ id: 'e1' }] } };
      const r = await store.apply(update, ctx());
      expect(r.replayed).toBe(false);
      expect(r.before).toBeNull();
      expect(r.update).toBe(update);
      expect(r.after).toEqual({ profileId: 'p-1', attributes: { a: { b: 1 } }, identityMap: { ecid: [{ id: 'e1' }] }, memberships: {}, last: expect.any(Object) });
      expect(await store.get('p-1')).toEqual(r.after);
    });

    it('later applies merge into the stored snapshot and report the previous one as before', async () => {
      const r1 = await store.apply({ profileId: 'p-1', attributes: { a: 1, b: { c: 2 } } }, ctx());
      const r2 = await store.apply({ profileId: 'p-1', attributes: { b: { c: null, d: 3 } } }, ctx());
      expect(r2.replayed).toBe(false);
      expect(r2.before).toEqual(r1.after);
      expect(r2.after.attributes).toEqual({ a: 1, b: { d: 3 } });
      expect(await store.get('p-1')).toEqual(r2.after);
      // the earlier result is not changed by the later apply
      expect(r1.after.attributes).toEqual({ a: 1, b: { c: 2 } });
    });

    it('keeps profiles apart', async () => {
      await store.apply({ profileId: 'p-1', attributes: { a: 1 } }, ctx());
      await store.apply({ profileId: 'p-2', attributes: { a: 2 } }, ctx());
      expect((await store.get('p-1'))?.attributes).toEqual({ a: 1 });
      expect((await store.get('p-2'))?.attributes).toEqual({ a: 2 });
    });

    it('close forgets everything', async () => {
      await store.apply(enter('p-1', 'aud-1'), ctx());
      await store.close();
      expect(await store.get('p-1')).toBeNull();
      expect(await collect(store.members('aud-1'))).toEqual([]);
    });
  });

  describe('replay of unconfirmed messages', () => {
    it('applying an unconfirmed key again returns the first result, replayed, without merging twice', async () => {
      await store.apply({ profileId: 'p-1', identityMap: { ecid: [{ id: 'e0' }] } }, ctx('k:0'));
      const update: ProfileUpdate = {
        profileId: 'p-1',
        identityMap: { ecid: [{ id: 'e1' }] },
        segmentMembership: { ups: { 'aud-1': { status: 'realized' } } },
      };
      const first = await store.apply(update, ctx('k:1'));
      const again = await store.apply(update, ctx('k:1'));
      expect(first.replayed).toBe(false);
      expect(again.replayed).toBe(true);
      expect(again.before).toEqual(first.before);
      expect(again.after).toEqual(first.after);
      // The replay still shows the change, so the exports it owed are found again.
      expect(again.before?.memberships).toEqual({});
      expect(again.after.memberships).toEqual({ 'aud-1': { status: 'realized' } });
      expect(await store.get('p-1')).toEqual(first.after);
    });

    it('a replayed non-idempotent update (an array replace is idempotent; a null removal then re-add is not) is not applied twice', async () => {
      // k:1 removes `a`; k:2 writes `a` again; a replay of k:1 must not remove it a second time.
      await store.apply({ profileId: 'p-1', attributes: { a: 1, b: 1 } }, ctx('k:0'));
      await store.apply({ profileId: 'p-1', attributes: { a: null } }, ctx('k:1'));
      await store.apply({ profileId: 'p-1', attributes: { a: 2 } }, ctx('k:2'));
      const replay = await store.apply({ profileId: 'p-1', attributes: { a: null } }, ctx('k:1'));
      expect(replay.replayed).toBe(true);
      expect(replay.before?.attributes).toEqual({ a: 1, b: 1 });
      expect(replay.after.attributes).toEqual({ b: 1 });
      expect((await store.get('p-1'))?.attributes).toEqual({ a: 2, b: 1 });
    });

    it('after confirm, the same key merges again', async () => {
      const update: ProfileUpdate = { profileId: 'p-1', attributes: { n: 1 } };
      const first = await store.apply(update, ctx('k:1'));
      await store.confirm('p-1', 'k:1');
      const second = await store.apply({ profileId: 'p-1', attributes: { n: 2 } }, ctx('k:1'));
      expect(second.replayed).toBe(false);
      expect(second.before).toEqual(first.after);
      expect(second.after.attributes).toEqual({ n: 2 });
    });

    it('confirming one key leaves the other unconfirmed keys replayable', async () => {
      await store.apply({ profileId: 'p-1', attributes: { n: 1 } }, ctx('k:1'));
      await store.apply({ profileId: 'p-1', attributes: { n: 2 } }, ctx('k:2'));
      await store.confirm('p-1', 'k:1');
      const r2 = await store.apply({ profileId: 'p-1', attributes: { n: 2 } }, ctx('k:2'));
      expect(r2.replayed).toBe(true);
      expect(r2.before?.attributes).toEqual({ n: 1 });
      const r1 = await store.apply({ profileId: 'p-1', attributes: { n: 3 } }, ctx('k:1'));
      expect(r1.replayed).toBe(false);
      expect((await store.get('p-1'))?.attributes).toEqual({ n: 3 });
    });

    it('the same key on another profile is a different message', async () => {
      await store.apply({ profileId: 'p-1', attributes: { n: 1 } }, ctx('k:1'));
      const other = await store.apply({ profileId: 'p-2', attributes: { n: 1 } }, ctx('k:1'));
      expect(other.replayed).toBe(false);
      expect(other.before).toBeNull();
    });

    it('confirming an unknown profile or key is harmless', async () => {
      await expect(store.confirm('nobody', 'k:1')).resolves.toBeUndefined();
      await store.apply({ profileId: 'p-1', attributes: { n: 1 } }, ctx('k:1'));
      await store.confirm('p-1', 'k:unknown');
      expect((await store.apply({ profileId: 'p-1', attributes: { n: 1 } }, ctx('k:1'))).replayed).toBe(true);
      await store.confirm('p-1', 'k:1');
      await store.confirm('p-1', 'k:1');
      expect((await store.apply({ profileId: 'p-1', attributes: { n: 1 } }, ctx('k:1'))).replayed).toBe(false);
    });

    it(`keeps at most ${MAX_PENDING_PER_PROFILE} unconfirmed applications per profile, dropping the oldest`, async () => {
      for (let i = 0; i <= MAX_PENDING_PER_PROFILE; i++) {
        await store.apply({ profileId: 'p-1', attributes: { n: i } }, ctx(`k:${i}`));
      }
      // k:0 was dropped: it merges again; k:1 is still pending.
      expect((await store.apply({ profileId: 'p-1', attributes: { n: 1 } }, ctx('k:1'))).replayed).toBe(true);
      expect((await store.apply({ profileId: 'p-1', attributes: { n: -1 } }, ctx('k:0'))).replayed).toBe(false);
      expect((await store.get('p-1'))?.attributes).toEqual({ n: -1 });
    });
  });

  describe('membership index', () => {
    it('members() lists profiles that entered (realized or existing)', async () => {
      await store.apply(enter('p-1', 'aud-1'), ctx());
      await store.apply(enter('p-2', 'aud-1', 'existing'), ctx());
      await store.apply(enter('p-3', 'aud-2'), ctx());
      expect(await allMembers(store, 'aud-1')).toEqual(['p-1', 'p-2']);
      expect(await allMembers(store, 'aud-2')).toEqual(['p-3']);
    });

    it('an unknown audience has no members (no batches)', async () => {
      expect(await collect(store.members('aud-none'))).toEqual([]);
    });

    it('exited profiles leave the index; re-entering adds them back', async () => {
      await store.apply(enter('p-1', 'aud-1'), ctx());
      await store.apply(enter('p-2', 'aud-1'), ctx());
      await store.apply(exit('p-1', 'aud-1'), ctx());
      expect(await allMembers(store, 'aud-1')).toEqual(['p-2']);
      await store.apply(enter('p-1', 'aud-1', 'existing'), ctx());
      expect(await allMembers(store, 'aud-1')).toEqual(['p-1', 'p-2']);
    });

    it('realized ↔ existing keeps the profile a member once', async () => {
      await store.apply(enter('p-1', 'aud-1'), ctx());
      await store.apply(enter('p-1', 'aud-1', 'existing'), ctx());
      await store.apply(enter('p-1', 'aud-1', 'realized'), ctx());
      expect(await collect(store.members('aud-1'))).toEqual([['p-1']]);
    });

    it('an exit for a never-member does not make it a member', async () => {
      await store.apply(exit('p-1', 'aud-1'), ctx());
      expect(await allMembers(store, 'aud-1')).toEqual([]);
    });

    it('updates without memberships do not change the index', async () => {
      await store.apply(enter('p-1', 'aud-1'), ctx());
      await store.apply({ profileId: 'p-1', attributes: { a: 1 } }, ctx());
      expect(await allMembers(store, 'aud-1')).toEqual(['p-1']);
    });

    it('a replay does not change the index', async () => {
      await store.apply(enter('p-1', 'aud-1'), ctx('k:1'));
      await store.apply(exit('p-1', 'aud-1'), ctx('k:2'));
      await store.apply(enter('p-1', 'aud-1'), ctx('k:1')); // replay of k:1
      expect(await allMembers(store, 'aud-1')).toEqual([]);
    });

    it('yields members in batches of batchSize, the last one partial', async () => {
      for (let i = 0; i < 7; i++) await store.apply(enter(`p-${i}`, 'aud-1'), ctx());
      const batches = await collect(store.members('aud-1', 3));
      expect(batches.map((b) => b.length)).toEqual([3, 3, 1]);
      expect(batches.flat().sort()).toEqual(['p-0', 'p-1', 'p-2', 'p-3', 'p-4', 'p-5', 'p-6']);
    });

    it('an exact multiple of batchSize has no empty trailing batch', async () => {
      for (let i = 0; i < 4; i++) await store.apply(enter(`p-${i}`, 'aud-1'), ctx());
      expect((await collect(store.members('aud-1', 2))).map((b) => b.length)).toEqual([2, 2]);
    });

    it('the default batch size is 500', async () => {
      for (let i = 0; i < 1001; i++) await store.apply(enter(`p-${i}`, 'aud-1'), ctx());
      expect((await collect(store.members('aud-1'))).map((b) => b.length)).toEqual([500, 500, 1]);
    });

    it('one update entering one audience and exiting another updates both', async () => {
      await store.apply(enter('p-1', 'aud-1'), ctx());
      await store.apply(
        { profileId: 'p-1', segmentMembership: { ups: { 'aud-1': { status: 'exited' }, 'aud-2': { status: 'realized' } } } },
        ctx(),
      );
      expect(await allMembers(store, 'aud-1')).toEqual([]);
      expect(await allMembers(store, 'aud-2')).toEqual(['p-1']);
    });
  });
});

describeSnapshotStoreContract('MemorySnapshotStore', async () => {
  const s = new MemorySnapshotStore();
  return {
    store: s,
    cleanup: () => s.close(),
    // Reaching into the private copy: memory loses it only with everything else.
    loseFrozenMembers: async (id) => void (s as unknown as { frozen: Map<string, unknown> }).frozen.delete(id),
  };
});
