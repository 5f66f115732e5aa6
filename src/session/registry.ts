// The group session records (src/session/group-session.ts). In memory: one
// record per (served user, Conversation-ID, Contribution-ID), and an index
// from every dialog's Call-ID to it. On disk (session.stateDir): an
// append-only journal, `sessions.jsonl`, one JSON record per line
// ({"op":"put","s":{...}} or {"op":"del","id":"..."}). Changes are appended
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
import { closeSync, openSync, renameSync, writeFileSync, writeSync } from "node:fs";
import { mkdir, readdir, readFile, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../log/logger.js";
import { type RetentionPolicy, shouldPurge } from "../procedures/lifecycle.js";
import { type GroupSession, type Lifecycle, recordId, recordIdOf, type SessionDialog } from "./group-session.js";

export const JOURNAL_FILE = "sessions.jsonl";
/** Below this many records the journal is never compacted. */
const COMPACT_MIN_RECORDS = 1024;

/** What the PF and deferred delivery need of the group session records. */
export interface RecordStore {
  /** The record one of whose dialogs has this Call-ID. */
  get(callId: string): GroupSession | undefined;
  findByIds(servedUser: string, conversationId: string, contributionId: string): GroupSession | undefined;
  /** Replaces the record (by its identity) and persists it; resolves when it is written. */
  put(session: GroupSession): Promise<void>;
  /** Removes the record (the lifecycle decided so). */
  purge(id: string): Promise<void>;
}

type JournalRecord = { op: "put"; s: GroupSession } | { op: "del"; id?: string; key?: string };

/** A record as an older sidecar wrote it: `state` instead of the lifecycle, no dialogs. */
type LegacyRecord = Omit<
  GroupSession,
  "lifecycle" | "lifecycleAt" | "dialogs" | "pendingDeferred" | "endCause" | "conferenceFactoryUri"
> & {
  state?: "active" | "ended";
} & Partial<GroupSession>;

function upgrade(s: LegacyRecord): GroupSession {
  if (s.lifecycle !== undefined && Array.isArray(s.dialogs)) return s as GroupSession;
  const lifecycle: Lifecycle = s.lifecycle ?? (s.state === "ended" ? "inactive" : "active");
  const dialog: SessionDialog = {
    callId: s.key,
    cfTag: s.networkTag,
    clientTag: "",
    remoteTarget: s.focusUri,
    routeSet: [],
    inviteCseq: 1,
    clientInstance: "",
    state: lifecycle === "active" ? "confirmed" : "terminated",
  };
  const { state: _legacy, ...rest } = s;
  return {
    ...rest,
    conferenceFactoryUri: s.conferenceFactoryUri ?? "",
    lifecycle,
    lifecycleAt: s.lifecycleAt ?? s.updatedAt,
    endCause: s.endCause,
    pendingDeferred: s.pendingDeferred ?? true,
    dialogs: s.dialogs ?? [dialog],
  };
}

function isRecord(s: unknown): s is LegacyRecord {
  const v = s as GroupSession | null;
  return (
    typeof v === "object" &&
    v !== null &&
    typeof v.key === "string" &&
    typeof v.conversationId === "string" &&
    typeof v.contributionId === "string" &&
    Array.isArray(v.participants)
  );
}

export class SessionRegistry implements RecordStore {
  private readonly records = new Map<string, GroupSession>();
  /** Call-ID of every dialog -> record id. */
  private readonly byCallId = new Map<string, string>();
  private readonly journal: string;
  private fd: number | undefined;
  /** Lines in the journal file (compaction trigger). */
  private lines = 0;
  /** Encoded records not written yet, and who waits for them. */
  private pending: string[] = [];
  private waiters: (() => void)[] = [];
  private scheduled: NodeJS.Immediate | undefined;

  constructor(
    private readonly dir: string,
    private readonly retention: RetentionPolicy,
    private readonly log: Logger,
  ) {
    this.journal = join(dir, JOURNAL_FILE);
  }

  async load(): Promise<number> {
    await mkdir(this.dir, { recursive: true });
    const legacy = await this.loadLegacyFiles();
    await this.replayJournal();
    const now = Date.now();
    for (const s of [...this.records.values()]) if (shouldPurge(s, now, this.retention)) this.drop(recordIdOf(s));
    this.compact();
    await Promise.all(legacy.map((f) => unlink(join(this.dir, f)).catch(() => undefined)));
    return this.records.size;
  }

  get(callId: string): GroupSession | undefined {
    const id = this.byCallId.get(callId);
    return id === undefined ? undefined : this.records.get(id);
  }

  getById(id: string): GroupSession | undefined {
    return this.records.get(id);
  }

  findByIds(servedUser: string, conversationId: string, contributionId: string): GroupSession | undefined {
    return this.records.get(recordId(servedUser, conversationId, contributionId));
  }

  /** Every record (operators' views, tests). */
  all(): IterableIterator<GroupSession> {
    return this.records.values();
  }

  get size(): number {
    return this.records.size;
  }

  put(session: GroupSession): Promise<void> {
    this.set(session);
    return this.append({ op: "put", s: session });
  }

  purge(id: string): Promise<void> {
    if (!this.drop(id)) return Promise.resolve();
    return this.append({ op: "del", id });
  }

  /** Writes every change made so far. */
  async flush(): Promise<void> {
    this.drain();
  }

  /** Writes what is pending and closes the journal (shutdown). */
  async close(): Promise<void> {
    this.drain();
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  /** Purges what the retention policy says is over; returns the purged records. */
  async sweep(now = Date.now()): Promise<GroupSession[]> {
    const over = [...this.records.values()].filter((s) => shouldPurge(s, now, this.retention));
    await Promise.all(over.map((s) => this.purge(recordIdOf(s))));
    return over;
  }

  private set(s: GroupSession): void {
    const id = recordIdOf(s);
    const old = this.records.get(id);
    if (old) for (const d of old.dialogs) this.byCallId.delete(d.callId);
    this.records.set(id, s);
    for (const d of s.dialogs) this.byCallId.set(d.callId, id);
    this.byCallId.set(s.key, id);
  }

  private drop(id: string): boolean {
    const s = this.records.get(id);
    if (!s) return false;
    this.records.delete(id);
    for (const d of s.dialogs) if (this.byCallId.get(d.callId) === id) this.byCallId.delete(d.callId);
    if (this.byCallId.get(s.key) === id) this.byCallId.delete(s.key);
    return true;
  }

  private append(record: JournalRecord): Promise<void> {
    this.pending.push(`${JSON.stringify(record)}\n`);
    this.scheduled ??= setImmediate(() => this.drain());
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Group commit: one write for the records queued so far, in order. */
  private drain(): void {
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    const waiters = this.waiters;
    this.pending = [];
    this.waiters = [];
    try {
      this.fd ??= openSync(this.journal, "a");
      const data = Buffer.from(batch.join(""));
      for (let off = 0; off < data.length; ) off += writeSync(this.fd, data, off);
      this.lines += batch.length;
      if (this.lines > COMPACT_MIN_RECORDS && this.lines > 2 * this.records.size) this.compact();
    } catch (err) {
      this.log.error("session state write failed", { records: batch.length, reason: String(err) });
    }
    for (const w of waiters) w();
  }

  /** Rewrites the journal as one put per live record (temp file + rename). */
  private compact(): void {
    const tmp = `${this.journal}.tmp`;
    const lines = [...this.records.values()].map((s) => `${JSON.stringify({ op: "put", s })}\n`);
    writeFileSync(tmp, lines.join(""));
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    renameSync(tmp, this.journal);
    this.lines = lines.length;
  }

  private async replayJournal(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.journal, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    text.split("\n").forEach((line, i) => {
      if (!line) return;
      try {
        const r = JSON.parse(line) as JournalRecord;
        if (r.op === "put" && isRecord(r.s)) this.set(upgrade(r.s));
        else if (r.op === "del" && typeof r.id === "string") this.drop(r.id);
        else if (r.op === "del" && typeof r.key === "string") {
          // older journals deleted by Call-ID
          const s = this.get(r.key);
          if (s) this.drop(recordIdOf(s));
        } else throw new Error("not a session record");
      } catch (err) {
        // a torn last line after a crash, or a damaged record: skip it, keep the rest
        this.log.warn("session journal record skipped", { line: i + 1, reason: String(err) });
      }
    });
  }

  /** Per-session files written before the journal existed; returns those read (a damaged one stays). */
  private async loadLegacyFiles(): Promise<string[]> {
    const read: string[] = [];
    for (const name of (await readdir(this.dir)).filter((n) => n.endsWith(".json"))) {
      try {
        const s: unknown = JSON.parse(await readFile(join(this.dir, name), "utf8"));
        if (!isRecord(s)) throw new Error("not a session record");
        this.set(upgrade(s));
        read.push(name);
      } catch (err) {
        this.log.warn("session state file skipped", { file: name, reason: String(err) });
      }
    }
    return read;
  }
}
