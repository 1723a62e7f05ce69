/**
 * Domain types: profile updates, snapshots, audiences, dataflows and exports.
 * Pure data, no I/O. See SPEC.md §1–§4.
 */

export type JsonPrimitive = string | number | boolean | null;
export type JsonValue = JsonPrimitive | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/** One identity of a namespace, as in the XDM identity map. Extra fields are kept. */
export interface Identity {
  id: string;
  [key: string]: JsonValue;
}
export type IdentityMap = Record<string, Identity[]>;

export type MembershipStatus = 'realized' | 'existing' | 'exited';

/** One audience membership record as received (`segmentMembership.ups.<audienceId>`). */
export interface MembershipRecord {
  status: MembershipStatus;
  lastQualificationTime?: string;
}

/** A validated profile update event (SPEC §2). */
export interface ProfileUpdate {
  profileId: string;
  eventId?: string;
  timestamp?: string;
  attributes?: JsonObject;
  identityMap?: IdentityMap;
  removedIdentities?: Record<string, string[]>;
  segmentMembership?: { ups?: Record<string, MembershipRecord> };
}

/** The stored state of one profile. */
export interface ProfileSnapshot {
  profileId: string;
  attributes: JsonObject;
  identityMap: IdentityMap;
  /** Audience id → latest membership record (exited ones are kept: they are history). */
  memberships: Record<string, MembershipRecord>;
  /** What the last update applied to it did (for `explain`; see domain/explain.ts). */
  last?: import('./explain.js').StoredLastUpdate;
}

/** What applying one update did to a profile. */
export interface AppliedUpdate {
  update: ProfileUpdate;
  /** `null` when the profile did not exist before this update. */
  before: ProfileSnapshot | null;
  after: ProfileSnapshot;
}

export type AudienceOrigin = 'segmentation' | 'upload';

export interface Audience {
  id: string;
  name: string;
  mergePolicyId: string;
  createdAt: number;
  updatedAt: number;
  origin: AudienceOrigin;
}

export interface AudienceMapping {
  id: string;
  mappingCreatedAt: number;
  mappingUpdatedAt: number;
}

/** The parts of a dataflow that domain decisions need (no transport concerns). */
export interface DataflowRules {
  id: string;
  destinationId: string;
  audiences: AudienceMapping[];
  /** Dotted attribute paths selected for export, e.g. `person.name.firstName`. */
  attributes: string[];
  includeSegmentNames: boolean;
  includeSegmentTimestamps: boolean;
}

/** Why a dataflow exports this update (SPEC §3). */
export type ExportReason = 'membership' | 'identity' | 'attribute' | 'backfill';

/** The per-dataflow decision for one applied update. */
export interface ExportDecision {
  dataflowId: string;
  reasons: ExportReason[];
  /** Mapped audiences the profile entered in this update. */
  entered: string[];
  /** Mapped audiences the profile exited in this update. */
  exited: string[];
}

/** The JSON body of one export (SPEC §4). */
export type ExportPayload = JsonObject;
