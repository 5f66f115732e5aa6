// Each served user's data in that user's own Message Store mailbox.
//
// forUser(servedUser) gives the MessageStore of the user's mailbox: its own
// IMAP pool (store.poolSize connections) logged in as store.user with
// "{user}" replaced by the mailbox name (mailbox-name.ts; with a Dovecot
// master user "{user}*pfmaster" and the master password), and its own spool
// <store.spoolDir>/<16 hex of SHA-256 of the mailbox name>/ with an "owner"
// file naming the mailbox. start() finds the spools of an earlier run by
// their owner file and drains each into its own mailbox; a spool whose owner
// is missing or does not match its directory is left alone (never stored in
// another user's mailbox).
//
// Mailboxes are opened lazily. One unused for store.mailboxIdleMs whose spool
// is empty and that runs nothing is closed (its IMAP connections logged out);
// when store.maxMailboxes are open, opening another first closes the least
// recently used idle one. Without "{user}" in store.user every served user
// shares one login and the spool is store.spoolDir itself (single mailbox).
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Config } from "../config/config.js";
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import { type Metrics, noMetrics } from "../metrics/metrics.js";
import { encodeFolderComponent } from "./folder.js";
import { LoginGate } from "./imap-pool.js";
import { isPerUserTemplate, mailboxLogin, mailboxNameOf } from "./mailbox-name.js";
import { type AppendResult, MessageStore, type MessageStoreStats, type StoreObject } from "./message-store.js";
import { OWNER_FILE, Spool } from "./spool.js";

/** A CPM object for the mailbox of `owner` (the served user's URI). */
export interface OwnedStoreObject extends StoreObject {
  owner: string;
}

export interface MailboxesStats {
  /** True when store.user has "{user}" (a mailbox per served user). */
  perUser: boolean;
  /** Mailboxes open now / opened since start / closed for being idle / closed for the limit. */
  open: number;
  opened: number;
  idleClosed: number;
  evicted: number;
  /** Objects waiting in the spools of the open mailboxes. */
  spoolPending: number;
  /** Per open mailbox (by mailbox name; "" for the shared login). */
  mailboxes: Record<string, MessageStoreStats>;
}

interface Entry {
  name: string;
  store: MessageStore;
  lastUse: number;
}

interface OwnerRecord {
  mailbox: string;
  servedUser?: string;
}

const SPOOL_SUBDIR = /^[0-9a-f]{16}$/;
const SPOOL_ENTRY = /^\d{16}-\d{8}\.spool$/;

/** The spool subdirectory of a mailbox: 16 hex digits of the SHA-256 of its name. */
export function spoolDirName(mailboxName: string): string {
  return createHash("sha256").update(mailboxName, "utf8").digest("hex").slice(0, 16);
}

export class Mailboxes {
  readonly perUser: boolean;
  private readonly log: Logger;
  private readonly open = new Map<string, Entry>();
  private readonly shared: MessageStore | undefined;
  private readonly counts = { opened: 0, idleClosed: 0, evicted: 0 };
  private readonly closing = new Set<Promise<void>>();
  private sweeper: NodeJS.Timeout | undefined;
  private started = false;
  private closed = false;
  private overLimitWarned = false;
  /** One turn-taking for the connection attempts of every mailbox (store.maxConcurrentLogins). */
  private readonly logins: LoginGate;

  constructor(
    private readonly cfg: Config["store"],
    log: Logger,
    private readonly metrics: Pick<Metrics, "imap"> = noMetrics,
  ) {
    this.log = log;
    this.perUser = isPerUserTemplate(cfg.user);
    this.logins = new LoginGate(cfg.maxConcurrentLogins);
    if (!this.perUser) this.shared = new MessageStore(cfg, log, { metrics });
  }

  /**
   * The mailbox name of a served user ("" for the shared login). Throws
   * CPM_ERR_BAD_SERVED_USER for a URI that gives no usable name.
   */
  mailboxOf(servedUser: string): string {
    return this.perUser ? mailboxNameOf(servedUser) : "";
  }

  /**
   * Where the served user's PF-private folders (deferred queues, session
   * descriptors) start: `root` itself in the user's own mailbox; with the
   * shared login, one level per user below it (`<root>/<enc(mailbox name)>`),
   * so that two users of one group chat never share a queue. Throws
   * CPM_ERR_BAD_SERVED_USER.
   */
  privateRootOf(root: string, servedUser: string): string {
    return this.perUser ? root : `${root}/${encodeFolderComponent(mailboxNameOf(servedUser))}`;
  }

  /** The MessageStore of the served user's mailbox, opened if needed. Throws CPM_ERR_BAD_SERVED_USER. */
  forUser(servedUser: string): MessageStore {
    if (this.shared) return this.shared;
    return this.openMailbox(mailboxNameOf(servedUser), servedUser);
  }

  /** ObjectStore of the PF (GSOs): the object goes to the mailbox of `owner`. */
  append(obj: OwnedStoreObject): Promise<AppendResult> {
    let store: MessageStore;
    try {
      store = this.forUser(obj.owner);
    } catch (err) {
      return Promise.reject(err);
    }
    const { owner: _owner, ...object } = obj;
    return store.append(object);
  }

  /** CREATEs `folder` in the mailbox of `owner` ahead of need (see MessageStore.prepareFolder). */
  prepareFolder(obj: { owner: string; folder: string }): Promise<void> {
    let store: MessageStore;
    try {
      store = this.forUser(obj.owner);
    } catch (err) {
      return Promise.reject(err);
    }
    return store.prepareFolder(obj.folder);
  }

  /**
   * Starts the shared store, or finds the per-user spools of an earlier run
   * and drains each into its owner's mailbox (in the background). Rejects
   * (CPM_ERR_SPOOL) only if the spool directory is unusable.
   */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    if (this.shared) {
      this.log.warn('store.user has no "{user}": every served user shares one mailbox', {
        key: "store.user",
        login: this.cfg.user,
      });
      await this.shared.start();
      return;
    }
    const every = Math.max(20, Math.min(Math.floor(this.cfg.mailboxIdleMs / 2), 10_000));
    this.sweeper = setInterval(() => this.sweep(), every);
    this.sweeper.unref();
    await this.restoreSpools();
    this.log.info("per-user mailboxes", { loginTemplate: this.cfg.user, maxMailboxes: this.cfg.maxMailboxes, open: this.open.size });
  }

  /**
   * Drains the spools of the open mailboxes into the store (drain before a
   * shutdown), for at most timeoutMs; what is left stays spooled on disk and
   * is stored after the next start. Resolves with the objects left.
   */
  async flushSpools(timeoutMs: number): Promise<number> {
    const stores = [...this.open.values()].map((e) => e.store);
    if (this.shared) stores.push(this.shared);
    const pending = stores.filter((s) => s.stats().spoolPending > 0);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled(pending.map((s) => s.flushSpool())),
      new Promise((r) => {
        timer = setTimeout(r, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    return this.stats().spoolPending;
  }

  /** Closes every mailbox (their appends after this go to their spools). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    const all = [...this.open.values()].map((e) => e.store.close());
    this.open.clear();
    if (this.shared) all.push(this.shared.close());
    await Promise.allSettled([...all, ...this.closing]);
  }

  stats(): MailboxesStats {
    const mailboxes: Record<string, MessageStoreStats> = {};
    let spoolPending = 0;
    const add = (name: string, s: MessageStore) => {
      const st = s.stats();
      mailboxes[name] = st;
      spoolPending += st.spoolPending;
    };
    if (this.shared) add("", this.shared);
    for (const e of this.open.values()) add(e.name, e.store);
    return { perUser: this.perUser, open: this.shared ? 1 : this.open.size, ...this.counts, spoolPending, mailboxes };
  }

  /** Closes the mailboxes idle for store.mailboxIdleMs (also run by a timer). */
  sweep(now = Date.now()): number {
    let n = 0;
    for (const e of [...this.open.values()]) {
      if (now - e.lastUse >= this.cfg.mailboxIdleMs && e.store.idle()) {
        this.retire(e, "idle");
        this.counts.idleClosed++;
        n++;
      }
    }
    return n;
  }

  // ---- internals ----

  private openMailbox(name: string, servedUser: string | undefined): MessageStore {
    const now = Date.now();
    const found = this.open.get(name);
    if (found) {
      // keep the map in least-recently-used order
      this.open.delete(name);
      found.lastUse = now;
      this.open.set(name, found);
      return found.store;
    }
    if (this.open.size >= this.cfg.maxMailboxes) this.evictOne();
    const login = mailboxLogin(this.cfg.user, name);
    const owner: OwnerRecord = { mailbox: name, ...(servedUser ? { servedUser } : {}) };
    const log = this.log.child({ mailbox: name });
    const dir = join(this.cfg.spoolDir, spoolDirName(name));
    const store = new MessageStore({ ...this.cfg, user: login, spoolDir: dir }, log, {
      spool: new Spool(dir, log, { owner: `${JSON.stringify(owner)}\n` }),
      gate: this.logins,
      metrics: this.metrics,
    });
    this.open.set(name, { name, store, lastUse: now });
    this.counts.opened++;
    if (this.closed) {
      // after close(): appends go to the spool, drained at the next start
      void store.close();
    } else {
      store.start().catch((err: unknown) => {
        this.log.error("mailbox spool unusable", { mailbox: name, reason: err instanceof CpmError ? err.detail : String(err) });
      });
    }
    return store;
  }

  /** Closes the least recently used idle mailbox; with none idle the limit is exceeded (nothing is dropped). */
  private evictOne(): void {
    for (const e of this.open.values()) {
      if (e.store.idle()) {
        this.retire(e, "limit");
        this.counts.evicted++;
        return;
      }
    }
    if (!this.overLimitWarned) {
      this.overLimitWarned = true;
      this.log.warn("store.maxMailboxes reached and none idle: opening one more", { maxMailboxes: this.cfg.maxMailboxes });
    }
  }

  private retire(e: Entry, why: "idle" | "limit"): void {
    this.open.delete(e.name);
    this.log.debug("mailbox closed", { mailbox: e.name, reason: why });
    const p = e.store.close().catch(() => {});
    this.closing.add(p);
    void p.finally(() => this.closing.delete(p));
  }

  /** Opens the mailbox of every per-user spool left with entries by an earlier run; its start() drains it. */
  private async restoreSpools(): Promise<void> {
    const root = this.cfg.spoolDir;
    try {
      await mkdir(root, { recursive: true });
    } catch (err) {
      throw new CpmError("CPM_ERR_SPOOL", `cannot open spool ${root}: ${(err as Error).message}`, { cause: err });
    }
    const names = await readdir(root);
    const legacy = names.filter((n) => SPOOL_ENTRY.test(n)).length;
    if (legacy > 0) {
      this.log.warn("spool entries of the shared-login layout are not drained with a per-user store.user", {
        spoolDir: root,
        entries: legacy,
      });
    }
    const starts: Promise<void>[] = [];
    for (const sub of names.filter((n) => SPOOL_SUBDIR.test(n)).sort()) {
      const dir = join(root, sub);
      const entries = (await readdir(dir).catch(() => [] as string[])).filter((n) => SPOOL_ENTRY.test(n)).length;
      if (entries === 0) continue;
      const owner = await readOwner(dir);
      if (!owner || spoolDirName(owner.mailbox) !== sub) {
        this.log.error("spool without a valid owner left alone; its entries are not stored", { spoolDir: dir, entries });
        continue;
      }
      this.log.info("draining a mailbox's spool of an earlier run", { mailbox: owner.mailbox, spoolPending: entries });
      const store = this.openMailbox(owner.mailbox, owner.servedUser);
      starts.push(store.start());
    }
    await Promise.all(starts);
  }
}

async function readOwner(dir: string): Promise<OwnerRecord | undefined> {
  try {
    const o = JSON.parse(await readFile(join(dir, OWNER_FILE), "utf8")) as Partial<OwnerRecord>;
    if (typeof o?.mailbox !== "string" || o.mailbox === "") return undefined;
    return { mailbox: o.mailbox, ...(typeof o.servedUser === "string" ? { servedUser: o.servedUser } : {}) };
  } catch {
    return undefined;
  }
}
