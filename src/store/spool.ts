// Durable local spool for CPM objects the Message Store has not taken yet.
//
// One file per entry, named "<16-digit ms time>-<8-digit counter>.spool" so
// that name order is arrival order (FIFO), also across restarts: ids never go
// backwards even if the clock does. An entry is written to a ".tmp-*" file,
// fsync'ed, renamed into place, and the directory fsync'ed (POSIX rename is
// atomic), so a crash leaves either the whole entry or only a temp file, which
// open() deletes.
//
// File format: the line "CPMSPOOL1", one line of JSON {folder, messageId,
// size, sha256, spooledAt}, then `size` raw bytes. A file that does not parse
// or whose checksum does not match is moved to <dir>/bad/ with a warning.
//
// The spool knows which (folder, Message-ID) pairs it holds (read from the
// entries' header lines at open(), kept up to date by put/remove/moveAside),
// so that an object whose Message-ID identifies it is not spooled twice.
//
// A spool of one user's mailbox (mailboxes.ts) has an "owner" file naming the
// mailbox, written durably by open() before any entry, so that a restart knows
// whose mailbox the entries go to.
import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, unlink } from "node:fs/promises";
import { join } from "node:path";
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";

export interface SpoolInput {
  folder: string;
  raw: Buffer;
  messageId: string;
}

export interface SpoolEntry extends SpoolInput {
  id: string;
  spooledAt: Date;
}

const MAGIC = "CPMSPOOL1\n";
const ID_RE = /^\d{16}-\d{8}\.spool$/;
const TMP_PREFIX = ".tmp-";
export const OWNER_FILE = "owner";

interface Header {
  folder: string;
  messageId: string;
  size: number;
  sha256: string;
  spooledAt: string;
}

function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

function spoolError(what: string, err: unknown): CpmError {
  const why = err instanceof Error ? err.message : String(err);
  return new CpmError("CPM_ERR_SPOOL", `${what}: ${why}`, { cause: err });
}

async function fsyncDir(dir: string): Promise<void> {
  const h = await open(dir, "r");
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/** The key of an object in the spool's index: its folder and bare Message-ID. */
function objectKey(folder: string, messageId: string): string {
  const bare = messageId.startsWith("<") && messageId.endsWith(">") ? messageId.slice(1, -1) : messageId;
  return `${folder}\n${bare}`;
}

/** Enough of an entry to hold its header line (folder and Message-ID are at most a few KB). */
const HEADER_READ_BYTES = 64 * 1024;

export class Spool {
  readonly badDir: string;
  private opened: Promise<void> | undefined;
  /** (folder, Message-ID) -> entry id, and back. */
  private readonly byObject = new Map<string, string>();
  private readonly objectOf = new Map<string, string>();
  /** Entries per folder. */
  private readonly perFolder = new Map<string, number>();
  private lastMs = 0;
  private counter = 0;
  /** The directory fsync under way, and the one that follows it for the changes made meanwhile (see syncDir). */
  private dirSync: Promise<void> | undefined;
  private nextDirSync: Promise<void> | undefined;

  constructor(
    readonly dir: string,
    private readonly log: Logger,
    private readonly opts: { owner?: string } = {},
  ) {
    this.badDir = join(dir, "bad");
  }

  /** Creates the directories, deletes temp files of interrupted writes, and continues the id sequence. */
  open(): Promise<void> {
    this.opened ??= this.doOpen().catch((err) => {
      this.opened = undefined;
      throw spoolError(`cannot open spool ${this.dir}`, err);
    });
    return this.opened;
  }

  private async doOpen(): Promise<void> {
    await mkdir(this.badDir, { recursive: true });
    if (this.opts.owner !== undefined) await this.writeOwner(this.opts.owner);
    const names = await readdir(this.dir);
    for (const name of names) {
      if (name.startsWith(TMP_PREFIX)) {
        this.log.warn("removing interrupted spool write", { file: name, spoolDir: this.dir });
        await unlink(join(this.dir, name)).catch(() => {});
      }
    }
    // continue after the newest id, also of entries already moved to bad/, so ids stay unique
    const bad = await readdir(this.badDir);
    const last = [...names, ...bad]
      .filter((n) => ID_RE.test(n))
      .sort()
      .at(-1);
    if (last) {
      this.lastMs = Number(last.slice(0, 16));
      this.counter = Number(last.slice(17, 25));
    }
    for (const name of names.filter((n) => ID_RE.test(n))) {
      const header = await this.readHeader(name);
      // an unreadable entry is left to read(), which moves it aside
      if (header) this.index(name, header.folder, header.messageId);
    }
  }

  /** The header line of an entry, or undefined when it does not parse. */
  private async readHeader(id: string): Promise<Pick<Header, "folder" | "messageId"> | undefined> {
    try {
      const h = await open(join(this.dir, id), "r");
      try {
        const buf = Buffer.alloc(HEADER_READ_BYTES);
        const { bytesRead } = await h.read(buf, 0, buf.length, 0);
        const data = buf.subarray(0, bytesRead);
        if (!data.subarray(0, MAGIC.length).equals(Buffer.from(MAGIC))) return undefined;
        const nl = data.indexOf(0x0a, MAGIC.length);
        if (nl < 0) return undefined;
        const parsed = JSON.parse(data.subarray(MAGIC.length, nl).toString("utf8")) as Partial<Header>;
        if (typeof parsed?.folder !== "string" || typeof parsed.messageId !== "string") return undefined;
        return { folder: parsed.folder, messageId: parsed.messageId };
      } finally {
        await h.close();
      }
    } catch {
      return undefined;
    }
  }

  private index(id: string, folder: string, messageId: string): void {
    const key = objectKey(folder, messageId);
    this.byObject.set(key, id);
    this.objectOf.set(id, key);
    this.perFolder.set(folder, (this.perFolder.get(folder) ?? 0) + 1);
  }

  private unindex(id: string): void {
    const key = this.objectOf.get(id);
    if (key === undefined) return;
    this.objectOf.delete(id);
    if (this.byObject.get(key) === id) this.byObject.delete(key);
    const folder = key.slice(0, key.lastIndexOf("\n"));
    const n = (this.perFolder.get(folder) ?? 1) - 1;
    if (n > 0) this.perFolder.set(folder, n);
    else this.perFolder.delete(folder);
  }

  /** True when the spool holds an entry for `folder` (known once open() ran). */
  holdsFolder(folder: string): boolean {
    return this.perFolder.has(folder);
  }

  /** True when an entry for this object (folder, Message-ID) is in the spool. */
  async has(folder: string, messageId: string): Promise<boolean> {
    await this.open();
    return this.byObject.has(objectKey(folder, messageId));
  }

  /** Writes the owner file (temp + fsync + rename) unless it already says the same. */
  private async writeOwner(owner: string): Promise<void> {
    const path = join(this.dir, OWNER_FILE);
    const current = await readFile(path, "utf8").catch(() => undefined);
    if (current === owner) return;
    const tmp = join(this.dir, `${TMP_PREFIX}owner-${randomBytes(4).toString("hex")}`);
    const h = await open(tmp, "wx", 0o600);
    try {
      await h.writeFile(owner, "utf8");
      await h.sync();
    } finally {
      await h.close();
    }
    await rename(tmp, path);
    await fsyncDir(this.dir);
  }

  private nextId(): string {
    const now = Date.now();
    if (now > this.lastMs) {
      this.lastMs = now;
      this.counter = 0;
    } else {
      this.counter++;
      if (this.counter > 99_999_999) {
        this.lastMs++;
        this.counter = 0;
      }
    }
    return `${String(this.lastMs).padStart(16, "0")}-${String(this.counter).padStart(8, "0")}.spool`;
  }

  /**
   * Makes the directory changes done so far durable (group commit): a
   * change made while a directory fsync runs may have come after it began,
   * so it waits for the next one, which every change made meanwhile shares:
   * one fsync per round instead of one per entry under load.
   */
  private syncDir(): Promise<void> {
    if (!this.dirSync) {
      this.dirSync = fsyncDir(this.dir).finally(() => {
        this.dirSync = undefined;
      });
      return this.dirSync;
    }
    this.nextDirSync ??= this.dirSync
      .catch(() => {})
      .then(() => {
        this.nextDirSync = undefined;
        return this.syncDir();
      });
    return this.nextDirSync;
  }

  /** Writes one entry durably; resolves with its id once it is on disk. Rejects with CPM_ERR_SPOOL. */
  async put(entry: SpoolInput): Promise<string> {
    await this.open();
    const id = this.nextId();
    const spooledAt = new Date().toISOString();
    const header: Header = {
      folder: entry.folder,
      messageId: entry.messageId,
      size: entry.raw.length,
      sha256: sha256(entry.raw),
      spooledAt,
    };
    const tmp = join(this.dir, `${TMP_PREFIX}${id}-${randomBytes(4).toString("hex")}`);
    try {
      const h = await open(tmp, "wx", 0o600);
      try {
        await h.writeFile(Buffer.concat([Buffer.from(`${MAGIC}${JSON.stringify(header)}\n`, "utf8"), entry.raw]));
        await h.sync();
      } finally {
        await h.close();
      }
      await rename(tmp, join(this.dir, id));
      await this.syncDir();
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw spoolError(`cannot write spool entry ${id}`, err);
    }
    this.index(id, entry.folder, entry.messageId);
    return id;
  }

  /** Entry ids in FIFO order. */
  async list(): Promise<string[]> {
    await this.open();
    try {
      return (await readdir(this.dir)).filter((n) => ID_RE.test(n)).sort();
    } catch (err) {
      throw spoolError(`cannot list spool ${this.dir}`, err);
    }
  }

  /**
   * Reads one entry. A corrupt or unreadable file is moved to bad/ (with a
   * warning) and undefined is returned; so is an id that no longer exists.
   */
  async read(id: string): Promise<SpoolEntry | undefined> {
    if (!ID_RE.test(id)) throw new CpmError("CPM_ERR_SPOOL", `invalid spool id ${JSON.stringify(id)}`);
    let data: Buffer;
    try {
      data = await readFile(join(this.dir, id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      await this.moveAside(id, `unreadable: ${(err as Error).message}`);
      return undefined;
    }
    const parsed = this.parse(data);
    if (typeof parsed === "string") {
      await this.moveAside(id, parsed);
      return undefined;
    }
    return { id, ...parsed };
  }

  private parse(data: Buffer): Omit<SpoolEntry, "id"> | string {
    if (!data.subarray(0, MAGIC.length).equals(Buffer.from(MAGIC))) return "bad magic";
    const nl = data.indexOf(0x0a, MAGIC.length);
    if (nl < 0) return "no header line";
    let h: Partial<Header>;
    try {
      h = JSON.parse(data.subarray(MAGIC.length, nl).toString("utf8")) as Partial<Header>;
    } catch {
      return "header is not JSON";
    }
    if (typeof h !== "object" || h === null) return "header is not an object";
    if (typeof h.folder !== "string" || h.folder === "") return "header has no folder";
    if (typeof h.messageId !== "string" || h.messageId === "") return "header has no messageId";
    if (typeof h.size !== "number" || typeof h.sha256 !== "string" || typeof h.spooledAt !== "string") return "header incomplete";
    const raw = data.subarray(nl + 1);
    if (raw.length !== h.size) return `size ${raw.length} != ${h.size} (truncated?)`;
    if (sha256(raw) !== h.sha256) return "checksum mismatch";
    return { folder: h.folder, messageId: h.messageId, raw: Buffer.from(raw), spooledAt: new Date(h.spooledAt) };
  }

  /** Deletes an entry (after the store took it). Missing ids are fine. */
  async remove(id: string): Promise<void> {
    if (!ID_RE.test(id)) throw new CpmError("CPM_ERR_SPOOL", `invalid spool id ${JSON.stringify(id)}`);
    try {
      await unlink(join(this.dir, id));
      this.unindex(id);
      await this.syncDir();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        this.unindex(id);
        return;
      }
      throw spoolError(`cannot remove spool entry ${id}`, err);
    }
  }

  /** Moves an entry to bad/ with a warning; never throws (a failure is logged as an error). */
  async moveAside(id: string, reason: string): Promise<void> {
    this.log.warn("spool entry moved aside", { spoolId: id, reason, badDir: this.badDir });
    try {
      await mkdir(this.badDir, { recursive: true });
      await rename(join(this.dir, id), join(this.badDir, id));
      this.unindex(id);
      await this.syncDir();
    } catch (err) {
      this.log.error("cannot move spool entry aside", { spoolId: id, reason: (err as Error).message });
    }
  }
}
