// The group session records on Redis / Valkey, shared by every sidecar of a
// deployment (session.store "redis"); the keyspace is in keyspace.ts, the
// atomic writes in scripts.ts, why reads stay synchronous in
// docs/adr/0004-shared-record-store-on-redis.md.
//
// Each sidecar keeps a mirror of every record in memory (live groups parsed,
// ended ones as their stored JSON, read when asked for) and answers get() /
// findByIds() from it. The mirror is kept fresh by the change notices every
// write publishes (pub/sub): a notice from another sidecar makes this one
// read the record again, on the same connection as its own writes, so what
// it applies comes in Redis's order. A write is a compare-and-set against the
// revision the record was read at: a sidecar whose mirror missed another's
// write gets CPM_ERR_RECORD_STALE, nothing is written, and its mirror is
// read again. put() resolves once Redis answered, which with
// `appendfsync always` is after the write reached the AOF on disk.
//
// While Redis cannot be reached a write is held on local disk instead
// (write-ahead.ts, session.redisWriteAhead) and put() resolves once it is
// there, so a decision does not wait for Redis; the mirror has it at once.
// When Redis answers again the latest held write of each record is replayed,
// compare-and-set against the revision it was made at; where another sidecar
// wrote the record meanwhile, the later of the two (updatedAt) stays.
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { CpmError, type ErrorCode } from "../../errors/catalogue.js";
import type { Logger } from "../../log/logger.js";
import { type Metrics, noMetrics } from "../../metrics/metrics.js";
import { purgeAt, type RetentionPolicy } from "../../procedures/lifecycle.js";
import { CallIdIndex, callIdsOf } from "../call-id-index.js";
import { type GroupSession, isGroupActive, type Lifecycle, recordId, recordIdOf } from "../group-session.js";
import { decodeRecord } from "../record-codec.js";
import { type Fence, noCounts, type RecordCounts, type SessionStore } from "../record-store.js";
import { Keyspace, userOfRecordId } from "./keyspace.js";
import { PURGE_RECORD, PUT_RECORD, runScript } from "./scripts.js";
import type { HeldWrite, WriteAhead } from "./write-ahead.js";

/** The revision a record was read at; spread copies carry it into the next put() (a symbol: never in JSON, never on the wire). */
export const REVISION: unique symbol = Symbol("cpm-pf record revision");
type Revised = GroupSession & { [REVISION]?: number };

export type { Fence };

/** A command that gets no answer this long fails (the decision it serves has 200 ms, Kamailio's fail-safe covers it). */
const COMMAND_TIMEOUT_MS = 1000;
/** A replay of held writes that failed with Redis answering is tried again after this long. */
const REPLAY_RETRY_MS = 1000;
/** Records read per SCAN / pipeline at start-up and after a reconnect. */
const SCAN_BATCH = 500;
/** A failed catch-up after a reconnect is tried again after this long. */
const CATCH_UP_RETRY_MS = 1000;
/** A stream entry id, "<ms>-<seq>". */
const ENTRY_ID = /^\d+-\d+$/;

interface Entry {
  /** The revision in Redis this entry is (or, while a write of ours is under way, was) at. */
  rev: number;
  /** A live group's record, parsed. */
  record?: Revised;
  /** An ended group's record as stored (JSON), parsed when asked for. */
  text?: string;
  lifecycle: Lifecycle;
  pendingDeferred: boolean;
  callIds: string[];
}

export interface RedisRecordStoreOptions {
  /** session.redisUrl */
  url: string;
  retention: RetentionPolicy;
  log: Logger;
  metrics?: Pick<Metrics, "recordStored">;
  keyspace?: Keyspace;
  /** This sidecar's name in the records it writes; default host:pid:random. */
  writer?: string;
  /** Where writes go while Redis is unreachable (session.redisWriteAhead); none: put() fails then. */
  writeAhead?: WriteAhead;
  /** About how many changes the change log keeps (session.redisChangeLog). */
  changeLogLength?: number;
}

const DEFAULT_CHANGE_LOG_LENGTH = 100_000;

/** Orders two stream entry ids "<ms>-<seq>" (Redis streams, "Entry IDs"). */
export function compareEntryIds(a: string, b: string): number {
  const [am = "0", as = "0"] = a.split("-");
  const [bm = "0", bs = "0"] = b.split("-");
  const d = BigInt(am) - BigInt(bm) || BigInt(as) - BigInt(bs);
  return d === 0n ? 0 : d < 0n ? -1 : 1;
}

/** A held write's record as the mirror holds it (a symbol: not in the held line's JSON). */
const MIRRORED: unique symbol = Symbol("cpm-pf mirrored record");
type MirroredWrite = HeldWrite & { [MIRRORED]?: Revised };

/** A write sent to Redis whose answer has not come: on a lost connection it is held at once (connectionLost). */
interface Sending {
  w: HeldWrite;
  mine: Revised;
  /** Settles the put() once: the first of the answer and the lost connection decides; `outcome` runs only then. */
  settle(outcome: () => Promise<void>): void;
}

/** What PUT_RECORD answered: written at `rev`, or refused with Redis's newest revision or lease token. */
type PutReply = { outcome: "ok" | "stale" | "fenced"; rev: number };

export class RedisRecordStore implements SessionStore {
  readonly writer: string;
  readonly keys: Keyspace;
  private readonly entries = new Map<string, Entry>();
  private readonly byCallId = new CallIdIndex();
  /** Commands: writes and the reads that refresh the mirror, in one order. */
  private readonly redis: Redis;
  /** Subscribed to the change notices. */
  private readonly subscriber: Redis;
  /** Our writes under way, by record id (the mirror keeps what they wrote). */
  private readonly writing = new Map<string, number>();
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly log: Logger;
  private readonly retention: RetentionPolicy;
  private readonly metrics: Pick<Metrics, "recordStored">;
  private loaded = false;
  private down = false;
  private readonly held: WriteAhead | undefined;
  /** The replay of the held writes running now. */
  private replaying: Promise<void> | undefined;
  /** Writes sent to Redis and not answered yet (with a write-ahead only). */
  private readonly sending = new Set<Sending>();
  private readonly changeLogLength: number;
  /** The change log's newest entry this sidecar has taken in (a notice, or the position read before a full read). */
  private logAt = "0-0";
  /** The subscription dropped after this change log entry: what came after it is read from the log (catchUp). */
  private missedFrom: string | undefined;
  /** The catch-up running now. */
  private catchingUp: Promise<void> | undefined;

  constructor(opts: RedisRecordStoreOptions) {
    this.log = opts.log;
    this.retention = opts.retention;
    this.metrics = opts.metrics ?? noMetrics;
    this.keys = opts.keyspace ?? new Keyspace();
    this.writer = opts.writer ?? `${hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`;
    this.held = opts.writeAhead;
    this.changeLogLength = opts.changeLogLength ?? DEFAULT_CHANGE_LOG_LENGTH;
    // one retry per command across a reconnect, then the caller hears of it
    const common = { lazyConnect: true, maxRetriesPerRequest: 1, enableAutoPipelining: false };
    this.redis = new Redis(opts.url, { ...common, commandTimeout: COMMAND_TIMEOUT_MS, connectionName: `cpmpf-records:${this.writer}` });
    this.subscriber = new Redis(opts.url, { ...common, connectionName: `cpmpf-changes:${this.writer}` });
    for (const c of [this.redis, this.subscriber]) {
      c.on("error", (err: Error) => this.outage(err));
      c.on("ready", () => this.back());
    }
    this.redis.on("close", () => this.connectionLost());
  }

  /** Records whose latest write is held on local disk until Redis takes it (metrics). */
  get heldWrites(): number {
    return this.held?.size ?? 0;
  }

  /** The command connection (the leases share it: one connection per sidecar). */
  get connection(): Redis {
    return this.redis;
  }

  async load(): Promise<number> {
    const held = (await this.held?.open()) ?? [];
    try {
      await Promise.all([this.redis.connect(), this.subscriber.connect()]);
      this.subscriber.on("message", (_channel: string, notice: string) => this.onChange(notice));
      // subscribed before the scan: a write during it is read again after it
      await this.subscriber.subscribe(this.keys.changes);
      await this.readAll();
    } catch (err) {
      throw unavailable("records not loaded", err);
    }
    // what an earlier run held is the newest this sidecar knows: the mirror has it, Redis gets it now
    for (const w of held) this.mirrorHeld(w);
    this.loaded = true;
    this.replayHeld();
    // notices sent while the subscriber was away are lost: they are read from the change log (ioredis re-subscribes)
    this.subscriber.on("close", () => {
      if (this.loaded) this.missedFrom ??= this.logAt;
    });
    this.subscriber.on("ready", () => {
      if (this.loaded) this.catchUp();
    });
    return this.size;
  }

  get(callId: string): GroupSession | undefined {
    const id = this.byCallId.get(callId);
    return id === undefined ? undefined : this.getById(id);
  }

  getById(id: string): GroupSession | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    if (e.record) return e.record;
    try {
      return Object.assign(decodeRecord(e.text as string), { [REVISION]: e.rev });
    } catch (err) {
      this.log.error("session record unreadable", { record: id, reason: String(err) });
      return undefined;
    }
  }

  findByIds(servedUser: string, conversationId: string, contributionId: string): GroupSession | undefined {
    return this.getById(recordId(servedUser, conversationId, contributionId));
  }

  *all(): IterableIterator<GroupSession> {
    for (const id of [...this.entries.keys()]) {
      const s = this.getById(id);
      if (s) yield s;
    }
  }

  get size(): number {
    return this.entries.size;
  }

  counts(): RecordCounts {
    const counts = noCounts();
    for (const e of this.entries.values()) {
      counts.byLifecycle[e.lifecycle]++;
      if (e.pendingDeferred) counts.pendingDeferred++;
    }
    return counts;
  }

  pendingUsers(): Set<string> {
    const users = new Set<string>();
    for (const [id, e] of this.entries) if (e.pendingDeferred) users.add(userOfRecordId(id));
    return users;
  }

  /**
   * Writes the record: in the mirror at once (reads see it, as with the
   * journal), in Redis when the promise resolves. `fence`: the write is
   * refused (CPM_ERR_RECORD_FENCED) once the slot's lease moved on.
   */
  put(session: GroupSession, fence?: Fence): Promise<void> {
    const id = recordIdOf(session);
    const local = this.entries.get(id);
    // a record built afresh (no revision) is compared with what this sidecar holds
    const base = (session as Revised)[REVISION] ?? local?.rev ?? 0;
    const text = JSON.stringify(session);
    const mine: Revised = { ...session, [REVISION]: base };
    this.setEntry(id, mine, text, local?.rev ?? 0);
    if (!this.held) return this.track(id, this.write(id, mine, text, base, fence));
    const w: HeldWrite = { id, base, text, ...(fence ? { fence } : {}) };
    // a record with a write held stays held until that one is replayed (its writes keep their order)
    if (this.held.has(id) || this.redis.status !== "ready") return this.track(id, this.hold(w, mine));
    return this.track(
      id,
      new Promise<void>((resolve, reject) => {
        const sent: Sending = {
          w,
          mine,
          settle: (outcome) => {
            if (!this.sending.delete(sent)) return;
            outcome().then(resolve, reject);
          },
        };
        this.sending.add(sent);
        this.write(id, mine, text, base, fence).then(
          () => sent.settle(() => Promise.resolve()),
          (err: unknown) =>
            sent.settle(() =>
              err instanceof CpmError && err.code === "CPM_ERR_RECORD_STORE_UNAVAILABLE" ? this.hold(w, mine) : Promise.reject(err),
            ),
        );
      }),
    );
  }

  purge(id: string): Promise<void> {
    this.dropEntry(id);
    this.held?.drop(id);
    const done = runScript(this.redis, PURGE_RECORD, this.purgeKeys(id), this.purgeArgs(id, "")).then(
      () => undefined,
      (err) => {
        throw this.failed("CPM_ERR_RECORD_STORE_UNAVAILABLE", "session record not purged", id, err);
      },
    );
    return this.track(id, done);
  }

  async sweep(now = Date.now()): Promise<GroupSession[]> {
    // the retention zset knows what is due; each purge checks it again atomically (another sidecar may sweep too, or the record moved on)
    const due = await this.redis.zrangebyscore(this.keys.retention, "-inf", `(${now}`);
    const purged: GroupSession[] = [];
    for (const id of due) {
      const value = await runScript(this.redis, PURGE_RECORD, this.purgeKeys(id), this.purgeArgs(id, now));
      if (typeof value !== "string") continue;
      this.dropEntry(id);
      try {
        purged.push(decodeRecord(value));
      } catch (err) {
        this.log.error("session record unreadable from Redis: purged", { record: id, reason: String(err) });
      }
    }
    return purged;
  }

  async flush(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
  }

  async close(): Promise<void> {
    await this.flush();
    await this.replaying;
    // what is still held stays in the file: the next start replays it
    this.held?.close();
    this.loaded = false;
    // QUIT waits in the offline queue while Redis is away: shutdown does not wait longer than a command may
    await Promise.race([
      Promise.allSettled([this.subscriber.quit(), this.redis.quit()]),
      sleep(COMMAND_TIMEOUT_MS, undefined, { ref: false }),
    ]);
    this.redis.disconnect();
    this.subscriber.disconnect();
  }

  private async write(id: string, mine: Revised, text: string, base: number, fence: Fence | undefined): Promise<void> {
    const started = performance.now();
    let reply: PutReply;
    try {
      reply = await this.send(id, mine, text, base, fence);
    } catch (err) {
      // the mirror keeps the record (like the journal after a failed write); the next resync brings Redis's
      throw this.failed("CPM_ERR_RECORD_STORE_UNAVAILABLE", "session record not written", id, err);
    }
    const { outcome, rev } = reply;
    if (outcome === "ok") {
      this.written(id, mine, rev);
      this.metrics.recordStored((performance.now() - started) / 1000);
      return;
    }
    // nothing was written: the mirror takes Redis's record again
    await this.refresh(id, true).catch(() => undefined);
    if (outcome === "fenced") {
      throw this.failed("CPM_ERR_RECORD_FENCED", `lease token ${fence?.token} of slot ${fence?.slot}, newest ${rev}`, id);
    }
    throw this.failed("CPM_ERR_RECORD_STALE", `read at revision ${base}, now ${rev}`, id);
  }

  /** The mirror's entry of `id` is at `rev` now; `mine`, if it is still the entry's record, too. */
  private written(id: string, mine: Revised | undefined, rev: number): void {
    const e = this.entries.get(id);
    if (e && e.rev < rev) e.rev = rev;
    if (mine && e?.record === mine) mine[REVISION] = rev;
  }

  /** PUT_RECORD: the record's compare-and-set against `base` (and the lease's fence) in one script. */
  private async send(id: string, s: GroupSession, text: string, base: number, fence: Fence | undefined): Promise<PutReply> {
    const at = purgeAt(s, this.retention);
    const reply = await runScript(
      this.redis,
      PUT_RECORD,
      [
        this.keys.record(id),
        this.keys.callIds,
        this.keys.retention,
        this.keys.pending(userOfRecordId(id)),
        this.keys.fence(fence?.slot ?? 0),
        this.keys.changeLog,
      ],
      [
        id,
        text,
        base,
        this.writer,
        at === Number.POSITIVE_INFINITY ? "+inf" : at,
        s.pendingDeferred ? 1 : 0,
        callIdsOf(s).join("\n"),
        this.keys.changes,
        fence ? fence.token : "",
        this.changeLogLength,
      ],
    );
    const [outcome, n] = reply as [string, string];
    if (outcome !== "ok" && outcome !== "stale" && outcome !== "fenced") throw new Error(`PUT_RECORD answered ${String(outcome)}`);
    return { outcome, rev: Number(n) };
  }

  /** Holds `w` locally while Redis is away (put() resolves once it is on disk); the replay starts when Redis is back. */
  private async hold(w: HeldWrite, mine: Revised): Promise<void> {
    const first = this.held?.size === 0;
    (w as MirroredWrite)[MIRRORED] = mine;
    await (this.held as WriteAhead).hold(w);
    if (first) this.log.warn("session record store: Redis unreachable, record writes held locally until it answers", { record: w.id });
    // Redis may have come back while this write waited for the disk
    if (this.redis.status === "ready") this.replayHeld();
  }

  /** A write an earlier run held: into the mirror as the newest this sidecar knows (Redis's may be older). */
  private mirrorHeld(w: HeldWrite): void {
    let s: GroupSession;
    try {
      s = decodeRecord(w.text);
      if (recordIdOf(s) !== w.id) throw new Error("record id does not match");
    } catch (err) {
      this.log.error("held session record write unreadable: not replayed", { record: w.id, reason: String(err) });
      this.held?.settle(w);
      return;
    }
    const mine: Revised = Object.assign(s, { [REVISION]: w.base });
    this.setEntry(w.id, mine, w.text, w.base);
    (w as MirroredWrite)[MIRRORED] = mine;
  }

  /**
   * Replays the held writes (Redis answers again), the latest of each
   * record, until none is left; stops at the first failure (the next
   * "ready" starts it again).
   */
  private replayHeld(): void {
    const held = this.held;
    if (!held || this.replaying || held.size === 0 || !this.loaded) return;
    this.replaying = (async () => {
      const counts = { replayed: 0, newerInRedis: 0, fenced: 0 };
      while (held.size > 0 && this.redis.status === "ready") {
        for (const w of held.entries()) {
          counts[await this.replayOne(w)]++;
          held.settle(w);
        }
      }
      if (counts.replayed + counts.newerInRedis + counts.fenced > 0)
        this.log.info("held session record writes replayed to Redis", { ...counts, stillHeld: held.size });
    })()
      .catch((err) => {
        this.log.warn("held session record writes not replayed yet", { held: held.size, reason: String(err) });
        // Redis answers but a replay failed: tried again shortly (an outage's "ready" starts it too)
        if (this.redis.status === "ready") setTimeout(() => this.replayHeld(), REPLAY_RETRY_MS).unref();
      })
      .finally(() => {
        this.replaying = undefined;
      });
  }

  /** One held write into Redis: compare-and-set at its revision; where another sidecar wrote since, the later record (updatedAt) stays. */
  private async replayOne(w: HeldWrite): Promise<"replayed" | "newerInRedis" | "fenced"> {
    const mine = (w as MirroredWrite)[MIRRORED];
    const s = mine ?? decodeRecord(w.text);
    let reply = await this.send(w.id, s, w.text, w.base, w.fence);
    if (reply.outcome === "stale") {
      const [rev = null, value = null] = await this.redis.hmget(this.keys.record(w.id), "rev", "v");
      let theirs: GroupSession | undefined;
      try {
        theirs = value === null ? undefined : decodeRecord(value);
      } catch {
        theirs = undefined; // damaged in Redis: the held write replaces it
      }
      if (theirs && theirs.updatedAt > s.updatedAt) {
        this.log.warn("held session record write older than Redis's: Redis's kept", { record: w.id, redisRevision: rev });
        await this.refresh(w.id, true);
        return "newerInRedis";
      }
      this.log.warn("held session record write replaces what another sidecar wrote meanwhile", { record: w.id, redisRevision: rev });
      reply = await this.send(w.id, s, w.text, Number(rev ?? 0), w.fence);
      // written again in between: the write stays held, the next round decides it
      if (reply.outcome === "stale") throw new CpmError("CPM_ERR_RECORD_STALE", `record ${w.id} changed again during its replay`);
    }
    if (reply.outcome === "ok") {
      this.written(w.id, mine, reply.rev);
      // a later write of the record, held meanwhile, was made on top of this one
      const next = this.held?.latest(w.id);
      if (next && next !== w) next.base = reply.rev;
      return "replayed";
    }
    // a newer lease of the slot was granted while Redis was away: its holder decides the record
    this.log.warn("held session record write fenced: the slot's new holder's record kept", { record: w.id, slot: w.fence?.slot });
    await this.refresh(w.id, true);
    return "fenced";
  }

  private track(id: string, p: Promise<void>): Promise<void> {
    this.writing.set(id, (this.writing.get(id) ?? 0) + 1);
    const done = p.finally(() => {
      const n = (this.writing.get(id) ?? 1) - 1;
      if (n === 0) this.writing.delete(id);
      else this.writing.set(id, n);
      this.inFlight.delete(done);
    });
    this.inFlight.add(done);
    // flush() and close() wait for it without seeing its rejection; the caller does
    done.catch(() => undefined);
    return done;
  }

  private failed(code: ErrorCode, detail: string, id: string, cause?: unknown): CpmError {
    const err = new CpmError(code, cause === undefined ? detail : `${detail}: ${String(cause)}`, { cause });
    this.log.warn("session record not stored in Redis", { record: id, code, reason: err.detail });
    return err;
  }

  private purgeKeys(id: string): string[] {
    return [this.keys.record(id), this.keys.callIds, this.keys.retention, this.keys.pending(userOfRecordId(id)), this.keys.changeLog];
  }

  /** PURGE_RECORD's arguments; `due` "" purges whatever its retention says (scripts.ts). */
  private purgeArgs(id: string, due: number | ""): (string | number)[] {
    return [id, this.writer, this.keys.changes, due, this.changeLogLength];
  }

  private setEntry(id: string, s: Revised, text: string, rev: number): void {
    const before = this.entries.get(id);
    const callIds = callIdsOf(s);
    const live = isGroupActive(s);
    this.entries.set(id, {
      rev,
      ...(live ? { record: s } : { text }),
      lifecycle: s.lifecycle,
      pendingDeferred: s.pendingDeferred,
      callIds,
    });
    this.byCallId.replace(id, before?.callIds, callIds);
  }

  private dropEntry(id: string): void {
    const e = this.entries.get(id);
    if (!e) return;
    this.entries.delete(id);
    this.byCallId.remove(id, e.callIds);
  }

  /** A change notice "<log entry id> <rev> <writer> <id>" (scripts.ts noteChange): another sidecar's write is read again (ours are in the mirror already). */
  private onChange(notice: string): void {
    const at = notice.indexOf(" ");
    const entry = at < 0 ? "" : notice.slice(0, at);
    const id = ENTRY_ID.test(entry) ? this.changedRecord(notice.slice(at + 1)) : null;
    if (id === null) {
      this.log.warn("session record change notice skipped", { notice: notice.slice(0, 200) });
      return;
    }
    if (compareEntryIds(entry, this.logAt) > 0) this.logAt = entry;
    if (id !== undefined)
      this.refresh(id, false).catch((err) => this.log.warn("session record not read again", { record: id, reason: String(err) }));
  }

  /** The record a change "<rev> <writer> <id>" names; undefined when this sidecar wrote it, null when malformed. */
  private changedRecord(change: string): string | undefined | null {
    const a = change.indexOf(" ");
    const b = change.indexOf(" ", a + 1);
    if (a < 0 || b < 0 || b === change.length - 1) return null;
    return change.slice(a + 1, b) === this.writer ? undefined : change.slice(b + 1);
  }

  /** Reads one record again; `force`: even when the mirror holds a newer revision (after a refused write). */
  private async refresh(id: string, force: boolean): Promise<void> {
    const [rev = null, value = null] = await this.redis.hmget(this.keys.record(id), "rev", "v");
    if (value === null) {
      if ((!this.writing.has(id) && !this.held?.has(id)) || force) this.dropEntry(id);
      return;
    }
    this.apply(id, rev, value, force);
  }

  /** A record as read from Redis into the mirror, unless the mirror is newer; a damaged one is logged and skipped. */
  private apply(id: string, rawRev: string | null, value: string, force: boolean): boolean {
    const rev = Number(rawRev);
    const local = this.entries.get(id);
    // a held write is newer than what Redis has until its replay decides
    if (!force && ((local && local.rev >= rev) || this.held?.has(id))) return true;
    let s: GroupSession;
    try {
      if (!Number.isInteger(rev) || rev < 1) throw new Error(`revision ${rawRev}`);
      s = decodeRecord(value);
      if (recordIdOf(s) !== id) throw new Error("record id does not match its key");
    } catch (err) {
      this.log.error("session record unreadable from Redis: skipped", { record: id, reason: String(err) });
      return false;
    }
    this.setEntry(id, Object.assign(s, { [REVISION]: rev }), value, rev);
    return true;
  }

  /**
   * After the subscription came back: the changes logged since the last one
   * taken in before it dropped are read again. A full read instead when the
   * log cannot say: it no longer holds that entry (trimmed, or begun afresh
   * after Redis lost its data), it is gone or younger, or the last full read
   * found none. Retried while it fails: the notices since are no substitute.
   */
  private catchUp(): void {
    if (this.missedFrom === undefined || this.catchingUp) return;
    this.catchingUp = this.readMissed(this.missedFrom)
      .then(
        () => {
          this.missedFrom = undefined;
        },
        (err) => {
          this.log.warn("session records not read again after a reconnect: retrying", { reason: String(err) });
          return sleep(CATCH_UP_RETRY_MS, undefined, { ref: false });
        },
      )
      .finally(() => {
        this.catchingUp = undefined;
        if (this.loaded) this.catchUp();
      });
  }

  private async readMissed(from: string): Promise<void> {
    const last = await this.changeLogLast();
    let gap: string | false;
    if (last === undefined) gap = "the change log is gone";
    // the last full read found no change log: nothing says what happened before its first entry
    else if (from === "0-0") gap = "no change read since the change log began";
    else if (compareEntryIds(last, from) < 0) gap = "the change log is younger than the last change read";
    else {
      // trimming takes the oldest entries first: while the last one read is there, nothing after it is gone
      // (a log begun afresh after Redis lost its data does not hold it either)
      const [head] = (await this.redis.xrange(this.keys.changeLog, from, "+", "COUNT", 1)) as [string, string[]][];
      gap = head?.[0] !== from && "the change log no longer holds the last change read (trimmed, or begun afresh)";
    }
    if (gap) {
      this.log.warn("session records read again in full after a reconnect", { reason: gap, lastChangeRead: from });
      await this.readAll();
      return;
    }
    let changes = 0;
    let records = 0;
    let cursor = `(${from}`;
    for (;;) {
      const entries = (await this.redis.xrange(this.keys.changeLog, cursor, "+", "COUNT", SCAN_BATCH)) as [string, string[]][];
      const ids = new Set<string>();
      for (const [entry, fields] of entries) {
        changes++;
        cursor = `(${entry}`;
        if (compareEntryIds(entry, this.logAt) > 0) this.logAt = entry;
        const at = fields.indexOf("n");
        const id = this.changedRecord(at < 0 ? "" : (fields[at + 1] ?? ""));
        if (id === null) this.log.warn("session record change log entry skipped", { entry });
        else if (id !== undefined) ids.add(id);
      }
      await Promise.all([...ids].map((id) => this.refresh(id, false)));
      records += ids.size;
      if (entries.length < SCAN_BATCH) break;
    }
    this.log.info("session records caught up from the change log after a reconnect", { changes, records, from });
  }

  /** The change log's newest entry id; undefined when there is none. */
  private async changeLogLast(): Promise<string | undefined> {
    const [newest] = (await this.redis.xrevrange(this.keys.changeLog, "+", "-", "COUNT", 1)) as [string, string[]][];
    return newest?.[0];
  }

  /** Reads every record (start-up, a reconnect the change log cannot bridge); records gone from Redis leave the mirror. */
  private async readAll(): Promise<void> {
    // changes after this position are notices, or read from the log after a reconnect
    this.logAt = (await this.changeLogLast()) ?? "0-0";
    const seen = new Set<string>();
    let cursor = "0";
    do {
      const [next, keys] = await this.redis.scan(cursor, "MATCH", this.keys.recordPattern, "COUNT", SCAN_BATCH);
      cursor = next;
      if (keys.length === 0) continue;
      const pipeline = this.redis.pipeline();
      for (const k of keys) pipeline.hmget(k, "rev", "v");
      const replies = (await pipeline.exec()) ?? [];
      keys.forEach((k, i) => {
        const id = this.keys.idOfRecordKey(k);
        const [err, fields] = replies[i] ?? [new Error("no reply"), null];
        if (err || !Array.isArray(fields) || typeof fields[1] !== "string") {
          this.log.error("session record unreadable from Redis: skipped", { record: id, reason: String(err ?? "no value") });
          return;
        }
        seen.add(id);
        this.apply(id, fields[0] as string | null, fields[1], false);
      });
    } while (cursor !== "0");
    for (const id of [...this.entries.keys()]) if (!seen.has(id) && !this.writing.has(id) && !this.held?.has(id)) this.dropEntry(id);
  }

  /**
   * The command connection closed: the writes it carried may never be
   * answered (ioredis would fail them only after its reconnect attempt), so
   * they are held now. One that did reach Redis is written again by the
   * replay, with the same record.
   */
  private connectionLost(): void {
    for (const sent of [...this.sending]) sent.settle(() => this.hold(sent.w, sent.mine));
  }

  private outage(err: Error): void {
    if (this.down) return;
    this.down = true;
    this.log.warn("session record store: Redis unreachable", { reason: err.message });
  }

  private back(): void {
    this.replayHeld();
    if (!this.down) return;
    this.down = false;
    this.log.info("session record store: Redis reachable again");
  }
}

function unavailable(detail: string, cause: unknown): CpmError {
  return new CpmError("CPM_ERR_RECORD_STORE_UNAVAILABLE", `${detail}: ${String(cause)}`, { cause });
}
