// Record writes held on local disk while Redis cannot take them
// (session.store "redis", session.redisWriteAhead): an append-only file in
// session.stateDir, one JSON line per write ({"id","base","text","fence"?},
// or {"id","del":true} when the record was purged), written like the local
// journal (src/session/registry.ts): the lines of one event-loop turn in one
// synchronous write, page cache, no fsync, so a sidecar crash loses nothing
// a hold resolved. Only the latest write of each record counts: it is what
// RedisRecordStore replays once Redis answers again, compare-and-set against
// the revision it was made at. The file is emptied when nothing is held.
import { closeSync, ftruncateSync, openSync, writeSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { dirname } from "node:path";
import { CpmError } from "../../errors/catalogue.js";
import type { Logger } from "../../log/logger.js";
import type { Fence } from "../record-store.js";

export const WRITE_AHEAD_FILE = "redis-write-ahead.jsonl";

/** One record write Redis did not take: the record as JSON, the revision it was read at, the lease it was made under. */
export interface HeldWrite {
  id: string;
  base: number;
  text: string;
  fence?: Fence;
}

type Line = HeldWrite | { id: string; del: true };

function isLine(v: unknown): v is Line {
  if (typeof v !== "object" || v === null) return false;
  const l = v as Record<string, unknown>;
  if (typeof l.id !== "string" || l.id === "") return false;
  if (l.del === true) return true;
  if (typeof l.text !== "string" || !Number.isInteger(l.base) || (l.base as number) < 0) return false;
  if (l.fence === undefined) return true;
  const f = l.fence as Record<string, unknown>;
  return typeof f === "object" && f !== null && Number.isInteger(f.slot) && Number.isInteger(f.token);
}

export class WriteAhead {
  /** The latest held write of each record, in the order of their latest holds. */
  private readonly held = new Map<string, HeldWrite>();
  private fd: number | undefined;
  private pending: string[] = [];
  private waiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  private scheduled: NodeJS.Immediate | undefined;
  /** The file ends in a torn line (a crash mid-write): the next write starts a new line. */
  private torn = false;

  constructor(
    readonly path: string,
    private readonly log: Logger,
  ) {}

  /** Reads what an earlier run held (a torn or damaged line is logged and skipped) and opens the file for appending. */
  async open(): Promise<HeldWrite[]> {
    await mkdir(dirname(this.path), { recursive: true });
    let text = "";
    try {
      text = await readFile(this.path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    let skipped = 0;
    for (const raw of text.split("\n")) {
      if (raw === "") continue;
      let line: unknown;
      try {
        line = JSON.parse(raw);
      } catch {
        line = undefined;
      }
      if (!isLine(line)) {
        skipped++;
        continue;
      }
      this.held.delete(line.id);
      if (!("del" in line)) this.held.set(line.id, line);
    }
    this.torn = text !== "" && !text.endsWith("\n");
    if (skipped > 0) this.log.error("held session record writes: damaged lines skipped", { file: this.path, skipped });
    this.fd = openSync(this.path, "a");
    return [...this.held.values()];
  }

  get size(): number {
    return this.held.size;
  }

  has(id: string): boolean {
    return this.held.has(id);
  }

  /** The latest held write of `id`. */
  latest(id: string): HeldWrite | undefined {
    return this.held.get(id);
  }

  /** The held writes now, in the order of their holds. */
  entries(): HeldWrite[] {
    return [...this.held.values()];
  }

  /** Holds `w` (it supersedes what was held for its record); resolves once it is in the file. */
  hold(w: HeldWrite): Promise<void> {
    this.held.delete(w.id);
    this.held.set(w.id, w);
    return this.append(JSON.stringify(w));
  }

  /** The record was purged: nothing of it is replayed. */
  drop(id: string): void {
    if (!this.held.delete(id)) return;
    void this.append(JSON.stringify({ id, del: true })).catch(() => undefined);
  }

  /** `w` reached Redis (or lost to a newer write there): forgotten unless a newer one was held since; the file is emptied when nothing is left. */
  settle(w: HeldWrite): void {
    if (this.held.get(w.id) !== w) return;
    this.held.delete(w.id);
    if (this.held.size > 0) return;
    this.drain();
    try {
      if (this.fd !== undefined) ftruncateSync(this.fd, 0);
      this.torn = false;
    } catch (err) {
      // harmless: the lines left are replayed again next time and lose to what Redis holds by then
      this.log.warn("held session record writes: file not emptied", { file: this.path, reason: String(err) });
    }
  }

  close(): void {
    this.drain();
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private append(line: string): Promise<void> {
    this.pending.push(line);
    this.scheduled ??= setImmediate(() => this.drain());
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Group commit: one write for the lines queued so far. A failed write fails its holds (the caller's decision falls back). */
  private drain(): void {
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
    if (this.pending.length === 0) return;
    const data = Buffer.from((this.torn ? "\n" : "") + this.pending.map((l) => `${l}\n`).join(""));
    const waiters = this.waiters;
    this.pending = [];
    this.waiters = [];
    try {
      if (this.fd === undefined) throw new Error("not open");
      for (let off = 0; off < data.length; ) off += writeSync(this.fd, data, off);
      this.torn = false;
    } catch (err) {
      const e = new CpmError("CPM_ERR_RECORD_STORE_UNAVAILABLE", `record write not held locally (${this.path}): ${String(err)}`, {
        cause: err,
      });
      for (const w of waiters) w.reject(e);
      return;
    }
    for (const w of waiters) w.resolve();
  }
}
