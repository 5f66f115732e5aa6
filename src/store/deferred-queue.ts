// The deferred-messages queue: what the Controlling Function
// sends on a group session while the served user's client leg is absent is
// kept in the user's Message Store until deferred delivery (8.3.2.9.1.2,
// DD-10: "deliver ... in order") or re-join delivery (8.3.2.9.1.3, RJ-2)
// takes it.
//
// Folder convention, in the served user's mailbox (mailboxes.ts picks it from
// GroupSessionRef.servedUser / QueueRef.servedUser; a handle carries it):
//   <deferredRootFolder>/<Conversation-ID>/<Contribution-ID>
// with deferredRootFolder = store.deferredRootFolder ("Deferred"; with the
// shared login one level per served user below it, Mailboxes.privateRootOf), components
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
// UID order with handles: one FETCH of the first `limit` messages by sequence
// number, or, given a cursor (the highest UID already taken), one UID FETCH of
// the next `limit` UIDs above it. No SEARCH of the whole folder: the cost per
// item does not grow with the queue, and a read never returns what the
// delivery took, even before its removal completed. ack() retires delivered items in batches: per mailbox and folder
// one UID STORE +FLAGS (\Deleted) and one UID EXPUNGE of the UID set (RFC 4315
// 2.1), or with moveTo one UID MOVE of the set (RFC 6851 3.1) into that folder,
// e.g. the session's history folder when recording applies (8.5.2). Items never
// acked stay and are read again (at-least-once). A handle carries UIDVALIDITY:
// if the folder was recreated meanwhile, its ack is ignored (the items are
// delivered again, never lost).
// Items still in the spool are not readable yet; they follow in order once
// drained (spoolPending() says whether any wait).
//
// Per device (DD-1 "for a CPM Client", src/procedures/device-view.ts): an
// item a device got carries the device's IMAP keyword (mark(): UID STORE
// +FLAGS.SILENT, then the marks read back with UID FETCH FLAGS INTERNALDATE);
// read() with a target's `device` returns what lacks it (UID SEARCH UID n:*
// UNKEYWORD, index only, then UID FETCH of the first `limit`); listSessions()
// with a device counts for it; discardFor() marks a whole folder as one
// device's (DD-8, DD-14 for that device). What leaves the queue is decided by
// the caller (device-view.ts retirable) and removed with ack().
import type { Config } from "../config/config.js";
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import type { DeferredItem, DeferredSink, GroupSessionRef } from "../media/ports.js";
import type { DeliveredThrough } from "../session/group-session.js";
import { buildDeferredObject, deferredItemFromObject, type ReadBackItem } from "./deferred-object.js";
import { decodeFolderComponent, groupSessionFolder } from "./folder.js";
import { addKeyword, expungeObjects, fetchMarks, fetchObjects } from "./imap-fetch.js";
import { describeImapError, isConnectionError, type PooledConnection } from "./imap-pool.js";
import { folderMessageIds, lockMailbox } from "./mailbox.js";
import type { Mailboxes } from "./mailboxes.js";
import type { MessageStore } from "./message-store.js";

/** Where one stored item is; what ack() takes. */
export interface DeferredHandle {
  /** The served user whose mailbox holds the item. */
  servedUser: string;
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
  /** Objects in the folder (STATUS MESSAGES); with a device given to listSessions, those the device has not got. */
  count: number;
  /** Objects in the folder (STATUS MESSAGES), whoever got them. */
  total: number;
}

/** One item's per-device marks (src/procedures/device-view.ts): its keywords and when it reached the store. */
export interface DeferredMarks {
  handle: DeferredHandle;
  /** Its keywords (the system flags left out). */
  keywords: string[];
  /** INTERNALDATE (ms): when the object reached the store (the APPEND, or the spool drain). */
  storedAt: number | undefined;
}

/** An IMAP keyword (RFC 9051 flag-keyword: an atom, no backslash), as the queue's device marks are. */
const KEYWORD = /^[A-Za-z0-9_$.+-]{1,50}$/;

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
  /** Items removed by ack() (expunged or moved). */
  acked: number;
  /** Of those, moved with ack(..., { moveTo }). */
  moved: number;
}

/**
 * A session's queue: the served user's mailbox and the session's IDs, or a
 * folder of listSessions(); `device` (a device's keyword): that device's
 * view (read skips what it got).
 */
export type QueueTarget = (
  | Pick<GroupSessionRef, "servedUser" | "conversationId" | "contributionId">
  | { servedUser: string; folder: string }
) & { device?: string };

/** Where a read starts: above this UID, when the folder still has this UIDVALIDITY (else from the oldest item). */
export interface ReadCursor {
  afterUid: number;
  uidValidity: string;
}

export interface AckOptions {
  /** Move the items into this folder of the same mailbox (UID MOVE, RFC 6851) instead of expunging them; created if needed. */
  moveTo?: string;
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
  private readonly counts = { stored: 0, spooled: 0, duplicates: 0, failed: 0, acked: 0, moved: 0 };
  /** Folders created by ack(moveTo), per mailbox ("mailbox\nfolder"). */
  private readonly created = new Set<string>();

  constructor(
    private readonly cfg: Pick<Config["store"], "deferredRootFolder">,
    private readonly mailboxes: Pick<Mailboxes, "forUser" | "mailboxOf" | "privateRootOf">,
    log: Logger,
    opts: DeferredQueueOptions = {},
  ) {
    this.log = log.child({ component: "store.deferred" });
    this.maxSessions = opts.maxSessions ?? 10_000;
    this.maxIds = opts.maxIdsPerSession ?? 10_000;
  }

  /** The session's queue folder: <deferred root of the user>/<enc(Conversation-ID)>/<enc(Contribution-ID)>. */
  folderOf(session: Pick<GroupSessionRef, "servedUser" | "conversationId" | "contributionId">): string {
    return groupSessionFolder(this.rootOf(session.servedUser), session.conversationId, session.contributionId);
  }

  private rootOf(servedUser: string): string {
    return this.mailboxes.privateRootOf(this.cfg.deferredRootFolder, servedUser);
  }

  /** DeferredSink: resolves once stored or spooled; items of one session in call order. */
  storeDeferred(session: GroupSessionRef, item: DeferredItem): Promise<void> {
    let folder: string;
    let mailbox: string;
    let built: ReturnType<typeof buildDeferredObject>;
    try {
      mailbox = this.mailboxes.mailboxOf(session.servedUser);
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
    const st = this.state(`${mailbox}\n${folder}`);
    st.pending++;
    const user = session.servedUser;
    const run = st.tail.then(() => this.storeOne(st, user, folder, built.raw, built.messageId, fields));
    st.tail = run.catch(() => {});
    return run.finally(() => {
      st.pending--;
    });
  }

  /**
   * The oldest `limit` items of a session's queue (UID order = arrival order),
   * above `after` when given, without removing them. A folder that does not
   * exist yields [].
   */
  async read(target: QueueTarget, limit = 100, after?: ReadCursor): Promise<DeferredRecord[]> {
    const folder = this.targetFolder(target);
    const servedUser = target.servedUser;
    if (!Number.isInteger(limit) || limit < 1) throw new CpmError("CPM_ERR_BAD_REQUEST", `read limit ${limit}: must be a positive integer`);
    if (after && !(Number.isInteger(after.afterUid) && after.afterUid >= 0))
      throw new CpmError("CPM_ERR_BAD_REQUEST", "read: invalid cursor");
    return this.io(servedUser, async (conn) => {
      const lock = await lockMailbox(conn, folder, true);
      if (!lock) return [];
      try {
        const mb = conn.client.mailbox;
        if (!mb || mb.exists === 0) return [];
        const uidValidity = String(mb.uidValidity);
        const out: DeferredRecord[] = [];
        const fetch = (range: string, byUid: boolean) =>
          conn.cmd(byUid ? "UID FETCH" : "FETCH", () =>
            fetchObjects(conn.client, range, byUid, (m) => {
              // \Deleted: acked items whose EXPUNGE did not complete
              if (m.source && m.uid !== undefined && !m.deleted) out.push(this.record(servedUser, folder, uidValidity, m.uid, m.source));
            }),
          );
        const device = target.device;
        if (device !== undefined) {
          // DD-1 per device: what this device has not got (its keyword, an index-only SEARCH above the cursor)
          const from = after && after.uidValidity === uidValidity ? after.afterUid + 1 : 1;
          const uids = await conn.cmd("UID SEARCH", () =>
            conn.client.search({ uid: `${from}:*`, unKeyword: checkKeyword(device), deleted: false }, { uid: true }),
          );
          const next = (uids || [])
            .filter((u) => u >= from)
            .sort((a, b) => a - b)
            .slice(0, limit);
          if (next.length > 0) await fetch(uidSet(next), true);
        } else if (after && after.uidValidity === uidValidity) {
          await this.readAbove(conn, after.afterUid, Number(mb.uidNext), limit, out, fetch);
        } else {
          // sequence order is UID order (RFC 9051 2.3.1.2)
          for (let from = 1; from <= mb.exists && out.length < limit; ) {
            const to = Math.min(mb.exists, from + (limit - out.length) - 1);
            await fetch(`${from}:${to}`, false);
            from = to + 1;
          }
        }
        return out.sort((a, b) => a.handle.uid - b.handle.uid);
      } finally {
        await lock.release();
      }
    });
  }

  /**
   * Retires delivered items in batches: per mailbox and folder one UID STORE
   * +FLAGS (\Deleted) + UID EXPUNGE of the set (RFC 4315 2.1), or with
   * `moveTo` one UID MOVE of the set into that folder (RFC 6851 3.1; UID order
   * kept). Resolves with the number of items removed; handles of a folder
   * whose UIDVALIDITY changed are skipped (with a warning), as are handles of
   * a folder that no longer exists.
   */
  async ack(handles: readonly DeferredHandle[], opts: AckOptions = {}): Promise<number> {
    const moveTo = opts.moveTo;
    if (moveTo !== undefined && (typeof moveTo !== "string" || moveTo === "" || /[\r\n\0]/.test(moveTo))) {
      throw new CpmError("CPM_ERR_BAD_REQUEST", "ack: invalid moveTo folder");
    }
    const groups = new Map<string, { servedUser: string; mailbox: string; folder: string; list: DeferredHandle[] }>();
    for (const h of handles) {
      if (!h || typeof h.folder !== "string" || typeof h.servedUser !== "string" || !Number.isInteger(h.uid) || h.uid < 1) {
        throw new CpmError("CPM_ERR_BAD_REQUEST", "ack: invalid handle");
      }
      const mailbox = this.mailboxes.mailboxOf(h.servedUser);
      const key = `${mailbox}\n${h.folder}`;
      const g = groups.get(key) ?? { servedUser: h.servedUser, mailbox, folder: h.folder, list: [] };
      g.list.push(h);
      groups.set(key, g);
    }
    let removed = 0;
    for (const { servedUser, mailbox, folder, list } of groups.values()) {
      if (moveTo === folder) continue;
      removed += await this.io(servedUser, async (conn) => {
        if (moveTo !== undefined) await this.ensureFolder(conn, mailbox, moveTo);
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
          const uids = uidSet(valid.map((h) => h.uid));
          if (moveTo !== undefined) {
            const ok = await conn.cmd("UID MOVE", () => conn.client.messageMove(uids, moveTo, { uid: true }));
            if (!ok) throw new CpmError("CPM_ERR_STORE_REJECTED", `${folder}: UID MOVE to ${moveTo} failed`);
          } else {
            // UID STORE +FLAGS.SILENT (\Deleted), then UID EXPUNGE of the same set (UIDPLUS)
            const ok = await conn.cmd("UID EXPUNGE", () => expungeObjects(conn.client, uids));
            if (!ok) throw new CpmError("CPM_ERR_STORE_REJECTED", `${folder}: UID STORE \\Deleted / UID EXPUNGE failed`);
          }
          return new Set(valid.map((h) => h.uid)).size;
        } finally {
          await lock.release();
        }
      });
    }
    this.counts.acked += removed;
    if (moveTo !== undefined) this.counts.moved += removed;
    return removed;
  }

  /**
   * DD-1 per device: marks `handles` as got by the device of `keyword` (UID
   * STORE +FLAGS.SILENT, per mailbox and folder), then reads the marks of
   * those items back (UID FETCH FLAGS INTERNALDATE): the caller decides what
   * leaves the queue (device-view.ts retirable) and ack()s it. An item whose
   * mark is missing from what is read back was not marked (the mailbox
   * takes no new keyword). Handles of an older UIDVALIDITY are skipped.
   */
  async mark(handles: readonly DeferredHandle[], keyword: string): Promise<DeferredMarks[]> {
    checkKeyword(keyword);
    const out: DeferredMarks[] = [];
    for (const { servedUser, folder, list } of this.byFolder(handles)) {
      out.push(
        ...(await this.withFolder(servedUser, folder, false, [] as DeferredMarks[], async (conn, uidValidity) => {
          const valid = list.filter((h) => h.uidValidity === uidValidity);
          if (valid.length === 0) return [];
          const uids = uidSet(valid.map((h) => h.uid));
          await conn.cmd("UID STORE", () => addKeyword(conn.client, uids, keyword));
          return this.marksOf(conn, servedUser, folder, uidValidity, uids);
        })),
      );
    }
    return out;
  }

  /**
   * DD-10 after a takeover: the items of the session's queue up to `through`
   * that lack the device's mark (it confirmed them to a delivery that crashed
   * before it marked them) marked as got by the device of `keyword`: one
   * index-only SEARCH when there are none (the usual case). Another
   * UIDVALIDITY: the UIDs mean other items, nothing is marked. Resolves with
   * the marks of the items it marked, for the caller's decision on what leaves.
   */
  async markThrough(target: QueueTarget, keyword: string, through: DeliveredThrough): Promise<DeferredMarks[]> {
    checkKeyword(keyword);
    if (!Number.isInteger(through.uid) || through.uid < 1) throw new CpmError("CPM_ERR_BAD_REQUEST", "markThrough: invalid UID");
    const folder = this.targetFolder(target);
    return this.withFolder(target.servedUser, folder, false, [] as DeferredMarks[], async (conn, uidValidity) => {
      if (uidValidity !== through.uidValidity) return [];
      const found = await conn.cmd("UID SEARCH", () =>
        conn.client.search({ uid: `1:${through.uid}`, unKeyword: keyword, deleted: false }, { uid: true }),
      );
      const unmarked = (found || []).filter((u) => u <= through.uid);
      if (unmarked.length === 0) return [];
      const uids = uidSet(unmarked);
      await conn.cmd("UID STORE", () => addKeyword(conn.client, uids, keyword));
      return this.marksOf(conn, target.servedUser, folder, uidValidity, uids);
    });
  }

  /**
   * DD-8 / DD-14 for one device: every item of the session's queue marked as
   * got by the device of `keyword` (it never gets them; the other devices
   * still do). Waits for the session's running writes and the spool like
   * discard(). Resolves with the marks of every item, for the caller's
   * decision on what leaves.
   */
  async discardFor(target: QueueTarget, keyword: string): Promise<DeferredMarks[]> {
    checkKeyword(keyword);
    const folder = this.targetFolder(target);
    await this.settledWrites(target, folder);
    const marks = await this.withFolder(target.servedUser, folder, false, [] as DeferredMarks[], async (conn, uidValidity) => {
      await conn.cmd("UID STORE", () => addKeyword(conn.client, "1:*", keyword));
      return this.marksOf(conn, target.servedUser, folder, uidValidity, "1:*");
    });
    this.log.info("deferred items discarded for one device", { folder, device: keyword, items: marks.length });
    return marks;
  }

  /** The marks of every item of a session's queue (UID FETCH 1:* FLAGS INTERNALDATE, no bodies). */
  async marks(target: QueueTarget): Promise<DeferredMarks[]> {
    const folder = this.targetFolder(target);
    return this.withFolder(target.servedUser, folder, true, [] as DeferredMarks[], (conn, uidValidity) =>
      this.marksOf(conn, target.servedUser, folder, uidValidity, "1:*"),
    );
  }

  /**
   * Discards everything queued for a session (DD-8: 603 to the delivery
   * INVITE; DD-14: client BYE during delivery): waits for the session's
   * running writes, drains the spool if it holds objects, then removes all
   * objects of the folder. Resolves with the number removed.
   */
  async discard(target: QueueTarget): Promise<number> {
    const folder = this.targetFolder(target);
    const mailbox = this.mailboxes.mailboxOf(target.servedUser);
    await this.settledWrites(target, folder);
    const n = await this.io(target.servedUser, async (conn) => {
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
    this.log.info("deferred items discarded", { mailbox, folder, discarded: n });
    return n;
  }

  /**
   * The served user's sessions with queued items (LIST + STATUS MESSAGES,
   * RFC 5819), for deferred delivery (DD-1). With `device` (a device's
   * keyword), `count` is what that device has not got (one EXAMINE + UID
   * SEARCH UNKEYWORD per session with items); sessions with items it has all
   * of are listed with count 0.
   */
  async listSessions(servedUser: string, device?: string): Promise<DeferredSessionSummary[]> {
    const root = `${this.rootOf(servedUser)}/`;
    const depth = root.split("/").length + 1;
    const boxes = await this.io(servedUser, (conn) => conn.cmd("LIST", () => conn.client.list({ statusQuery: { messages: true } })));
    const out: DeferredSessionSummary[] = [];
    for (const box of boxes) {
      if (!box.path.startsWith(root) || box.path.split("/").length !== depth) continue;
      const count = box.status?.messages ?? 0;
      if (count === 0) continue;
      const [, conv = "", contrib = ""] = box.path.slice(root.length - 1).split("/");
      const mine = device === undefined ? count : await this.countFor(servedUser, box.path, device);
      out.push({
        folder: box.path,
        conversationId: decodeOrUndefined(conv),
        contributionId: decodeOrUndefined(contrib),
        count: mine,
        total: count,
      });
    }
    return out.sort((a, b) => (a.folder < b.folder ? -1 : a.folder > b.folder ? 1 : 0));
  }

  /** Objects of the served user's sessions still waiting in the durable spool (not readable yet). */
  spoolPending(servedUser: string): number {
    return this.store(servedUser).stats().spoolPending;
  }

  stats(): DeferredQueueStats {
    return { sessions: this.folders.size, ...this.counts };
  }

  // ---- internals ----

  /** The items of `folder` a device has not got: UID SEARCH UNKEYWORD <device> UNDELETED. */
  private countFor(servedUser: string, folder: string, device: string): Promise<number> {
    checkKeyword(device);
    return this.withFolder(servedUser, folder, true, 0, async (conn) => {
      const uids = await conn.cmd("UID SEARCH", () => conn.client.search({ unKeyword: device, deleted: false }, { uid: true }));
      return (uids || []).length;
    });
  }

  /** UID FETCH of the marks of `uids` in the selected folder. */
  private async marksOf(
    conn: PooledConnection,
    servedUser: string,
    folder: string,
    uidValidity: string,
    uids: string,
  ): Promise<DeferredMarks[]> {
    const rows = await conn.cmd("UID FETCH", () => fetchMarks(conn.client, uids));
    return rows.map((r) => ({
      handle: { servedUser, folder, uidValidity, uid: r.uid },
      keywords: r.flags.filter((f) => !f.startsWith("\\")),
      storedAt: r.internalDate,
    }));
  }

  /** Runs `fn` with `folder` selected (or examined); a folder that does not exist or is empty yields `empty` without calling it. */
  private withFolder<T>(
    servedUser: string,
    folder: string,
    readOnly: boolean,
    empty: T,
    fn: (conn: PooledConnection, uidValidity: string) => Promise<T>,
  ): Promise<T> {
    return this.io(servedUser, async (conn) => {
      const lock = await lockMailbox(conn, folder, readOnly);
      if (!lock) return empty;
      try {
        const mb = conn.client.mailbox;
        if (!mb || mb.exists === 0) return empty;
        return await fn(conn, String(mb.uidValidity));
      } finally {
        await lock.release();
      }
    });
  }

  /** Handles grouped by mailbox and folder (ack, mark). */
  private byFolder(handles: readonly DeferredHandle[]): { servedUser: string; mailbox: string; folder: string; list: DeferredHandle[] }[] {
    const groups = new Map<string, { servedUser: string; mailbox: string; folder: string; list: DeferredHandle[] }>();
    for (const h of handles) {
      if (!h || typeof h.folder !== "string" || typeof h.servedUser !== "string" || !Number.isInteger(h.uid) || h.uid < 1) {
        throw new CpmError("CPM_ERR_BAD_REQUEST", "invalid deferred handle");
      }
      const mailbox = this.mailboxes.mailboxOf(h.servedUser);
      const key = `${mailbox}\n${h.folder}`;
      const g = groups.get(key) ?? { servedUser: h.servedUser, mailbox, folder: h.folder, list: [] };
      g.list.push(h);
      groups.set(key, g);
    }
    return [...groups.values()];
  }

  /** Waits for the session's running writes, then drains the spool if it holds objects (what is discarded is all there). */
  private async settledWrites(target: QueueTarget, folder: string): Promise<void> {
    const mailbox = this.mailboxes.mailboxOf(target.servedUser);
    await this.folders.get(`${mailbox}\n${folder}`)?.tail;
    const store = this.store(target.servedUser);
    if (store.stats().spoolPending > 0) await store.flushSpool().catch(() => 0);
  }

  /**
   * UID FETCH of the UIDs above `afterUid`, a window of the missing count at a
   * time: UIDs of a folder ascend by one per APPEND (RFC 9051 2.3.1.1), so a
   * window holds that many items unless some above the cursor were removed;
   * an empty window is a gap, skipped with one UID SEARCH.
   */
  private async readAbove(
    conn: PooledConnection,
    afterUid: number,
    uidNext: number,
    limit: number,
    out: DeferredRecord[],
    fetch: (range: string, byUid: boolean) => Promise<number>,
  ): Promise<void> {
    const end = Number.isSafeInteger(uidNext) && uidNext > 0 ? uidNext : Number.MAX_SAFE_INTEGER;
    for (let from = afterUid + 1; out.length < limit && from < end; ) {
      const want = limit - out.length;
      const seen = await fetch(`${from}:${from + want - 1}`, true);
      from += want;
      if (seen > 0 || from >= end) continue;
      const rest = await conn.cmd("UID SEARCH", () => conn.client.search({ uid: `${from}:*` }, { uid: true }));
      // "n:*" also matches the highest UID when it is below n (RFC 9051 6.4.8)
      const next = (rest || []).filter((u) => u >= from);
      if (next.length === 0) return;
      from = next.reduce((a, b) => Math.min(a, b));
    }
  }

  private record(servedUser: string, folder: string, uidValidity: string, uid: number, raw: Buffer): DeferredRecord {
    const handle = { servedUser, folder, uidValidity, uid };
    try {
      return { handle, raw, item: deferredItemFromObject(raw) };
    } catch (err) {
      const error = err instanceof CpmError ? err.detail : String(err);
      this.log.warn("object in the deferred queue is not a deferred item", { folder, uid, reason: error });
      return { handle, raw, item: undefined, error };
    }
  }

  private store(servedUser: string): MessageStore {
    return this.mailboxes.forUser(servedUser);
  }

  private targetFolder(target: QueueTarget): string {
    return "folder" in target ? target.folder : this.folderOf(target);
  }

  /** CREATE each level of a folder (ALREADYEXISTS is fine, RFC 5530), once per mailbox and folder. */
  private async ensureFolder(conn: PooledConnection, mailbox: string, folder: string): Promise<void> {
    const key = `${mailbox}\n${folder}`;
    if (this.created.has(key)) return;
    const levels = folder.split("/");
    for (let i = 1; i <= levels.length; i++) {
      const path = levels.slice(0, i).join("/");
      await conn.cmd("CREATE", () => conn.client.mailboxCreate(path));
    }
    if (this.created.size >= this.maxSessions) this.created.clear();
    this.created.add(key);
  }

  /** One IMAP use in the served user's mailbox; failures become CPM_ERR_STORE_UNAVAILABLE (connection) or CPM_ERR_STORE_REJECTED. */
  private io<T>(servedUser: string, fn: (conn: PooledConnection) => Promise<T>): Promise<T> {
    let store: MessageStore;
    try {
      store = this.store(servedUser);
    } catch (err) {
      return Promise.reject(err);
    }
    return store.withConnection(fn).catch((err: unknown) => {
      if (err instanceof CpmError) throw err;
      const code = isConnectionError(err) ? "CPM_ERR_STORE_UNAVAILABLE" : "CPM_ERR_STORE_REJECTED";
      throw new CpmError(code, describeImapError(err), { cause: err });
    });
  }

  /** Write state of one queue, by "mailbox\nfolder". */
  private state(key: string): FolderState {
    let st = this.folders.get(key);
    if (st) {
      // keep the map in least-recently-used order
      this.folders.delete(key);
      this.folders.set(key, st);
      return st;
    }
    st = { tail: Promise.resolve(), ids: new Set(), loaded: false, pending: 0 };
    this.folders.set(key, st);
    if (this.folders.size > this.maxSessions) {
      for (const [f, s] of this.folders) {
        if (this.folders.size <= this.maxSessions) break;
        // never the folder being returned: a second state for it would break its order
        if (s.pending === 0 && f !== key) this.folders.delete(f);
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

  private async storeOne(
    st: FolderState,
    servedUser: string,
    folder: string,
    raw: Buffer,
    messageId: string,
    fields: Record<string, unknown>,
  ): Promise<void> {
    // A restart forgets what was stored: read the folder's Message-IDs once, while
    // the store takes objects directly (with a non-empty spool the drain dedupes).
    if (!st.loaded && this.store(servedUser).stats().spoolPending === 0) await this.loadIds(st, servedUser, folder);
    if (st.ids.has(messageId)) {
      this.counts.duplicates++;
      this.log.info("deferred item already stored (retried SEND)", { ...fields, folder });
      return;
    }
    let state: "stored" | "spooled";
    try {
      ({ state } = await this.store(servedUser).append({ folder, raw, messageId }));
    } catch (err) {
      this.counts.failed++;
      this.log.error("deferred item not stored", { ...fields, folder, reason: err instanceof CpmError ? err.detail : String(err) });
      throw err;
    }
    this.remember(st, messageId);
    this.counts[state]++;
    this.log.debug("deferred item kept", { ...fields, folder, state });
  }

  private async loadIds(st: FolderState, servedUser: string, folder: string): Promise<void> {
    try {
      const ids = await this.io(servedUser, (conn) => folderMessageIds(conn, folder));
      for (const id of ids) this.remember(st, id);
      st.loaded = true;
    } catch (err) {
      // not fatal: the item is appended (or spooled, and the drain dedupes)
      this.log.debug("could not read the folder's Message-IDs", { folder, reason: describeImapError(err) });
    }
  }
}

/** A compact UID set (RFC 9051 9 sequence-set): ascending, runs as ranges ("1:4,7,9:10"). */
export function uidSet(uids: readonly number[]): string {
  const sorted = [...new Set(uids)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && (sorted[j + 1] as number) === (sorted[j] as number) + 1) j++;
    parts.push(i === j ? String(sorted[i]) : `${sorted[i]}:${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

function checkKeyword(keyword: string): string {
  if (typeof keyword !== "string" || !KEYWORD.test(keyword)) throw new CpmError("CPM_ERR_BAD_REQUEST", "invalid device keyword");
  return keyword;
}

function decodeOrUndefined(component: string): string | undefined {
  try {
    return decodeFolderComponent(component);
  } catch {
    return undefined;
  }
}
