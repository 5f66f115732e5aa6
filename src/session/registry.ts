// The sidecar's session table. In memory: one GroupSession per Call-ID.
// On disk (session.stateDir): one JSON file per session, written behind the
// change in order per session (temp file, rename: atomic, survives a sidecar
// crash; no fsync, so a machine crash can lose the last changes), read back at
// start-up, so the participant list needed for a GSO survives a restart. Sessions idle
// longer than session.idleTtlMs are forgotten, and a session is removed when
// its BYE has completed (8.3.2.3 2.f).
import { createHash } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../log/logger.js";
import type { GroupSession } from "./group-session.js";

function fileName(key: string): string {
  // Call-IDs may hold any character; the file name is a hash of the key.
  return `${createHash("sha256").update(key).digest("hex").slice(0, 40)}.json`;
}

export class SessionRegistry {
  private readonly sessions = new Map<string, GroupSession>();
  /** Per-key write chains: persistence of one session is strictly ordered. */
  private readonly writes = new Map<string, Promise<void>>();

  constructor(
    private readonly dir: string,
    private readonly idleTtlMs: number,
    private readonly log: Logger,
  ) {}

  async load(): Promise<number> {
    await mkdir(this.dir, { recursive: true });
    const now = Date.now();
    for (const name of await readdir(this.dir)) {
      if (!name.endsWith(".json")) continue;
      const path = join(this.dir, name);
      try {
        const s = JSON.parse(await readFile(path, "utf8")) as GroupSession;
        if (typeof s.key !== "string" || !Array.isArray(s.participants)) throw new Error("not a session record");
        if (now - s.updatedAt > this.idleTtlMs) {
          await unlink(path);
          continue;
        }
        this.sessions.set(s.key, s);
      } catch (err) {
        this.log.warn("session state file skipped", { file: name, reason: String(err) });
      }
    }
    return this.sessions.size;
  }

  get(key: string): GroupSession | undefined {
    return this.sessions.get(key);
  }

  get size(): number {
    return this.sessions.size;
  }

  /** Replaces a session and persists it; resolves when it is on disk. */
  put(session: GroupSession): Promise<void> {
    this.sessions.set(session.key, session);
    return this.chain(session.key, () => this.writeFile(session));
  }

  remove(key: string): Promise<void> {
    if (!this.sessions.delete(key)) return Promise.resolve();
    return this.chain(key, async () => {
      await unlink(join(this.dir, fileName(key))).catch(() => undefined);
    });
  }

  /** Resolves when every pending write has reached the file system. */
  async flush(): Promise<void> {
    while (this.writes.size > 0) await Promise.all([...this.writes.values()]);
  }

  /** Drops sessions idle for longer than the TTL; returns how many. */
  async sweep(now = Date.now()): Promise<number> {
    const stale = [...this.sessions.values()].filter((s) => now - s.updatedAt > this.idleTtlMs);
    await Promise.all(stale.map((s) => this.remove(s.key)));
    return stale.length;
  }

  private chain(key: string, job: () => Promise<void>): Promise<void> {
    const prev = this.writes.get(key) ?? Promise.resolve();
    const next = prev.then(job, job).catch((err) => {
      this.log.error("session state write failed", { callId: key, reason: String(err) });
    });
    this.writes.set(key, next);
    void next.then(() => {
      if (this.writes.get(key) === next) this.writes.delete(key);
    });
    return next;
  }

  private async writeFile(session: GroupSession): Promise<void> {
    const path = join(this.dir, fileName(session.key));
    const tmp = `${path}.tmp`;
    const fh = await open(tmp, "w");
    try {
      await fh.writeFile(JSON.stringify(session));
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  }
}
