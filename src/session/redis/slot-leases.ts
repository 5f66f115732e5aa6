// Ownership leases by served-user slot: the sidecar holding slot k's lease is
// the one that does the live work of the served users hashed to k. A lease
// has a TTL (it lapses when its holder dies or loses Redis) and a fencing
// token, the slot's counter INCRemented at every grant, so a newer holder
// always has a larger token (Kleppmann, "How to do distributed locking",
// 2016: fencing tokens). A record write under the lease carries the token
// (redis-record-store.ts Fence) and Redis refuses it once a newer one was
// granted (scripts.ts PUT_RECORD), so a holder that paused past its TTL
// cannot overwrite the new holder's work.
//
// Wired for deferred deliveries by ownership.ts (who takes, renews and
// releases which slots; wake-ups to the holder).
import type { Redis } from "ioredis";
import { userKey } from "../group-session.js";
import type { Keyspace } from "./keyspace.js";
import type { Fence } from "./redis-record-store.js";
import { ACQUIRE_LEASE, RELEASE_LEASE, RENEW_LEASE, runScript } from "./scripts.js";

export interface Lease extends Fence {
  holder: string;
}

export interface SlotLeasesOptions {
  redis: Redis;
  keyspace: Keyspace;
  /** This sidecar (no spaces). */
  holder: string;
  /** How many slots the served users are spread over. */
  slots: number;
  /** A lease not renewed this long lapses (ms). */
  ttlMs: number;
}

/** FNV-1a (32 bit) of the served user as record keys compare it (tel: ≡ sip:…;user=phone). */
export function slotOf(servedUser: string, slots: number): number {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(userKey(servedUser), "utf8")) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % slots;
}

export class SlotLeases {
  constructor(private readonly opts: SlotLeasesOptions) {
    if (!/^\S+$/.test(opts.holder)) throw new Error("a lease holder's name has no spaces");
    if (!Number.isInteger(opts.slots) || opts.slots < 1) throw new Error("slots must be a positive integer");
  }

  slotOf(servedUser: string): number {
    return slotOf(servedUser, this.opts.slots);
  }

  /** The slot's lease for this holder (a new token, or the same one extended when it holds it already); undefined while another holds it. */
  async acquire(slot: number): Promise<Lease | undefined> {
    const token = await runScript(
      this.opts.redis,
      ACQUIRE_LEASE,
      [this.opts.keyspace.lease(slot), this.opts.keyspace.fence(slot)],
      [this.opts.holder, this.opts.ttlMs],
    );
    return typeof token === "number" ? { slot, token, holder: this.opts.holder } : undefined;
  }

  /** Extends the lease by the TTL; false when it lapsed or another holder has the slot now (stop the slot's work). */
  async renew(lease: Lease): Promise<boolean> {
    const ok = await runScript(
      this.opts.redis,
      RENEW_LEASE,
      [this.opts.keyspace.lease(lease.slot)],
      [lease.holder, lease.token, this.opts.ttlMs],
    );
    return ok === 1;
  }

  /** Gives the slot up at once (drain) instead of letting the TTL run out. */
  async release(lease: Lease): Promise<void> {
    await runScript(this.opts.redis, RELEASE_LEASE, [this.opts.keyspace.lease(lease.slot)], [lease.holder, lease.token]);
  }
}
