// The session descriptor: one small object per group session in the served
// user's mailbox, written when the first item of the session is deferred, so
// that the deferred queue is always self-describing (a PF whose local state
// is gone rebuilds the record from it, src/session/rebuild.ts). Folder:
// <deferred root>/_sessions (one level above the queues, so it is never taken
// for a queue: those are <deferred root>/<Conversation-ID>/<Contribution-ID>;
// the deferred root is store.deferredRootFolder, Mailboxes.privateRootOf).
// Object: RFC 5322 message, Content-Type application/vnd.cpm-pf.group-session+json,
// Conversation-ID, Contribution-ID, Message-ID <desc.TAG@cpm-pf.invalid>
// (TAG: the queue folder's tag); body: the descriptor as JSON. A newer one
// for the same session (a later absence) supersedes the older: the highest UID wins.
import type { Config } from "../config/config.js";
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import type { GroupSession } from "../session/group-session.js";
import { descriptorOf, type SessionDescriptor } from "../session/rebuild.js";
import { type GroupStateObject, GSO_CONTENT_TYPE, parseGso } from "../xml/gso.js";
import { buildCpmObject } from "./cpm-object.js";
import { folderTag, STORED_ID_DOMAIN } from "./deferred-object.js";
import { uidSet } from "./deferred-queue.js";
import { groupSessionFolder } from "./folder.js";
import { expungeObjects } from "./imap-fetch.js";
import type { PooledConnection } from "./imap-pool.js";
import { lockMailbox } from "./mailbox.js";
import type { Mailboxes } from "./mailboxes.js";

export const DESCRIPTOR_CONTENT_TYPE = "application/vnd.cpm-pf.group-session+json";
export const DESCRIPTOR_FOLDER = "_sessions";
/** A descriptor is a few KB (the SDP offer, the participants); anything far larger is not one. */
const MAX_DESCRIPTOR_BYTES = 256 * 1024;

function bad(why: string): never {
  throw new CpmError("CPM_ERR_BAD_REQUEST", `session descriptor: ${why}`);
}

/** Validates a parsed descriptor body: every field of the right type, nothing else trusted. */
export function checkDescriptor(v: unknown): SessionDescriptor {
  const d = v as Record<string, unknown> | null;
  if (typeof d !== "object" || d === null || Array.isArray(d)) bad("not a JSON object");
  if (d.version !== 1) bad(`version ${String(d.version)} not understood`);
  for (const k of ["servedUser", "conversationId", "contributionId", "focusUri", "conferenceFactoryUri", "sdpOffer"] as const) {
    if (typeof d[k] !== "string") bad(`${k} missing`);
  }
  if (d.groupType !== "Open" && d.groupType !== "Closed") bad("groupType must be Open or Closed");
  if (d.subject !== undefined && typeof d.subject !== "string") bad("subject must be a string");
  if (d.referredBy !== undefined && typeof d.referredBy !== "string") bad("referredBy must be a string");
  if (typeof d.writtenAt !== "number" || !Number.isFinite(d.writtenAt)) bad("writtenAt missing");
  if (!Array.isArray(d.participants)) bad("participants missing");
  const participants = (d.participants as unknown[]).map((p) => {
    const q = p as Record<string, unknown> | null;
    if (typeof q !== "object" || q === null || typeof q.commAddr !== "string" || typeof q.name !== "string") bad("bad participant");
    return { name: q.name, commAddr: q.commAddr, ...(typeof q.role === "string" ? { role: q.role } : {}) };
  });
  return {
    version: 1,
    servedUser: d.servedUser as string,
    conversationId: d.conversationId as string,
    contributionId: d.contributionId as string,
    focusUri: d.focusUri as string,
    conferenceFactoryUri: d.conferenceFactoryUri as string,
    groupType: d.groupType,
    subject: d.subject as string | undefined,
    ...(typeof d.referredBy === "string" ? { referredBy: d.referredBy } : {}),
    sdpOffer: d.sdpOffer as string,
    participants,
    writtenAt: d.writtenAt as number,
  };
}

/** The descriptor out of a stored object (its JSON body after the header block); CpmError for anything else. */
export function parseDescriptorObject(raw: Buffer): SessionDescriptor {
  if (raw.length > MAX_DESCRIPTOR_BYTES) bad(`larger than ${MAX_DESCRIPTOR_BYTES} bytes`);
  const text = raw.toString("utf8");
  const split = text.indexOf("\r\n\r\n");
  if (split < 0) bad("no header block");
  if (!new RegExp(`^Content-Type:\\s*${DESCRIPTOR_CONTENT_TYPE.replace(/[.+]/g, "\\$&")}`, "im").test(text.slice(0, split))) {
    bad(`not ${DESCRIPTOR_CONTENT_TYPE}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text.slice(split + 4));
  } catch (err) {
    throw new CpmError("CPM_ERR_BAD_REQUEST", "session descriptor: body is not JSON", { cause: err });
  }
  return checkDescriptor(body);
}

export class SessionDescriptors {
  constructor(
    private readonly cfg: Pick<Config["store"], "rootFolder" | "deferredRootFolder">,
    private readonly mailboxes: Mailboxes,
    private readonly log: Logger,
  ) {}

  /** The served user's descriptor folder. */
  folderOf(servedUser: string): string {
    return `${this.rootOf(servedUser)}/${DESCRIPTOR_FOLDER}`;
  }

  private rootOf(servedUser: string): string {
    return this.mailboxes.privateRootOf(this.cfg.deferredRootFolder, servedUser);
  }

  private messageIdOf(servedUser: string, conversationId: string, contributionId: string): string {
    return `desc.${folderTag(groupSessionFolder(this.rootOf(servedUser), conversationId, contributionId))}@${STORED_ID_DOMAIN}`;
  }

  /** Stores the record's descriptor in the served user's mailbox (or its spool). */
  async write(session: GroupSession, now = Date.now()): Promise<void> {
    const d = descriptorOf(session, now);
    const messageId = this.messageIdOf(session.servedUser, session.conversationId, session.contributionId);
    const raw = buildCpmObject({
      contentType: DESCRIPTOR_CONTENT_TYPE,
      from: session.focusUri || session.servedUser,
      to: session.servedUser,
      date: new Date(now),
      conversationId: session.conversationId,
      contributionId: session.contributionId,
      messageId,
      body: JSON.stringify(d),
    });
    await this.mailboxes.append({ owner: session.servedUser, folder: this.folderOf(session.servedUser), raw, messageId });
  }

  /** Removes the group session's descriptors from the served user's mailbox (UID SEARCH HEADER + UID EXPUNGE, RFC 4315 2.1). */
  async remove(servedUser: string, conversationId: string, contributionId: string): Promise<number> {
    const messageId = this.messageIdOf(servedUser, conversationId, contributionId);
    const folder = this.folderOf(servedUser);
    return this.mailboxes.forUser(servedUser).withConnection(async (conn) => {
      const lock = await lockMailbox(conn, folder, false);
      if (!lock) return 0;
      try {
        const uids = await conn.cmd("SEARCH", () => conn.client.search({ header: { "message-id": messageId } }, { uid: true }));
        if (!Array.isArray(uids) || uids.length === 0) return 0;
        const ok = await conn.cmd("UID EXPUNGE", () => expungeObjects(conn.client, uidSet(uids)));
        if (!ok) throw new CpmError("CPM_ERR_STORE_REJECTED", `${folder}: UID STORE \\Deleted / UID EXPUNGE failed`);
        return uids.length;
      } finally {
        await lock.release();
      }
    });
  }

  /**
   * The latest descriptor of the group session and the latest GSO of its
   * folder, from the served user's mailbox. A damaged one is logged (user and
   * group named) and treated as absent; nothing is changed in the store.
   */
  async read(
    servedUser: string,
    conversationId: string,
    contributionId: string,
  ): Promise<{ descriptor: SessionDescriptor | undefined; latestGso: GroupStateObject | undefined }> {
    const fields = { servedUser, conversationId, contributionId };
    const store = this.mailboxes.forUser(servedUser);
    const messageId = this.messageIdOf(servedUser, conversationId, contributionId);
    const folder = this.folderOf(servedUser);
    const groupFolder = groupSessionFolder(this.cfg.rootFolder, conversationId, contributionId);
    return store.withConnection(async (conn) => {
      let descriptor: SessionDescriptor | undefined;
      const rawDescriptor = await latestMatching(conn, folder, { header: { "message-id": messageId } });
      if (rawDescriptor) {
        try {
          descriptor = parseDescriptorObject(rawDescriptor);
          if (descriptor.conversationId !== conversationId || descriptor.contributionId !== contributionId)
            bad("names another group session");
        } catch (err) {
          descriptor = undefined;
          this.log.warn("session descriptor unusable: record not rebuilt, data kept", {
            ...fields,
            reason: err instanceof CpmError ? err.detail : String(err),
          });
        }
      }
      let latestGso: GroupStateObject | undefined;
      const rawGso = await latestMatching(conn, groupFolder, { header: { "content-type": GSO_CONTENT_TYPE } });
      if (rawGso) {
        try {
          latestGso = parseGso(rawGso.subarray(rawGso.indexOf("\r\n\r\n") + 4));
        } catch (err) {
          this.log.warn("latest GSO unreadable: the descriptor's participants are used", {
            ...fields,
            reason: err instanceof CpmError ? err.detail : String(err),
          });
        }
      }
      return { descriptor, latestGso };
    });
  }
}

/** The source of the highest-UID message of `folder` matching `query` (RFC 9051 6.4.4 SEARCH HEADER); undefined when none or no folder. */
async function latestMatching(
  conn: PooledConnection,
  folder: string,
  query: { header: Record<string, string> },
): Promise<Buffer | undefined> {
  const lock = await lockMailbox(conn, folder, true);
  if (!lock) return undefined;
  try {
    const uids = await conn.cmd("SEARCH", () => conn.client.search(query, { uid: true }));
    const last = Array.isArray(uids) && uids.length ? Math.max(...uids) : undefined;
    if (last === undefined) return undefined;
    const m = await conn.cmd("FETCH", () => conn.client.fetchOne(String(last), { source: true }, { uid: true }));
    return m ? m.source : undefined;
  } finally {
    await lock.release();
  }
}
