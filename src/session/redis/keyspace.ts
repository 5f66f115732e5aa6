// The Redis keyspace of the shared group session records (README "The Redis
// record store"). Every key starts with the prefix ("cpmpf:" unless told), so
// several PF deployments, or tests, can share one Redis.
//
//   <p>rec:<record id>     hash   v (the record, JSON), rev (its revision: 1, 2, ...),
//                                 by (the sidecar that wrote rev), mark (the newest
//                                 revision another sidecar wrote), calls (its Call-IDs, "\n"-joined)
//   <p>callids             hash   Call-ID -> record id
//   <p>pending:<user>      set    record ids of the served user (userKey) with deferred data pending
//   <p>retention           zset   record id scored by when retention may purge it (ms; +inf: never)
//   <p>changes             pub/sub "<log entry id> <rev> <writer> <record id>" after each write (rev 0: purged)
//   <p>changelog           stream  the same changes, field n "<rev> <writer> <record id>", trimmed to
//                                 about session.redisChangeLog entries: what a sidecar missed while its
//                                 subscription was down is read from here (XRANGE after its last entry id)
//   <p>lease:<slot>        string "<holder> <token>", with the lease's TTL
//   <p>fence:<slot>        string the slot's newest lease token (INCR): a write with an older one is refused
//   <p>slots               string how many slots the served users are hashed into (every sidecar the same)
//   <p>wake:<slot>         pub/sub a registration for a user of the slot, to its holder (JSON, ownership.ts)
//   <p>ua:<holder>         string the holder's SIP UA as Kamailio reaches it (a re-join is routed there),
//                                 with a TTL of three leases (set again at each renewal round)
//
// A record id is (served user, Conversation-ID, Contribution-ID) joined by
// RECORD_ID_SEPARATOR (group-session.ts recordId); the served user is its first part.
import { RECORD_ID_SEPARATOR } from "../group-session.js";

export const DEFAULT_PREFIX = "cpmpf:";

export class Keyspace {
  readonly callIds: string;
  readonly retention: string;
  readonly changes: string;
  readonly changeLog: string;
  readonly recordPattern: string;
  readonly slotCount: string;

  constructor(readonly prefix = DEFAULT_PREFIX) {
    this.callIds = `${prefix}callids`;
    this.retention = `${prefix}retention`;
    this.changes = `${prefix}changes`;
    this.changeLog = `${prefix}changelog`;
    this.recordPattern = `${prefix}rec:*`;
    this.slotCount = `${prefix}slots`;
  }

  record(id: string): string {
    return `${this.prefix}rec:${id}`;
  }

  /** The record id of a `rec:` key. */
  idOfRecordKey(key: string): string {
    return key.slice(this.prefix.length + "rec:".length);
  }

  pending(user: string): string {
    return `${this.prefix}pending:${user}`;
  }

  lease(slot: number): string {
    return `${this.prefix}lease:${slot}`;
  }

  fence(slot: number): string {
    return `${this.prefix}fence:${slot}`;
  }

  wake(slot: number): string {
    return `${this.prefix}wake:${slot}`;
  }

  ua(holder: string): string {
    return `${this.prefix}ua:${holder}`;
  }

  /** The slot of a wake: channel, or undefined. */
  slotOfWake(channel: string): number | undefined {
    const tail = channel.startsWith(`${this.prefix}wake:`) ? channel.slice(this.prefix.length + "wake:".length) : "";
    return /^\d+$/.test(tail) ? Number(tail) : undefined;
  }
}

/** The served user (userKey) a record id starts with. */
export function userOfRecordId(id: string): string {
  const at = id.indexOf(RECORD_ID_SEPARATOR);
  return at < 0 ? id : id.slice(0, at);
}
