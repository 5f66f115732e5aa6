// The Participating Function: runs the pure procedures against the session
// table and carries out their actions (store the GSO, tell the media plane).
// Transport-neutral: src/grpc maps it to the cpm.pf.v1 contract.
import { randomUUID } from "node:crypto";
import type { Config } from "../config/config.js";
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import type { MediaPlane } from "../media/media-plane.js";
import { type ByeDecision, handleBye } from "../procedures/handle-bye.js";
import type { GroupSession } from "../session/group-session.js";
import { observe } from "../session/observe.js";
import type { SessionRegistry } from "../session/registry.js";
import { header, headerValues, parseSipMessage } from "../sip/message.js";
import { parseNameAddr } from "../sip/name-addr.js";
import { buildCpmObject } from "../store/cpm-object.js";
import { groupSessionFolder } from "../store/folder.js";
import { type GroupStateObject, GSO_CONTENT_TYPE, serializeGso } from "../xml/gso.js";

/** What the PF needs of the Message Store (src/store/message-store.ts). */
export interface ObjectStore {
  append(obj: {
    folder: string;
    raw: Buffer;
    messageId: string;
  }): Promise<{ state: "stored" | "spooled"; folder: string; messageId: string }>;
}

export type GsoOutcome = { state: "not-required" } | { state: "stored" | "spooled"; folder: string; messageId: string };

export interface ByeResult extends ByeDecision {
  sessionKey: string;
  gso: GsoOutcome;
}

export interface Envelope {
  raw: Uint8Array;
  source: string;
}

/** Anonymous originator used on stored GSOs by deployed stores (cpm-facts 1.4). */
const GSO_FROM = "sip:anonymous@anonymous.invalid";

export class ParticipatingFunction {
  constructor(
    private readonly cfg: Config,
    private readonly sessions: SessionRegistry,
    private readonly store: ObjectStore,
    private readonly media: MediaPlane,
    private readonly log: Logger,
  ) {}

  /** 8.3.2.3: decide and act on a BYE; resolves after any GSO is stored or spooled. */
  async handleBye(env: Envelope, now = new Date()): Promise<ByeResult> {
    const msg = parseSipMessage(env.raw);
    if (msg.kind !== "request" || msg.method !== "BYE") throw new CpmError("CPM_ERR_BAD_REQUEST", "HandleBye needs a BYE request");
    const callId = header(msg, "call-id") ?? "";
    if (!callId) throw new CpmError("CPM_ERR_BAD_SIP", "BYE without Call-ID");
    let fromTag = "";
    try {
      fromTag = parseNameAddr(header(msg, "from") ?? "").params.get("tag") ?? "";
    } catch (err) {
      throw new CpmError("CPM_ERR_BAD_HEADER", "BYE From header is malformed", { cause: err });
    }
    const session = this.sessions.get(callId);
    const decision = handleBye(
      session,
      { callId, fromTag, reasons: headerValues(msg, "reason"), referredBy: header(msg, "referred-by"), receivedAt: now },
      this.cfg.pf,
    );
    const fields = { callId, conversationId: session?.conversationId, contributionId: session?.contributionId };
    for (const note of decision.notes) this.log.warn(note, fields);

    let gso: GsoOutcome = { state: "not-required" };
    for (const action of decision.actions) {
      if (action.kind === "storeGso") gso = await this.storeGso(action.session, action.gso);
      else if (action.kind === "refuseClientMedia") this.media.refuseClientMedia(action.sessionKey);
    }
    // 8.3.2.3 1: as a proxy the PF's part in the session ends with this BYE.
    // (B2BUA: the state goes when the client's answer is reported, 2.d/2.f.)
    if (session && decision.side === "network" && decision.mode === "proxy") void this.sessions.remove(callId);
    this.log.info("BYE decided", {
      ...fields,
      side: decision.side,
      mode: decision.mode,
      cause: decision.cause,
      reasonCause: decision.reasonCause,
      gso: gso.state,
    });
    return { ...decision, sessionKey: callId, gso };
  }

  /** Folds a SIP message into the session table (participants, focus, IDs). */
  async observe(env: Envelope, now = Date.now()): Promise<{ updated: boolean; sessionKey: string; participantCount: number }> {
    const msg = parseSipMessage(env.raw);
    const callId = header(msg, "call-id") ?? "";
    const result = observe(this.sessions.get(callId), msg, now);
    const fields = { callId, conversationId: result.session?.conversationId, contributionId: result.session?.contributionId };
    for (const note of result.notes) this.log.warn(note, fields);
    if (result.updated && result.session) {
      // Write-behind: the table in memory is what decisions read; the file
      // follows in order per session (flushed on shutdown).
      void this.sessions.put(result.session);
      this.log.debug("session updated", { ...fields, participants: result.session.participants.length });
    }
    return { updated: result.updated, sessionKey: callId, participantCount: result.session?.participants.length ?? 0 };
  }

  /** The client(s) answered the BYE: 2.d record the session, 2.f release media and state. */
  async byeOutcome(sessionKey: string, statusCode: number): Promise<boolean> {
    const session = this.sessions.get(sessionKey);
    if (statusCode >= 200 && statusCode < 300 && session) await this.media.recordSession(sessionKey);
    const released = this.media.release(sessionKey);
    await this.sessions.remove(sessionKey);
    this.log.info("BYE completed", { callId: sessionKey, statusCode, mediaReleased: released });
    return session !== undefined;
  }

  private async storeGso(session: GroupSession, gso: GroupStateObject): Promise<GsoOutcome> {
    const folder = groupSessionFolder(this.cfg.store.rootFolder, session.conversationId, session.contributionId);
    const imdnMessageId = randomUUID();
    const messageId = `${imdnMessageId}@cpm-pf`;
    const raw = buildCpmObject({
      contentType: GSO_CONTENT_TYPE,
      from: GSO_FROM,
      to: session.servedUser || this.cfg.pf.servedUser || GSO_FROM,
      date: gso.timestamp,
      conversationId: session.conversationId,
      contributionId: session.contributionId,
      imdnMessageId,
      messageId,
      subject: this.cfg.pf.groupSessionDataManagement ? session.subject : undefined,
      direction: "received",
      body: serializeGso(gso),
    });
    const result = await this.store.append({ folder, raw, messageId });
    this.log.info("GSO stored", {
      callId: session.key,
      conversationId: session.conversationId,
      contributionId: session.contributionId,
      folder,
      state: result.state,
    });
    return result;
  }
}
