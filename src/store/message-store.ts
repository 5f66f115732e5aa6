// The PF's access to the CPM Message Store (OMA CPM MS over IMAP, RFC 9051).
//
// append() stores one CPM object (e.g. the GSO of 8.3.2.3 2.b.ii) in its
// folder: CREATE each level (ALREADYEXISTS, RFC 5530, is fine), APPEND, and
// resolve "stored" only after the tagged OK. When the store is unreachable or
// the APPEND fails for a connection/timeout reason, the object goes to a
// durable local spool and append() resolves "spooled"; a retry timer
// (exponential backoff retryInitialMs..retryMaxMs) drains the spool in FIFO
// order. Before re-APPENDing a spooled object it SEARCHes the folder for its
// Message-ID (RFC 9051 6.4.4 HEADER), so an APPEND whose tagged response was
// lost is not stored twice. While the spool is non-empty, new objects are
// spooled too, so the store receives them in arrival order.
//
// An object marked `unique` (a GSO: its Message-ID comes from the BYE that
// caused it, gso-object.ts) is stored at most once: append() finds it in the
// spool, or SEARCHes the folder for its Message-ID before the APPEND, and
// resolves with `duplicate: true` instead of storing a second copy. The
// SEARCH is skipped when what this process knows of the folder settles it:
// a folder it CREATEd itself holds only what it appended since (kept per
// folder, for the last MAX_KNOWN_FOLDERS folders), and an id whose APPEND
// this process saw succeed is a duplicate.
//
// A server refusal (tagged NO/BAD without a transient response code) is not a
// reason to spool: append() rejects with CPM_ERR_STORE_REJECTED, and a spooled
// object the server refuses is moved to <spoolDir>/bad/.
//
// Events: "stored", "spooled", "rejected" (see MessageStoreEvents).
import { EventEmitter } from "node:events";
import type { Config } from "../config/config.js";
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import type { Metrics } from "../metrics/metrics.js";
import { expungeObjects } from "./imap-fetch.js";
import { describeImapError, ImapPool, type ImapPoolStats, isConnectionError, type LoginGate, type PooledConnection } from "./imap-pool.js";
import { Spool, type SpoolInput } from "./spool.js";

export interface StoreObject {
  /** Full mailbox path, "/"-separated (see folder.ts). */
  folder: string;
  /** The RFC 5322 message (see cpm-object.ts). */
  raw: Buffer;
  /** Its Message-ID, with or without angle brackets; used to detect duplicates. */
  messageId: string;
  /** The Message-ID identifies the object: one already in the folder or the spool is not stored again. */
  unique?: boolean;
  /**
   * How long the caller can wait (ms): when the store has not taken the
   * object by then, it is spooled (durable) and append() resolves "spooled";
   * the APPEND under way, or the spool's drain, stores it behind (once: the
   * drain finds an object already stored by its Message-ID).
   */
  budgetMs?: number;
}

export interface AppendResult {
  state: "stored" | "spooled";
  folder: string;
  messageId: string;
  /** A `unique` object that was already there (state: where it is). */
  duplicate?: boolean;
}

export interface MessageStoreStats {
  /** Last known reachability of the store; undefined before the first attempt. */
  storeUp: boolean | undefined;
  /** Objects stored directly by append(). */
  stored: number;
  /** Objects written to the spool. */
  spooled: number;
  /** Spooled objects the retry loop stored (including duplicates found). */
  drained: number;
  /** Objects found already in the store or the spool (lost APPEND response, a `unique` object again). */
  deduplicated: number;
  /** SEARCHes for a Message-ID before an APPEND (those the folder's known state did not spare). */
  duplicateSearches: number;
  /** Objects spooled because the store had not taken them within the caller's budget. */
  overBudget: number;
  /** Copies of `unique` objects expunged after an unanswered APPEND was carried out after all (settleCopies). */
  copiesRemoved: number;
  /** Objects the store refused. */
  rejected: number;
  /** Drain attempts that stopped because the store was unavailable. */
  retryFailures: number;
  /** Objects waiting in the spool. */
  spoolPending: number;
  draining: boolean;
  retryDelayMs: number;
  lastError: string | undefined;
  pool: ImapPoolStats;
}

export interface MessageStoreEvents {
  stored: [{ folder: string; messageId: string; fromSpool: boolean; duplicate: boolean }];
  spooled: [{ folder: string; messageId: string; spoolId: string; reason: string }];
  rejected: [{ folder: string; messageId: string; fromSpool: boolean; reason: string }];
}

/** RFC 5530 response codes after which the same command may succeed later. */
const TRANSIENT_CODES = new Set(["UNAVAILABLE", "INUSE", "OVERQUOTA", "SERVERBUG"]);
const MAX_KNOWN_FOLDERS = 10_000;
/** Message-IDs remembered per folder (a group session's GSOs are few). */
const MAX_KNOWN_IDS = 64;

type Failure = { kind: "unavailable" | "rejected"; reason: string };

/** What this process knows of one folder's Message-IDs: "sent" = APPEND sent, outcome unknown. */
interface FolderIds {
  /** This process CREATEd the folder: an id it has not sent is not in it. */
  created: boolean;
  ids: Map<string, "sent" | "stored">;
}

/** Splits failures into "try again later" (spool) and "the server said no" (reject). */
function classify(err: unknown): Failure {
  if (err instanceof CpmError) {
    return { kind: err.code === "CPM_ERR_STORE_UNAVAILABLE" ? "unavailable" : "rejected", reason: err.detail };
  }
  const reason = describeImapError(err);
  const e = (err ?? {}) as { authenticationFailed?: boolean; responseStatus?: string; serverResponseCode?: string };
  if (e.authenticationFailed) return { kind: "unavailable", reason: `authentication failed: ${reason}` };
  if (isConnectionError(err)) return { kind: "unavailable", reason };
  if (e.responseStatus === "NO" || e.responseStatus === "BAD") {
    return { kind: TRANSIENT_CODES.has(e.serverResponseCode ?? "") ? "unavailable" : "rejected", reason };
  }
  // Unknown failure: keep the object (spool) rather than lose it.
  return { kind: "unavailable", reason };
}

function checkObject(obj: StoreObject): void {
  const bad = (why: string): never => {
    throw new CpmError("CPM_ERR_BAD_REQUEST", `store object: ${why}`);
  };
  if (typeof obj?.folder !== "string" || obj.folder === "" || /[\r\n\0]/.test(obj.folder)) bad("invalid folder");
  if (!Buffer.isBuffer(obj.raw) || obj.raw.length === 0) bad("raw must be a non-empty Buffer");
  if (typeof obj.messageId !== "string" || obj.messageId === "" || /[\r\n\0]/.test(obj.messageId)) bad("invalid messageId");
}

const bareMessageId = (id: string) => (id.startsWith("<") && id.endsWith(">") ? id.slice(1, -1) : id);
/** UID SEARCH HEADER Message-ID (RFC 9051 6.4.4) in the selected folder; not an array when the server refused it. */
const uidsOf = (conn: PooledConnection, messageId: string) =>
  conn.cmd("SEARCH", () => conn.client.search({ header: { "Message-ID": bareMessageId(messageId) } }, { uid: true }));
const objectKey = (o: { folder: string; messageId: string }) => `${o.folder}\n${bareMessageId(o.messageId)}`;

export class MessageStore extends EventEmitter<MessageStoreEvents> {
  private readonly pool: ImapPool;
  private readonly spool: Spool;
  private readonly knownFolders = new Set<string>();
  private readonly folderIds = new Map<string, FolderIds>();
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Direct appends the caller's budget overtook (the object is in the spool too), by folder + Message-ID. */
  private readonly overtaken = new Map<string, Promise<unknown>>();
  private starting: Promise<void> | undefined;
  private closed = false;
  /** Resolves when close() begins: copy checks waiting for store.timeoutMs run at once then. */
  private readonly closing: Promise<void>;
  private closeNow: () => void = () => {};
  private spoolCount = 0;
  private pendingWrites = 0;
  private retryDelay: number;
  private timer: NodeJS.Timeout | undefined;
  private drainPromise: Promise<number> | undefined;
  private storeUp: boolean | undefined;
  private lastError: string | undefined;
  /** Folders with a spool write under way (not yet in the spool's index). */
  private readonly spoolingFolders = new Map<string, number>();
  private readonly counts = {
    stored: 0,
    spooled: 0,
    drained: 0,
    deduplicated: 0,
    duplicateSearches: 0,
    overBudget: 0,
    copiesRemoved: 0,
    rejected: 0,
    retryFailures: 0,
  };

  constructor(
    private readonly cfg: Config["store"],
    private readonly log: Logger,
    deps: { pool?: ImapPool; spool?: Spool; gate?: LoginGate; metrics?: Pick<Metrics, "imap"> } = {},
  ) {
    super();
    this.pool = deps.pool ?? new ImapPool(cfg, log, deps.gate, deps.metrics);
    this.spool = deps.spool ?? new Spool(cfg.spoolDir, log);
    this.closing = new Promise((resolve) => {
      this.closeNow = resolve;
    });
    this.retryDelay = cfg.retryInitialMs;
  }

  /**
   * Opens the spool and starts the retry loop; entries spooled by an earlier
   * run are drained in the background. Does not need the store to be up.
   * Rejects (CPM_ERR_SPOOL) only if the spool directory is unusable.
   */
  start(): Promise<void> {
    this.starting ??= this.track(this.doStart());
    return this.starting;
  }

  /**
   * True when nothing is running or pending: no operation in flight, the
   * spool empty, no drain. Only then may an idle mailbox be closed.
   */
  idle(): boolean {
    return this.inFlight.size === 0 && this.spoolCount === 0 && this.pendingWrites === 0 && this.drainPromise === undefined;
  }

  private async doStart(): Promise<void> {
    await this.spool.open();
    const ids = await this.spool.list();
    this.spoolCount = ids.length;
    this.log.info("message store starting", {
      host: this.cfg.host,
      port: this.cfg.port,
      rootFolder: this.cfg.rootFolder,
      spoolDir: this.cfg.spoolDir,
      spoolPending: ids.length,
    });
    if (ids.length > 0) {
      this.log.info("draining objects spooled by an earlier run", { spoolPending: ids.length });
      void this.flushSpool().catch(() => {});
    } else {
      this.track(this.probe());
    }
  }

  /** Stores one object, or spools it durably when the store cannot take it now. */
  async append(obj: StoreObject): Promise<AppendResult> {
    checkObject(obj);
    if (obj.unique && (await this.spool.has(obj.folder, obj.messageId))) {
      this.counts.deduplicated++;
      this.log.info("object already spooled", { folder: obj.folder, messageId: obj.messageId });
      return { state: "spooled", folder: obj.folder, messageId: obj.messageId, duplicate: true };
    }
    if (this.closed) return this.toSpool(obj, "message store closed", false);
    // the spool's index (entries of an earlier run too) before the order check; an unusable spool shows in toSpool
    await this.spool.open().catch(() => undefined);
    // arrival order is kept per folder (a group session's deferred queue, its
    // GSOs): an object goes behind what the spool holds for its folder; other
    // folders go on directly unless the store is known to be down
    if (this.storeUp === false && this.spoolCount > 0) return this.toSpool(obj, "store unavailable (spool retrying)", false);
    if (this.spool.holdsFolder(obj.folder) || this.spoolingFolders.has(obj.folder)) {
      return this.toSpool(obj, "spool holds this folder (keeps arrival order)", false);
    }
    const direct = this.track(this.appendDirect(obj));
    return obj.budgetMs === undefined ? direct : this.withinBudget(obj, direct, obj.budgetMs);
  }

  /** The direct append's result if it comes within budgetMs; else the object is spooled now and stored behind. */
  private async withinBudget(obj: StoreObject, direct: Promise<AppendResult>, budgetMs: number): Promise<AppendResult> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), budgetMs);
    });
    const first = await Promise.race([direct, late]).finally(() => clearTimeout(timer));
    if (first !== undefined) return first;
    // what the APPEND under way does next is settled behind the caller (stored, or spooled by
    // appendDirect itself); the drain waits for it before it looks for the object (no second copy)
    const key = objectKey(obj);
    const settled = direct
      .catch(() => undefined)
      .finally(() => {
        if (this.overtaken.get(key) === settled) this.overtaken.delete(key);
      });
    this.overtaken.set(key, settled);
    this.counts.overBudget++;
    return this.toSpool(obj, `store slower than the caller's budget (${budgetMs} ms)`, false);
  }

  /**
   * CREATEs `folder` (each level) ahead of need, so that a later append()
   * finds it known and, when this CREATE made it, needs no duplicate SEARCH.
   * Rejects (CPM_ERR_STORE_UNAVAILABLE or the IMAP error) when it could not;
   * nothing depends on it: append() CREATEs a folder it does not know.
   */
  prepareFolder(folder: string): Promise<void> {
    if (this.knownFolders.has(folder)) return Promise.resolve();
    if (typeof folder !== "string" || folder === "" || /[\r\n\0]/.test(folder)) {
      return Promise.reject(new CpmError("CPM_ERR_BAD_REQUEST", "store folder: invalid folder"));
    }
    if (this.closed) return Promise.reject(new CpmError("CPM_ERR_STORE_UNAVAILABLE", "message store closed"));
    return this.track(this.pool.use((conn) => this.ensureFolder(conn, folder)));
  }

  /** Drains the spool now (FIFO). Resolves with the number of entries taken by the store in this run. */
  flushSpool(): Promise<number> {
    if (this.drainPromise) return this.drainPromise;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const run = this.drain()
      .catch((err: unknown) => {
        this.backoff();
        this.log.error("spool drain failed", { reason: err instanceof Error ? err.message : String(err) });
        throw err;
      })
      .finally(() => {
        this.drainPromise = undefined;
        if (this.spoolCount > 0) this.scheduleRetry();
      });
    this.drainPromise = run;
    return run;
  }

  /** Stops the retry loop, waits for running operations, logs out. Later appends go to the spool. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closeNow();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.drainPromise?.catch(() => {});
    await Promise.allSettled([...this.inFlight]);
    await this.pool.close();
    this.log.info("message store closed", { spoolPending: this.spoolCount });
  }

  /**
   * Runs fn on one pooled IMAP connection, for readers of the store (the
   * deferred queue, the session recorder). Rejects with
   * CPM_ERR_STORE_UNAVAILABLE when no connection can be opened or after close().
   */
  withConnection<T>(fn: (conn: PooledConnection) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new CpmError("CPM_ERR_STORE_UNAVAILABLE", "message store closed"));
    return this.track(this.pool.use(fn));
  }

  stats(): MessageStoreStats {
    return {
      storeUp: this.storeUp,
      ...this.counts,
      spoolPending: this.spoolCount,
      draining: this.drainPromise !== undefined,
      retryDelayMs: this.retryDelay,
      lastError: this.lastError,
      pool: this.pool.stats(),
    };
  }

  // ---- internals ----

  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p);
    const done = () => this.inFlight.delete(p);
    p.then(done, done);
    return p;
  }

  private async appendDirect(obj: StoreObject): Promise<AppendResult> {
    const { folder, messageId } = obj;
    let outcome: "stored" | "duplicate";
    try {
      outcome = await this.storeOne(obj, obj.unique === true);
    } catch (err) {
      const f = classify(err);
      if (f.kind === "rejected") {
        this.counts.rejected++;
        this.log.error("message store rejected object", { folder, messageId, reason: f.reason });
        await this.keepRejected(obj, f.reason);
        this.emit("rejected", { folder, messageId, fromSpool: false, reason: f.reason });
        throw new CpmError("CPM_ERR_STORE_REJECTED", `${folder}: ${f.reason}`, { cause: err });
      }
      this.markDown(f.reason);
      return this.toSpool(obj, `store unavailable: ${f.reason}`, true);
    }
    this.markUp();
    if (outcome === "duplicate") {
      this.counts.deduplicated++;
      this.log.info("object already stored", { folder, messageId });
      this.emit("stored", { folder, messageId, fromSpool: false, duplicate: true });
      return { state: "stored", folder, messageId, duplicate: true };
    }
    this.counts.stored++;
    this.log.debug("object stored", { folder, messageId });
    this.emit("stored", { folder, messageId, fromSpool: false, duplicate: false });
    return { state: "stored", folder, messageId };
  }

  /** An object the server refused is not lost: it is kept in <spoolDir>/bad/ (as a refused spooled object is), for an operator. */
  private async keepRejected(obj: StoreObject, reason: string): Promise<void> {
    try {
      const id = await this.spool.put({ folder: obj.folder, raw: obj.raw, messageId: obj.messageId });
      await this.spool.moveAside(id, `rejected by message store: ${reason}`);
    } catch (err) {
      this.log.error("refused object not kept", { folder: obj.folder, messageId: obj.messageId, reason: String(err) });
    }
  }

  private async toSpool(obj: StoreObject, reason: string, failure: boolean): Promise<AppendResult> {
    const { folder, messageId } = obj;
    // counted before the write so that appends arriving meanwhile queue behind it
    this.spoolCount++;
    this.pendingWrites++;
    this.spoolingFolders.set(folder, (this.spoolingFolders.get(folder) ?? 0) + 1);
    let spoolId: string;
    try {
      spoolId = await this.spool.put({ folder, raw: obj.raw, messageId });
    } catch (err) {
      this.spoolCount--;
      const e = err instanceof CpmError ? err : new CpmError("CPM_ERR_SPOOL", String(err), { cause: err });
      this.log.error("object lost: store unavailable and spool write failed", { folder, messageId, reason, spoolError: e.detail });
      throw e;
    } finally {
      this.pendingWrites--;
      const n = (this.spoolingFolders.get(folder) ?? 1) - 1;
      if (n > 0) this.spoolingFolders.set(folder, n);
      else this.spoolingFolders.delete(folder);
    }
    this.counts.spooled++;
    const fields = { folder, messageId, spoolId, reason, spoolPending: this.spoolCount };
    if (failure) this.log.warn("object spooled", fields);
    else this.log.info("object spooled", fields);
    this.emit("spooled", { folder, messageId, spoolId, reason });
    if (!this.closed && !this.drainPromise) this.scheduleRetry();
    return { state: "spooled", folder, messageId };
  }

  private scheduleRetry(): void {
    if (this.closed || this.timer || this.drainPromise) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flushSpool().catch(() => {});
    }, this.retryDelay);
    this.timer.unref();
  }

  private backoff(): void {
    this.retryDelay = Math.min(this.retryDelay * 2, this.cfg.retryMaxMs);
  }

  private async drain(): Promise<number> {
    let done = 0;
    const seen = new Set<string>();
    for (;;) {
      const ids = await this.spool.list();
      const fresh = ids.filter((id) => !seen.has(id));
      if (fresh.length === 0) {
        if (this.pendingWrites === 0) this.spoolCount = ids.length;
        if (ids.length === 0) this.retryDelay = this.cfg.retryInitialMs;
        else {
          // entries that could neither be stored nor moved aside (already logged)
          this.backoff();
        }
        if (done > 0) this.log.info("spool drained", { stored: done, spoolPending: this.spoolCount });
        return done;
      }
      for (const id of fresh) {
        if (this.closed) return done;
        seen.add(id);
        const entry = await this.spool.read(id);
        if (!entry) {
          this.spoolCount = Math.max(0, this.spoolCount - 1);
          continue;
        }
        const { folder, messageId } = entry;
        // an APPEND of this object still under way (the caller's budget ran out): its outcome first
        await this.overtaken.get(objectKey(entry));
        let outcome: "stored" | "duplicate";
        try {
          outcome = await this.storeOne(entry, true);
        } catch (err) {
          const f = classify(err);
          if (f.kind === "rejected") {
            this.counts.rejected++;
            this.log.error("message store rejected spooled object", { folder, messageId, spoolId: id, reason: f.reason });
            await this.spool.moveAside(id, `rejected by message store: ${f.reason}`);
            this.spoolCount = Math.max(0, this.spoolCount - 1);
            this.emit("rejected", { folder, messageId, fromSpool: true, reason: f.reason });
            continue;
          }
          this.markDown(f.reason);
          this.counts.retryFailures++;
          this.backoff();
          this.log.warn("spool retry failed, store unavailable", {
            reason: f.reason,
            spoolPending: this.spoolCount,
            retryInMs: this.retryDelay,
          });
          return done;
        }
        // The object is in the store now; if remove() fails the next drain finds it by Message-ID.
        await this.spool.remove(id);
        this.spoolCount = Math.max(0, this.spoolCount - 1);
        done++;
        this.counts.drained++;
        if (outcome === "duplicate") this.counts.deduplicated++;
        this.markUp();
        this.log.info("spooled object stored", {
          folder,
          messageId,
          spoolId: id,
          duplicate: outcome === "duplicate",
          spooledForMs: Date.now() - entry.spooledAt.getTime(),
        });
        this.emit("stored", { folder, messageId, fromSpool: true, duplicate: outcome === "duplicate" });
      }
    }
  }

  /**
   * CREATE (if needed) + [SEARCH] + APPEND on one pooled connection. A reused
   * connection can turn out dead (server restarted, NAT dropped it): then it is
   * retried once on a new connection, with the duplicate check, because the
   * APPEND may have reached the server.
   */
  private async storeOne(o: SpoolInput, dedupe: boolean): Promise<"stored" | "duplicate"> {
    let reused = false;
    const attempt = (check: boolean) =>
      this.pool.use(async (conn) => {
        reused = !conn.fresh;
        await this.ensureFolder(conn, o.folder);
        if (check && (await this.isStored(conn, o.folder, o.messageId))) return "duplicate" as const;
        // an earlier APPEND of it gave no answer (timed out, connection lost): the server may still carry it out
        const uncertain = this.folderIds.get(o.folder)?.ids.get(bareMessageId(o.messageId)) === "sent";
        this.noteId(o.folder, o.messageId, "sent");
        await this.appendRaw(conn, o);
        this.noteId(o.folder, o.messageId, "stored");
        // other sidecars may have SEARCHed and APPENDed the same object meanwhile (SEARCH then APPEND is not atomic across writers)
        if ((uncertain || this.cfg.otherWriters) && dedupe) this.track(this.settleCopies(o.folder, o.messageId));
        return "stored" as const;
      });
    try {
      return await attempt(dedupe);
    } catch (err) {
      if (!reused || !isConnectionError(err)) throw err;
      this.log.debug("pooled IMAP connection failed, retrying on a new one", { folder: o.folder, reason: describeImapError(err) });
      return await attempt(true);
    }
  }

  private async ensureFolder(conn: PooledConnection, folder: string): Promise<void> {
    if (this.knownFolders.has(folder)) return;
    // what this process knew of the folder may be stale (it may have been removed); what it
    // notes while the CREATE is under way (an APPEND on another connection) is kept
    this.folderIds.delete(folder);
    // imapflow resolves { created: false } on NO [ALREADYEXISTS] (RFC 5530)
    const create = async (path: string) => (await conn.cmd("CREATE", () => conn.client.mailboxCreate(path)))?.created === true;
    let created: boolean;
    try {
      // RFC 9051 6.3.4: the server SHOULD create the superior names the new one needs (Dovecot does)
      created = await create(folder);
    } catch (err) {
      if (isConnectionError(err)) throw err;
      // a server that does not: level by level
      const levels = folder.split("/");
      created = false;
      for (let i = 1; i <= levels.length; i++) created = await create(levels.slice(0, i).join("/"));
    }
    if (this.knownFolders.size >= MAX_KNOWN_FOLDERS) this.knownFolders.clear();
    this.knownFolders.add(folder);
    // a folder this CREATE made was empty: what it holds since, this process appended (unless other sidecars append too)
    if (created && !this.cfg.otherWriters) this.folderFacts(folder).created = true;
  }

  /** The known ids of `folder` (least recently used dropped beyond MAX_KNOWN_FOLDERS). */
  private folderFacts(folder: string): FolderIds {
    let facts = this.folderIds.get(folder);
    if (facts) this.folderIds.delete(folder);
    else facts = { created: false, ids: new Map() };
    this.folderIds.set(folder, facts);
    if (this.folderIds.size > MAX_KNOWN_FOLDERS) {
      const oldest = this.folderIds.keys().next().value;
      if (oldest !== undefined) this.folderIds.delete(oldest);
    }
    return facts;
  }

  private noteId(folder: string, messageId: string, state: "sent" | "stored"): void {
    const facts = this.folderFacts(folder);
    facts.ids.set(bareMessageId(messageId), state);
    if (facts.ids.size > MAX_KNOWN_IDS) {
      const oldest = facts.ids.keys().next().value;
      if (oldest !== undefined) facts.ids.delete(oldest);
      // an id forgotten might be in the folder: from now on the SEARCH decides
      facts.created = false;
    }
  }

  /** Is `messageId` in `folder`? From what this process knows, else SEARCH. */
  private async isStored(conn: PooledConnection, folder: string, messageId: string): Promise<boolean> {
    const facts = this.folderIds.get(folder);
    const known = facts?.ids.get(bareMessageId(messageId));
    if (known === "stored") return true;
    if (known === undefined && facts?.created) return false;
    this.counts.duplicateSearches++;
    const found = await this.contains(conn, folder, messageId);
    if (found) this.noteId(folder, messageId, "stored");
    return found;
  }

  private async appendRaw(conn: PooledConnection, o: SpoolInput): Promise<void> {
    const run = () => conn.cmd("APPEND", () => conn.client.append(o.folder, o.raw));
    let res: Awaited<ReturnType<typeof run>>;
    try {
      res = await run();
    } catch (err) {
      // NO [TRYCREATE] (RFC 9051 7.1): the folder vanished since we created it
      if ((err as { serverResponseCode?: string }).serverResponseCode !== "TRYCREATE") throw err;
      this.knownFolders.delete(o.folder);
      this.folderIds.delete(o.folder);
      await this.ensureFolder(conn, o.folder);
      res = await run();
    }
    if (!res) throw new CpmError("CPM_ERR_STORE_UNAVAILABLE", "APPEND not sent: connection not authenticated");
  }

  /** SEARCH HEADER Message-ID in the folder (opened read-only with EXAMINE). */
  /**
   * A `unique` object stored again after an APPEND of it that got no answer
   * (a server that was frozen may carry out that APPEND later), or stored
   * where other sidecars write too (store.otherWriters: two may decide the
   * same BYE at once): once the server and the others had store.timeoutMs to
   * finish, copies beyond the first (lowest UID) are expunged (RFC 4315 UID
   * EXPUNGE). Every writer keeps the same one. At close() the check runs at
   * once. Never throws: a failure is logged.
   */
  private async settleCopies(folder: string, messageId: string): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise((r) => {
        timer = setTimeout(r, this.cfg.timeoutMs);
        timer.unref();
      }),
      this.closing,
    ]);
    clearTimeout(timer);
    try {
      const removed = await this.pool.use(async (conn) => {
        const lock = await conn.cmd("SELECT", () => conn.client.getMailboxLock(folder));
        try {
          const hits = await uidsOf(conn, messageId);
          if (!Array.isArray(hits) || hits.length < 2) return 0;
          const extra = [...hits].sort((a, b) => a - b).slice(1);
          const ok = await conn.cmd("UID EXPUNGE", () => expungeObjects(conn.client, extra.join(",")));
          return ok ? extra.length : 0;
        } finally {
          lock.release();
        }
      });
      if (removed > 0) {
        this.counts.copiesRemoved += removed;
        this.log.warn("later copies of an object removed (an unanswered APPEND carried out after all, or another sidecar stored it too)", {
          folder,
          messageId,
          removed,
        });
      }
    } catch (err) {
      this.log.error("copies of an object not checked", { folder, messageId, reason: describeImapError(err) });
    }
  }

  private async contains(conn: PooledConnection, folder: string, messageId: string): Promise<boolean> {
    const lock = await conn.cmd("EXAMINE", () => conn.client.getMailboxLock(folder, { readOnly: true }));
    try {
      const hits = await uidsOf(conn, messageId);
      if (!Array.isArray(hits)) {
        this.log.warn("SEARCH refused; appending without the duplicate check", { folder, messageId });
        return false;
      }
      return hits.length > 0;
    } finally {
      lock.release();
    }
  }

  /** Connects one pooled connection at start so the log says early whether the store is reachable. */
  private async probe(): Promise<void> {
    try {
      await this.pool.use(async () => {});
      this.markUp();
    } catch (err) {
      this.markDown(classify(err).reason);
    }
  }

  private markUp(): void {
    if (this.storeUp !== true) this.log.info("message store reachable", { host: this.cfg.host, port: this.cfg.port });
    this.storeUp = true;
  }

  private markDown(reason: string): void {
    this.lastError = reason;
    if (this.storeUp !== false) {
      this.log.warn("message store unavailable; objects are spooled", { host: this.cfg.host, port: this.cfg.port, reason });
    }
    this.storeUp = false;
  }
}
