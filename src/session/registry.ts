// The group session records (src/session/group-session.ts): one record per
// (served user, Conversation-ID, Contribution-ID), and an index from every
// dialog's Call-ID to it. On disk (session.stateDir): an append-only journal,
// `sessions.jsonl`, one JSON record per line ({"op":"put","s":{...}} or
// {"op":"del","id":"..."}). In memory: the records of live group sessions
// (active, client absent); a record whose group is over (inactive,
// terminated, left) is an index entry only, where its latest line is in the
// journal and when retention may purge it, and is read from the journal when
// asked for (long-lived groups go quiet for months: their records must not
// hold memory). Changes are appended
// behind the in-memory update, batched: the changes of one event-loop turn go
// out in one synchronous write (group commit), in order (page cache, no
// fsync: ~2-4 µs of CPU against ~40 µs through fs/promises' thread pool). A
// machine crash can lose the last changes; a sidecar crash loses nothing that
// put()/purge() resolved. At start-up the journal is replayed (a torn last
// line is skipped and logged; records written before the lifecycle existed
// are upgraded) and rewritten as a snapshot (temp file + rename: atomic); the
// same compaction runs when the journal holds more than twice as many records
// as live ones. Records are purged only by the lifecycle's retention policy
// (src/procedures/lifecycle.ts): sweep().
//
// The registry is the embedded implementation of `RecordStore`; a shared
// engine implements the same interface.
import { closeSync, fstatSync, openSync, readSync, renameSync, writeSync } from "node:fs";
import { mkdir, readdir, readFile, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../log/logger.js";
import { type Metrics, noMetrics } from "../metrics/metrics.js";
import { purgeAt, type RetentionPolicy } from "../procedures/lifecycle.js";
import { CallIdIndex, callIdsOf } from "./call-id-index.js";
import { type GroupSession, isGroupActive, type Lifecycle, RECORD_ID_SEPARATOR, recordId, recordIdOf, userKey } from "./group-session.js";
import { isRecord, type LegacyRecord, upgrade } from "./record-codec.js";
import { noCounts, type RecordCounts, type SessionStore } from "./record-store.js";

export type { RecordStore, SessionStore } from "./record-store.js";

export const JOURNAL_FILE = "sessions.jsonl";
/** Below this many records the journal is never compacted. */
const COMPACT_MIN_RECORDS = 1024;

type JournalRecord = { op: "put"; s: GroupSession } | { op: "del"; id?: string; key?: string };

/** A record kept on disk only: its latest journal line, and when retention may purge it. */
interface ColdEntry {
  at: number;
  len: number;
  purgeAt: number;
  /** Kept for the counts by lifecycle (metrics) without reading the journal. */
  lifecycle: Lifecycle;
  pendingDeferred: boolean;
}

/** A journal line waiting for the group commit; `s` when it puts a record. */
interface PendingLine {
  text: string;
  id: string;
  s?: GroupSession;
}

const NEWLINE = 0x0a;

export class SessionRegistry implements SessionStore {
  /** Live records, and records of ended groups whose line is not written yet. */
  private readonly records = new Map<string, GroupSession>();
  /** Records of ended groups: in the journal only. */
  private readonly cold = new Map<string, ColdEntry>();
  /** Call-ID of every dialog -> record id. */
  private readonly byCallId = new CallIdIndex();
  private readonly journal: string;
  private fd: number | undefined;
  private readFd: number | undefined;
  /** Bytes in the journal file (where the next line goes). */
  private bytes = 0;
  /** Lines in the journal file (compaction trigger). */
  private lines = 0;
  /** A write failed part way: the next one starts on a new line. */
  private torn = false;
  /** Lines not written yet, and who waits for them. */
  private pending: PendingLine[] = [];
  private waiters: (() => void)[] = [];
  private scheduled: NodeJS.Immediate | undefined;
  /** When the oldest pending line was queued (the group commit's latency). */
  private batchSince = 0;

  constructor(
    private readonly dir: string,
    private readonly retention: RetentionPolicy,
    private readonly log: Logger,
    private readonly metrics: Pick<Metrics, "recordStored"> = noMetrics,
  ) {
    this.journal = join(dir, JOURNAL_FILE);
  }

  async load(): Promise<number> {
    await mkdir(this.dir, { recursive: true });
    const legacy = await this.loadLegacyFiles();
    await this.replayJournal();
    this.compact(Date.now());
    await Promise.all(legacy.map((f) => unlink(join(this.dir, f)).catch(() => undefined)));
    return this.size;
  }

  get(callId: string): GroupSession | undefined {
    const id = this.byCallId.get(callId);
    return id === undefined ? undefined : this.getById(id);
  }

  getById(id: string): GroupSession | undefined {
    return this.records.get(id) ?? this.readCold(id);
  }

  findByIds(servedUser: string, conversationId: string, contributionId: string): GroupSession | undefined {
    return this.getById(recordId(servedUser, conversationId, contributionId));
  }

  /** Every record, those of ended groups read from the journal (operators' views, tests). */
  *all(): IterableIterator<GroupSession> {
    yield* this.records.values();
    for (const id of [...this.cold.keys()]) {
      const s = this.readCold(id);
      if (s) yield s;
    }
  }

  get size(): number {
    return this.records.size + this.cold.size;
  }

  /** Records by lifecycle state, and how many have deferred data pending (metrics; no journal read). */
  counts(): RecordCounts {
    const counts = noCounts();
    for (const r of [this.records.values(), this.cold.values()]) {
      for (const e of r) {
        counts.byLifecycle[e.lifecycle]++;
        if (e.pendingDeferred) counts.pendingDeferred++;
      }
    }
    return counts;
  }

  /** The served users (as record keys compare them) with deferred data pending in some record. */
  pendingUsers(): Set<string> {
    const users = new Set<string>();
    for (const r of this.records.values()) if (r.pendingDeferred) users.add(userKey(r.servedUser));
    for (const [id, e] of this.cold) if (e.pendingDeferred) users.add(id.slice(0, id.indexOf(RECORD_ID_SEPARATOR)));
    return users;
  }

  /** Records held in memory (live groups, and ended ones until their line is written). */
  get inMemory(): number {
    return this.records.size;
  }

  put(session: GroupSession): Promise<void> {
    const id = recordIdOf(session);
    this.set(id, session);
    return this.append({ text: JSON.stringify({ op: "put", s: session }), id, s: session });
  }

  purge(id: string): Promise<void> {
    if (!this.drop(id)) return Promise.resolve();
    return this.append({ text: JSON.stringify({ op: "del", id }), id });
  }

  /** Writes every change made so far. */
  async flush(): Promise<void> {
    this.drain();
  }

  /** Writes what is pending and closes the journal (shutdown). */
  async close(): Promise<void> {
    this.drain();
    this.closeFds();
  }

  /** Purges what the retention policy says is over; returns the purged records. */
  async sweep(now = Date.now()): Promise<GroupSession[]> {
    const over: GroupSession[] = [];
    for (const s of this.records.values()) if (now > purgeAt(s, this.retention)) over.push(s);
    for (const [id, e] of this.cold) {
      if (now <= e.purgeAt) continue;
      const s = this.readCold(id);
      if (s) over.push(s);
    }
    await Promise.all(over.map((s) => this.purge(recordIdOf(s))));
    return over;
  }

  private set(id: string, s: GroupSession): void {
    const before = this.records.get(id) ?? (this.cold.has(id) ? this.readCold(id) : undefined);
    this.records.set(id, s);
    this.cold.delete(id);
    this.byCallId.replace(id, before && callIdsOf(before), callIdsOf(s));
  }

  private drop(id: string): boolean {
    const s = this.getById(id);
    const known = this.records.delete(id) || this.cold.delete(id);
    if (!s) return known;
    this.byCallId.remove(id, callIdsOf(s));
    return true;
  }

  /** The record of an ended group from its journal line; undefined (logged) when the line is unreadable. */
  private readCold(id: string): GroupSession | undefined {
    const e = this.cold.get(id);
    if (!e) return undefined;
    try {
      this.readFd ??= openSync(this.journal, "r");
      const buf = Buffer.allocUnsafe(e.len);
      for (let off = 0; off < e.len; ) {
        const n = readSync(this.readFd, buf, off, e.len - off, e.at + off);
        if (n === 0) throw new Error("journal shorter than its index");
        off += n;
      }
      const r = JSON.parse(buf.toString("utf8")) as JournalRecord;
      if (r.op !== "put" || !isRecord(r.s)) throw new Error("not a session record");
      return upgrade(r.s);
    } catch (err) {
      this.log.error("session record unreadable from the journal", { record: id, reason: String(err) });
      return undefined;
    }
  }

  private append(line: PendingLine): Promise<void> {
    if (this.pending.length === 0) this.batchSince = performance.now();
    this.pending.push(line);
    this.scheduled ??= setImmediate(() => this.drain());
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Group commit: one write for the lines queued so far, in order; records of ended groups leave memory once written. */
  private drain(): void {
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    const waiters = this.waiters;
    this.pending = [];
    this.waiters = [];
    try {
      this.fd ??= this.openAppend();
      const lead = this.torn ? "\n" : "";
      const data = Buffer.from(lead + batch.map((l) => `${l.text}\n`).join(""));
      for (let off = 0; off < data.length; ) off += writeSync(this.fd, data, off);
      this.torn = false;
      let at = this.bytes + lead.length;
      for (const l of batch) {
        const len = Buffer.byteLength(l.text);
        if (l.s && !isGroupActive(l.s) && this.records.get(l.id) === l.s) this.evict(l.id, l.s, at, len);
        at += len + 1;
      }
      this.bytes = at;
      this.lines += batch.length;
      this.metrics.recordStored((performance.now() - this.batchSince) / 1000);
      if (this.lines > COMPACT_MIN_RECORDS && this.lines > 2 * this.size) this.compact();
    } catch (err) {
      // kept in memory (the next compaction writes them); the file's size is read again on the next write
      this.closeFds();
      this.torn = true;
      this.log.error("session state write failed", { records: batch.length, reason: String(err) });
    }
    for (const w of waiters) w();
  }

  private coldEntry(s: GroupSession, at: number, len: number): ColdEntry {
    return { at, len, purgeAt: purgeAt(s, this.retention), lifecycle: s.lifecycle, pendingDeferred: s.pendingDeferred };
  }

  private evict(id: string, s: GroupSession, at: number, len: number): void {
    this.records.delete(id);
    this.cold.set(id, this.coldEntry(s, at, len));
  }

  private openAppend(): number {
    const fd = openSync(this.journal, "a");
    this.bytes = fstatSync(fd).size;
    return fd;
  }

  private closeFds(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    if (this.readFd !== undefined) closeSync(this.readFd);
    this.fd = undefined;
    this.readFd = undefined;
  }

  /**
   * Rewrites the journal as one put per record (temp file + rename: atomic):
   * live records from memory, the others copied line for line from the old
   * journal. With `now`, records the retention policy is done with are left
   * out (start-up). Every record of an ended group ends up on disk only.
   */
  private compact(now?: number): void {
    const tmp = `${this.journal}.tmp`;
    const out = openSync(tmp, "w");
    let at = 0;
    let lines = 0;
    const moved: [string, ColdEntry][] = [];
    const evicted: [string, GroupSession, number, number][] = [];
    const write = (buf: Buffer) => {
      for (let off = 0; off < buf.length; ) off += writeSync(out, buf, off);
      at += buf.length;
      lines++;
    };
    try {
      for (const [id, s] of this.records) {
        if (now !== undefined && now > purgeAt(s, this.retention)) {
          this.drop(id);
          continue;
        }
        const text = Buffer.from(JSON.stringify({ op: "put", s }));
        if (!isGroupActive(s)) evicted.push([id, s, at, text.length]);
        write(Buffer.concat([text, Buffer.from("\n")]));
      }
      for (const [id, e] of this.cold) {
        if (now !== undefined && now > e.purgeAt) {
          this.drop(id);
          continue;
        }
        this.readFd ??= openSync(this.journal, "r");
        const line = Buffer.allocUnsafe(e.len + 1);
        const n = readSync(this.readFd, line, 0, e.len, e.at);
        if (n !== e.len) throw new Error(`journal line of ${id} truncated`);
        line[e.len] = NEWLINE;
        moved.push([id, { ...e, at }]);
        write(line);
      }
    } finally {
      closeSync(out);
    }
    this.closeFds();
    renameSync(tmp, this.journal);
    for (const [id, e] of moved) this.cold.set(id, e);
    for (const [id, s, off, len] of evicted) this.evict(id, s, off, len);
    this.bytes = at;
    this.lines = lines;
  }

  /**
   * Replays the journal: the latest line of each record wins, a "del" removes
   * it. Live records are loaded; the others stay lines in the journal (the
   * compaction that follows moves them).
   */
  private async replayJournal(): Promise<void> {
    let buf: Buffer;
    try {
      buf = await readFile(this.journal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    const latest = new Map<string, { at: number; len: number }>();
    for (let at = 0, n = 1; at < buf.length; n++) {
      let end = buf.indexOf(NEWLINE, at);
      if (end < 0) end = buf.length;
      const len = end - at;
      if (len > 0) this.replayLine(buf, at, len, n, latest);
      at = end + 1;
    }
    for (const [id, { at, len }] of latest) {
      const s = upgrade((JSON.parse(buf.toString("utf8", at, at + len)) as { s: LegacyRecord }).s);
      if (isGroupActive(s)) {
        this.set(id, s);
        continue;
      }
      this.byCallId.replace(id, undefined, callIdsOf(s));
      this.cold.set(id, this.coldEntry(s, at, len));
    }
  }

  private replayLine(buf: Buffer, at: number, len: number, n: number, latest: Map<string, { at: number; len: number }>): void {
    try {
      const r = JSON.parse(buf.toString("utf8", at, at + len)) as JournalRecord;
      if (r.op === "put" && isRecord(r.s)) {
        const id = recordIdOf(upgrade(r.s));
        latest.delete(id); // keeps the map in journal order
        latest.set(id, { at, len });
        this.records.delete(id);
      } else if (r.op === "del" && typeof r.id === "string") {
        latest.delete(r.id);
        this.records.delete(r.id);
      } else if (r.op === "del" && typeof r.key === "string") {
        // older journals deleted by Call-ID
        const key = r.key;
        const legacy = this.byCallId.get(key);
        if (legacy !== undefined) this.records.delete(legacy);
        for (const [id, loc] of latest) {
          const s = (JSON.parse(buf.toString("utf8", loc.at, loc.at + loc.len)) as { s: GroupSession }).s;
          if (s.key === key) latest.delete(id);
        }
      } else throw new Error("not a session record");
    } catch (err) {
      // a torn last line after a crash, or a damaged record: skip it, keep the rest
      this.log.warn("session journal record skipped", { line: n, reason: String(err) });
    }
  }

  /** Per-session files written before the journal existed; returns those read (a damaged one stays). */
  private async loadLegacyFiles(): Promise<string[]> {
    const read: string[] = [];
    for (const name of (await readdir(this.dir)).filter((n) => n.endsWith(".json"))) {
      try {
        const s: unknown = JSON.parse(await readFile(join(this.dir, name), "utf8"));
        if (!isRecord(s)) throw new Error("not a session record");
        const record = upgrade(s);
        this.set(recordIdOf(record), record);
        read.push(name);
      } catch (err) {
        this.log.warn("session state file skipped", { file: name, reason: String(err) });
      }
    }
    return read;
  }
}
