// What the sidecar needs of the group session records (src/session/group-session.ts),
// whichever engine keeps them: the local journal (src/session/registry.ts, the
// default) or Redis shared by several sidecars (src/session/redis/).
// Reads are synchronous: both engines answer them from memory (see
// docs/adr/0004-shared-record-store-on-redis.md).
import type { GroupSession, Lifecycle } from "./group-session.js";

/** A write under a served-user slot's lease (redis/slot-leases.ts): refused once a newer lease of the slot was granted. */
export interface Fence {
  slot: number;
  token: number;
}

/** What the PF and deferred delivery need of the group session records. */
export interface RecordStore {
  /** The record one of whose dialogs has this Call-ID. */
  get(callId: string): GroupSession | undefined;
  findByIds(servedUser: string, conversationId: string, contributionId: string): GroupSession | undefined;
  /**
   * Replaces the record (by its identity) and persists it; resolves when it
   * is written. `fence`: the work of a slot's lease holder, refused
   * (CPM_ERR_RECORD_FENCED) once a newer lease was granted; the local journal
   * (one sidecar) has no leases and ignores it.
   */
  put(session: GroupSession, fence?: Fence): Promise<void>;
  /** Removes the record (the lifecycle decided so). */
  purge(id: string): Promise<void>;
}

export interface RecordCounts {
  byLifecycle: Record<Lifecycle, number>;
  pendingDeferred: number;
}

/** The whole surface main.ts, the PF and the admin RPCs use. */
export interface SessionStore extends RecordStore {
  /** Reads what survived the last run; resolves with how many records there are. */
  load(): Promise<number>;
  getById(id: string): GroupSession | undefined;
  /** Every record (operators' views, tests). */
  all(): IterableIterator<GroupSession>;
  readonly size: number;
  /** Records by lifecycle state, and how many have deferred data pending (metrics). */
  counts(): RecordCounts;
  /** The served users (as record keys compare them, userKey) with deferred data pending in some record. */
  pendingUsers(): Set<string>;
  /** Purges what the retention policy says is over; resolves with the purged records. */
  sweep(now?: number): Promise<GroupSession[]>;
  /** Resolves once every change made so far is written. */
  flush(): Promise<void>;
  /** Writes what is pending and lets go of files and connections (shutdown). */
  close(): Promise<void>;
}

export function noCounts(): RecordCounts {
  return { byLifecycle: { active: 0, "client-absent": 0, inactive: 0, terminated: 0, left: 0 }, pendingDeferred: 0 };
}
