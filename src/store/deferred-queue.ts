// The deferred-messages queue (issue 3 item 4): what the Controlling Function
// sends on a group session while the served user's client leg is absent is
// kept in the user's Message Store until deferred delivery (8.3.2.9.1.2,
// DD-10: "deliver ... in order") or re-join delivery (8.3.2.9.1.3, RJ-2)
// takes it.
//
// Folder convention (the served user's mailbox is the IMAP login):
//   <deferredRootFolder>/<Conversation-ID>/<Contribution-ID>
// with deferredRootFolder = store.deferredRootFolder ("Deferred"), components
// encoded by folder.ts exactly like the session folders
// <rootFolder>/<Conversation-ID>/<Contribution-ID> ("Default/..."). Why a
// sibling root and not <rootFolder>/Deferred/...:
//   - under "Default" a level "Deferred" would share the namespace of
//     Conversation-ID folders (a Conversation-ID "Deferred" would clash);
//   - clients that sync the store (LIST "Default/*", cpm-facts 2.1) must not
//     see the queue: they would show the messages once from the sync and once
//     more from deferred delivery;
//   - one folder per group session = one queue per session: IMAP UID order is
//     arrival order (RFC 9051 2.3.1.1: UIDs ascend in APPEND order), sessions
//     with pending data are a LIST + STATUS (MESSAGES) away, and 603 / BYE
//     during delivery (DD-8, DD-14) discard one folder.
// Object layout: deferred-object.ts.
//
// Writing (DeferredSink.storeDeferred):
//   - items of one session (folder) are stored one after another in call
//     order; sessions do not wait for each other;
//   - storeDeferred resolves when the APPEND got its tagged OK or when the
//     object is durably in the spool (MessageStore: fsync + rename); the CF's
//     SEND gets its 200 only then;
//   - arrival order survives a store outage: MessageStore spools every object
//     while its spool is not empty and drains it in FIFO order, and this queue
//     starts an item only after the previous item of its session resolved. So
//     once an item of a session is spooled, all later items of every session
//     are spooled behind it until the drain caught up, and the store receives
//     them in arrival order;
//   - at-least-once without duplicates: the object's Message-ID is derived
//     from the MSRP Message-ID (RFC 4975 7.1.1), so a retried SEND (same
//     MSRP Message-ID) is recognised: against the ids this process stored or
//     spooled for the folder, against the folder's existing objects (read once
//     per folder while the store is reachable, which covers a restart), and by
//     the spool drain's SEARCH for objects that were spooled.
//   - a refusal by the server (CPM_ERR_STORE_REJECTED) fails that item only.
//
// Reading (deferred delivery): read() returns the oldest items of a session in
// UID order with handles; ack() removes delivered items (STORE +FLAGS \Deleted,
// then UID EXPUNGE, RFC 4315); items never acked stay and are read again
// (at-least-once). A handle carries UIDVALIDITY: if the folder was recreated
// meanwhile, its ack is ignored (the items are delivered again, never lost).
// Items still in the spool are not readable yet; they follow in order once
// drained (spoolPending() says whether any wait).
import type { Config } from "../config/config.js";
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import type { DeferredItem, DeferredSink, GroupSessionRef } from "../media/ports.js";
import { buildDeferredObject, deferredItemFromObject, type ReadBackItem } from "./deferred-object.js";
import { decodeFolderComponent, groupSessionFolder } from "./folder.js";
import { describeImapError, isConnectionError, type PooledConnection } from "./imap-pool.js";
import { folderMessageIds, lockMailbox } from "./mailbox.js";
import type { MessageStore } from "./message-store.js";

/** Where one stored item is; what ack() takes. */
export interface DeferredHandle {
  folder: string;
  /** UIDVALIDITY of the folder when read (RFC 9051 2.3.1.1), as a decimal string. */
  uidValidity: string;
  uid: number;
}

export interface DeferredRecord {
  handle: DeferredHandle;
  /** The stored object, byte for byte. */
  raw: Buffer;
  /** The item; undefined when the object is not one this queue wrote (see error). */
  item: ReadBackItem | undefined;
  error?: string;
}

export interface DeferredSessionSummary {
  folder: string;
  /** Decoded from the folder name; undefined when the component was shortened (folder.ts). */
  conversationId: string | undefined;
  contributionId: string | undefined;
  /** Objects in the folder (STATUS MESSAGES). */
  count: number;
}

export interface DeferredQueueOptions {
  /** Sessions whose write state (order chain, known Message-IDs) stays in memory. Default 10000. */
  maxSessions?: number;
  /** Message-IDs remembered per session for duplicate detection. Default 10000. */
  maxIdsPerSession?: number;
}

export interface DeferredQueueStats {
  sessions: number;
  stored: number;
  spooled: number;
  duplicates: number;
  failed: number;
  acked: number;
}

interface FolderState {
  tail: Promise<unknown>;
  /** Bare Message-IDs stored or spooled for this folder (insertion order = age). */
  ids: Set<string>;
  /** True once the folder's existing Message-IDs were read from the store. */
  loaded: boolean;
  pending: number;
}

export class DeferredQueue implements DeferredSink {
  private readonly log: Logger;
  private readonly folders = new Map<string, FolderState>();
  private readonly maxSessions: number;
  private readonly maxIds: number;
  private readonly counts = { stored: 0, spooled: 0, duplicates: 0, failed: 0, acked: 0 };

  constructor(
    private readonly cfg: Pick<Config["store"], "deferredRootFolder">,
    private readonly store: MessageStore,
    log: Logger,
    opts: DeferredQueueOptions = {},
  ) {
    this.log = log.child({ component: "store.deferred" });
    this.maxSessions = opts.maxSessions ?? 10_000;
    this.maxIds = opts.maxIdsPerSession ?? 10_000;
  }

  /** The session's queue folder: <deferredRootFolder>/<enc(Conversation-ID)>/<enc(Contribution-ID)>. */
  folderOf(session: Pick<GroupSessionRef, "conversationId" | "contributionId">): string {
    return groupSessionFolder(this.cfg.deferredRootFolder, session.conversationId, session.contributionId);
  }

  /** DeferredSink: resolves once stored or spooled; items of one session in call order. */
  storeDeferred(session: GroupSessionRef, item: DeferredItem): Promise<void> {
    let folder: string;
    let built: ReturnType<typeof buildDeferredObject>;
    try {
      folder = this.folderOf(session);
      built = buildDeferredObject(folder, session, item);
    } catch (err) {
      this.counts.failed++;
      return Promise.reject(err);
    }
    const fields = {
      callId: session.sessionKey,
      conversationId: session.conversationId,
      contributionId: session.contributionId,
      msrpMessageId: item.msrpMessageId,
      kind: item.kind,
    };
    if (!built.cpim.ok && item.kind !== "gso") {
      this.log.warn("deferred item stored without CPIM header facts", { ...fields, reason: built.cpim.error });
    }
    const st = this.state(folder);
    st.pending++;
    const run = st.tail.then(() => this.storeOne(st, folder, built.raw, built.messageId, fields));
    st.tail = run.catch(() => {});
    return run.finally(() => {
      st.pending--;
    });
  }

  /**
   * The oldest `limit` items of a session's queue (UID order = arrival order),
   * without removing them. A folder that does not exist yields [].
   */
  async read(target: GroupSessionRef | string, limit = 100): Promise<DeferredRecord[]> {
    const folder = typeof target === "string" ? target : this.folderOf(target);
    if (!Number.isInteger(limit) || limit < 1) throw new CpmError("CPM_ERR_BAD_REQUEST", `read limit ${limit}: must be a positive integer`);
    return this.io(async (conn) => {
      const lock = await lockMailbox(conn, folder, true);
      if (!lock) return [];
      try {
        const mb = conn.client.mailbox;
        if (!mb || mb.exists === 0) return [];
        const uidValidity = String(mb.uidValidity);
        // \Deleted ones are acked items whose EXPUNGE did not complete
        const uids = await conn.cmd("SEARCH", () => conn.client.search({ deleted: false }, { uid: true }));
        if (!Array.isArray(uids)) throw new CpmError("CPM_ERR_STORE_REJECTED", `${folder}: SEARCH refused`);
        const take = [...uids].sort((a, b) => a - b).slice(0, limit);
        if (take.length === 0) return [];
        const out: DeferredRecord[] = [];
        await conn.cmd("FETCH", async () => {
          for await (const m of conn.client.fetch(take.join(","), { uid: true, source: true }, { uid: true })) {
            if (!m.source) continue;
            const handle = { folder, uidValidity, uid: m.uid };
            try {
              out.push({ handle, raw: m.source, item: deferredItemFromObject(m.source) });
            } catch (err) {
              const error = err instanceof CpmError ? err.detail : String(err);
              this.log.warn("object in the deferred queue is not a deferred item", { folder, uid: m.uid, reason: error });
              out.push({ handle, raw: m.source, item: undefined, error });
            }
          }
        });
        return out.sort((a, b) => a.handle.uid - b.handle.uid);
      } finally {
        await lock.release();
      }
    });
  }

  /**
   * Removes delivered items (STORE \Deleted + UID EXPUNGE). Resolves with the
   * number of items removed; handles of a folder whose UIDVALIDITY changed are
   * skipped (with a warning), as are handles of a folder that no longer exists.
   */
  async ack(handles: readonly DeferredHandle[]): Promise<number> {
    const byFolder = new Map<string, DeferredHandle[]>();
    for (const h of handles) {
      if (!h || typeof h.folder !== "string" || !Number.isInteger(h.uid) || h.uid < 1) {
        throw new CpmError("CPM_ERR_BAD_REQUEST", "ack: invalid handle");
      }
      const list = byFolder.get(h.folder) ?? [];
      list.push(h);
      byFolder.set(h.folder, list);
    }
    let removed = 0;
    for (const [folder, list] of byFolder) {
      removed += await this.io(async (conn) => {
        const lock = await lockMailbox(conn, folder, false);
        if (!lock) return 0;
        try {
          const validity = String(conn.client.mailbox ? conn.client.mailbox.uidValidity : "");
          const valid = list.filter((h) => h.uidValidity === validity);
          if (valid.length < list.length) {
            this.log.warn("ack for an older UIDVALIDITY ignored; items will be delivered again", {
              folder,
              skipped: list.length - valid.length,
            });
          }
          if (valid.length === 0) return 0;
          const uids = [...new Set(valid.map((h) => h.uid))].sort((a, b) => a - b).join(",");
          const ok = await conn.cmd("EXPUNGE", () => conn.client.messageDelete(uids, { uid: true }));
          if (!ok) throw new CpmError("CPM_ERR_STORE_REJECTED", `${folder}: STORE \\Deleted / UID EXPUNGE failed`);
          return valid.length;
        } finally {
          await lock.release();
        }
      });
    }
    this.counts.acked += removed;
    return removed;
  }

  /**
   * Discards everything queued for a session (DD-8: 603 to the delivery
   * INVITE; DD-14: client BYE during delivery): waits for the session's
   * running writes, drains the spool if it holds objects, then removes all
   * objects of the folder. Resolves with the number removed.
   */
  async discard(target: GroupSessionRef | string): Promise<number> {
    const folder = typeof target === "string" ? target : this.folderOf(target);
    await this.folders.get(folder)?.tail;
    if (this.store.stats().spoolPending > 0) await this.store.flushSpool().catch(() => 0);
    const n = await this.io(async (conn) => {
      const lock = await lockMailbox(conn, folder, false);
      if (!lock) return 0;
      try {
        const exists = conn.client.mailbox ? conn.client.mailbox.exists : 0;
        if (exists === 0) return 0;
        const ok = await conn.cmd("EXPUNGE", () => conn.client.messageDelete("1:*"));
        if (!ok) throw new CpmError("CPM_ERR_STORE_REJECTED", `${folder}: STORE \\Deleted / EXPUNGE failed`);
        return exists;
      } finally {
        await lock.release();
      }
    });
    this.log.info("deferred items discarded", { folder, discarded: n });
    return n;
  }

  /** Sessions with queued items (LIST + STATUS MESSAGES, RFC 5819), for deferred delivery (DD-1). */
  async listSessions(): Promise<DeferredSessionSummary[]> {
    const root = `${this.cfg.deferredRootFolder}/`;
    const depth = root.split("/").length + 1;
    const boxes = await this.io((conn) => conn.cmd("LIST", () => conn.client.list({ statusQuery: { messages: true } })));
    const out: DeferredSessionSummary[] = [];
    for (const box of boxes) {
      if (!box.path.startsWith(root) || box.path.split("/").length !== depth) continue;
      const count = box.status?.messages ?? 0;
      if (count === 0) continue;
      const [, conv = "", contrib = ""] = box.path.slice(root.length - 1).split("/");
      out.push({ folder: box.path, conversationId: decodeOrUndefined(conv), contributionId: decodeOrUndefined(contrib), count });
    }
    return out.sort((a, b) => (a.folder < b.folder ? -1 : a.folder > b.folder ? 1 : 0));
  }

  /** Objects of any session still waiting in the durable spool (not readable yet). */
  spoolPending(): number {
    return this.store.stats().spoolPending;
  }

  stats(): DeferredQueueStats {
    return { sessions: this.folders.size, ...this.counts };
  }

  // ---- internals ----

  /** One IMAP use; failures become CPM_ERR_STORE_UNAVAILABLE (connection) or CPM_ERR_STORE_REJECTED. */
  private io<T>(fn: (conn: PooledConnection) => Promise<T>): Promise<T> {
    return this.store.withConnection(fn).catch((err: unknown) => {
      if (err instanceof CpmError) throw err;
      const code = isConnectionError(err) ? "CPM_ERR_STORE_UNAVAILABLE" : "CPM_ERR_STORE_REJECTED";
      throw new CpmError(code, describeImapError(err), { cause: err });
    });
  }

  private state(folder: string): FolderState {
    let st = this.folders.get(folder);
    if (st) {
      // keep the map in least-recently-used order
      this.folders.delete(folder);
      this.folders.set(folder, st);
      return st;
    }
    st = { tail: Promise.resolve(), ids: new Set(), loaded: false, pending: 0 };
    this.folders.set(folder, st);
    if (this.folders.size > this.maxSessions) {
      for (const [f, s] of this.folders) {
        if (this.folders.size <= this.maxSessions) break;
        // never the folder being returned: a second state for it would break its order
        if (s.pending === 0 && f !== folder) this.folders.delete(f);
      }
    }
    return st;
  }

  private remember(st: FolderState, messageId: string): void {
    st.ids.add(messageId);
    if (st.ids.size > this.maxIds) {
      const oldest = st.ids.values().next().value;
      if (oldest !== undefined) st.ids.delete(oldest);
    }
  }

  private async storeOne(st: FolderState, folder: string, raw: Buffer, messageId: string, fields: Record<string, unknown>): Promise<void> {
    // A restart forgets what was stored: read the folder's Message-IDs once, while
    // the store takes objects directly (with a non-empty spool the drain dedupes).
    if (!st.loaded && this.store.stats().spoolPending === 0) await this.loadIds(st, folder);
    if (st.ids.has(messageId)) {
      this.counts.duplicates++;
      this.log.info("deferred item already stored (retried SEND)", { ...fields, folder });
      return;
    }
    let state: "stored" | "spooled";
    try {
      ({ state } = await this.store.append({ folder, raw, messageId }));
    } catch (err) {
      this.counts.failed++;
      this.log.error("deferred item not stored", { ...fields, folder, reason: err instanceof CpmError ? err.detail : String(err) });
      throw err;
    }
    this.remember(st, messageId);
    this.counts[state]++;
    this.log.debug("deferred item kept", { ...fields, folder, state });
  }

  private async loadIds(st: FolderState, folder: string): Promise<void> {
    try {
      const ids = await this.io((conn) => folderMessageIds(conn, folder));
      for (const id of ids) this.remember(st, id);
      st.loaded = true;
    } catch (err) {
      // not fatal: the item is appended (or spooled, and the drain dedupes)
      this.log.debug("could not read the folder's Message-IDs", { folder, reason: describeImapError(err) });
    }
  }
}

function decodeOrUndefined(component: string): string | undefined {
  try {
    return decodeFolderComponent(component);
  } catch {
    return undefined;
  }
}
