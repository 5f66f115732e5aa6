// OMA CPM 8.5.2 "Record CPM Session" (BYE-B8): on the clients' 200 OK to the
// network BYE, when <allow-offline-storage> is true or recording is on (the
// caller decides), the session goes into the served user's Message Store.
//
// Layout: the session's Session History folder, the same one the GSO of
// 8.3.2.3 goes to (cpm-facts 2.1, folder.ts):
//   <rootFolder>/<Conversation-ID>/<Contribution-ID>       ("Default/...")
// with, APPENDed in this order:
//   1. one session-info object (cpm-facts 2.2; the Sony CPM MS dataset's
//      "_session" header, the Orange CMS body):
//        Date: <session start>            From: <served user>
//        To: <focus URI>                  Subject: <subject, when known>
//        Message-ID: <s.HEX.TAG@cpm-pf.invalid>  (HEX: the start time in ms)
//        Content-Type: multipart/related;boundary=cpm; type="Application/X-CPM-Session"
//        Conversation-ID, Contribution-ID, IMDN-Message-ID (= the Message-ID's left part)
//      and one body part (RFC 2387):
//        --cpm
//        Content-Type: Application/X-CPM-Session
//
//        <?xml version="1.0" encoding="UTF-8"?>
//        <session><session-type>Group</session-type>[<sdp>SDP offer</sdp>]
//        <invited-participants>uri;uri;...</invited-participants></session>
//        --cpm--
//   2. one message/cpim object per chat message or IMDN of the session, in the
//      order given (relay order), built like the deferred items
//      (deferred-object.ts): the CPIM body unchanged, Message-ID
//      <rn.HEX.TAG@...> (from the network, Message-Direction: received,
//      To = the served user) or <rc.HEX.TAG@...> (from the client,
//      Message-Direction: sent, From = the served user unless CPIM From says
//      otherwise, To = the focus), IMDN-Message-ID = CPIM imdn.Message-ID.
//      isComposing (RFC 3994) and non-CPIM bodies are not history and are
//      skipped.
// Recording twice is harmless: object Message-IDs are derived from the MSRP
// Message-IDs and the start time, and objects already in the folder are
// skipped. Objects go through the MessageStore of the served user's mailbox
// (mailboxes.ts), so a store outage spools them (in order) instead of losing them.
import type { Config } from "../config/config.js";
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import type { GroupSessionRef, RecordedMessage, RecordedSessionInfo, SessionRecorder } from "../media/ports.js";
import { escapeXml } from "../xml/parse.js";
import { buildCpmObject } from "./cpm-object.js";
import { type BuiltObject, buildMessageObject, CPIM_CONTENT_TYPE, cpimFacts, storedMessageId } from "./deferred-object.js";
import { groupSessionFolder } from "./folder.js";
import { describeImapError } from "./imap-pool.js";
import { folderMessageIds } from "./mailbox.js";
import type { Mailboxes } from "./mailboxes.js";
import type { MessageStore } from "./message-store.js";

export const SESSION_INFO_TYPE = "Application/X-CPM-Session";
export const SESSION_INFO_CONTENT_TYPE = `multipart/related;boundary=cpm; type="${SESSION_INFO_TYPE}"`;
const ISCOMPOSING_TYPE = "application/im-iscomposing+xml";

/** RecordedSessionInfo plus what a caller may know in addition. */
export interface SessionInfoInput extends RecordedSessionInfo {
  /** SDP offer of the session invitation (the Orange CMS keeps it in <sdp>). */
  sdp?: string;
}

/** The Application/X-CPM-Session document (cpm-facts 2.2). */
export function sessionInfoXml(info: SessionInfoInput): string {
  const sdp = info.sdp === undefined || info.sdp === "" ? "" : `<sdp>${escapeXml(info.sdp.replace(/\r\n/g, "\n"))}</sdp>`;
  const invited = info.participants.map((p) => escapeXml(p)).join(";");
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\r\n` +
    `<session><session-type>Group</session-type>${sdp}<invited-participants>${invited}</invited-participants></session>`
  );
}

/** The session-info object (see the header comment). */
export function buildSessionInfoObject(folder: string, session: GroupSessionRef, info: SessionInfoInput): BuiltObject {
  if (!(info.startedAt instanceof Date) || Number.isNaN(info.startedAt.getTime())) {
    throw new CpmError("CPM_ERR_BAD_REQUEST", "session info: invalid startedAt");
  }
  const messageId = storedMessageId("s", folder, String(info.startedAt.getTime()));
  const xml = sessionInfoXml(info).replace(/\r?\n/g, "\r\n");
  // RFC 2046 5.1.1: the boundary may not occur in the part; the XML never has a line starting with "--"
  const body = `--cpm\r\nContent-Type: ${SESSION_INFO_TYPE}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${xml}\r\n--cpm--\r\n`;
  const raw = buildCpmObject({
    contentType: SESSION_INFO_CONTENT_TYPE,
    from: session.servedUser || session.focus,
    to: session.focus,
    date: info.startedAt,
    conversationId: session.conversationId,
    contributionId: session.contributionId,
    imdnMessageId: messageId.slice(0, messageId.indexOf("@")),
    messageId,
    subject: info.subject === "" ? undefined : info.subject,
    body,
  });
  return { raw, messageId, imdnMessageId: undefined, cpim: { ok: false } };
}

/** Why a relayed message is not recorded, or undefined when it is. */
export function notRecordedBecause(m: RecordedMessage): string | undefined {
  const facts = cpimFacts(m.contentType, m.body);
  if (!facts.ok && facts.error === `not ${CPIM_CONTENT_TYPE}`) return `content type ${m.contentType} is not ${CPIM_CONTENT_TYPE}`;
  if (facts.contentType === ISCOMPOSING_TYPE) return "isComposing is not history (RFC 3994)";
  return undefined;
}

/** The message/cpim object of one relayed message (see the header comment). */
export function buildRecordedMessageObject(folder: string, session: GroupSessionRef, m: RecordedMessage): BuiltObject {
  const fromClient = m.direction === "from-client";
  return buildMessageObject({
    folder,
    idKind: fromClient ? "rc" : "rn",
    session,
    contentType: m.contentType,
    body: m.body,
    msrpMessageId: m.msrpMessageId,
    at: m.at,
    direction: fromClient ? "sent" : "received",
    defaultFrom: fromClient ? session.servedUser : session.focus,
    to: fromClient ? session.focus : session.servedUser,
    gso: false,
  });
}

export interface RecordResult {
  folder: string;
  /** Objects APPENDed now / spooled now (session info included). */
  stored: number;
  spooled: number;
  /** Objects already in the folder (an earlier recording of the same session). */
  duplicates: number;
  /** Relayed messages that are not history (isComposing, non-CPIM). */
  skipped: number;
}

export class MessageStoreSessionRecorder implements SessionRecorder {
  private readonly log: Logger;

  constructor(
    private readonly cfg: Pick<Config["store"], "rootFolder">,
    private readonly mailboxes: Pick<Mailboxes, "forUser">,
    log: Logger,
  ) {
    this.log = log.child({ component: "store.record" });
  }

  folderOf(session: Pick<GroupSessionRef, "conversationId" | "contributionId">): string {
    return groupSessionFolder(this.cfg.rootFolder, session.conversationId, session.contributionId);
  }

  /** SessionRecorder (BYE-B8): record() without the counts. */
  async recordSession(session: GroupSessionRef, info: SessionInfoInput, messages: readonly RecordedMessage[]): Promise<void> {
    await this.record(session, info, messages);
  }

  /**
   * 8.5.2: stores the session-info object, then the messages, one after the
   * other. Resolves when every object is stored or spooled; if the store
   * refused some, the others are still stored and the promise rejects with
   * CPM_ERR_STORE_REJECTED afterwards.
   */
  async record(session: GroupSessionRef, info: SessionInfoInput, messages: readonly RecordedMessage[]): Promise<RecordResult> {
    const folder = this.folderOf(session);
    const fields = { callId: session.sessionKey, conversationId: session.conversationId, contributionId: session.contributionId, folder };
    // the served user's mailbox; throws CPM_ERR_BAD_SERVED_USER before anything is stored
    const store = this.mailboxes.forUser(session.servedUser);
    const objects: BuiltObject[] = [buildSessionInfoObject(folder, session, info)];
    let skipped = 0;
    for (const m of messages) {
      const why = notRecordedBecause(m);
      if (why) {
        skipped++;
        this.log.debug("relayed message not recorded", { ...fields, msrpMessageId: m.msrpMessageId, reason: why });
        continue;
      }
      try {
        objects.push(buildRecordedMessageObject(folder, session, m));
      } catch (err) {
        skipped++;
        this.log.warn("relayed message not recorded", { ...fields, reason: err instanceof CpmError ? err.detail : String(err) });
      }
    }
    const existing = await this.existingIds(store, folder);
    const result: RecordResult = { folder, stored: 0, spooled: 0, duplicates: 0, skipped };
    const failures: string[] = [];
    const seen = new Set<string>();
    for (const o of objects) {
      if (existing.has(o.messageId) || seen.has(o.messageId)) {
        result.duplicates++;
        continue;
      }
      seen.add(o.messageId);
      try {
        const { state } = await this.mailboxes.forUser(session.servedUser).append({ folder, raw: o.raw, messageId: o.messageId });
        result[state]++;
      } catch (err) {
        failures.push(err instanceof CpmError ? err.detail : String(err));
      }
    }
    this.log.info("CPM session recorded", { ...fields, ...result, failed: failures.length });
    if (failures.length > 0) {
      throw new CpmError("CPM_ERR_STORE_REJECTED", `${folder}: ${failures.length} object(s) refused: ${failures[0]}`);
    }
    return result;
  }

  /** Message-IDs already in the folder, read while the store takes objects directly (else the spool drain dedupes). */
  private async existingIds(store: MessageStore, folder: string): Promise<Set<string>> {
    if (store.stats().spoolPending > 0) return new Set();
    try {
      return new Set(await store.withConnection((conn) => folderMessageIds(conn, folder)));
    } catch (err) {
      this.log.debug("could not read the folder's Message-IDs", { folder, reason: describeImapError(err) });
      return new Set();
    }
  }
}
