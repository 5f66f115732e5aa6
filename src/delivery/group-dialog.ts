// The executor of deferred delivery's actions on the group session itself:
// the PF's BYE to the focus on the group session's dialog, which the PF only
// proxies (src/session/proxied-dialog.ts), through its SIP UA and Kamailio
// (DD-8 ii; the joined client's BYE, 8.2.2.3); the release of the group
// session's anchored media (DD-8 ii); the unsubscription from the focus's
// conference event package; the join of the delivery session with the
// on-going group session and the relay of the client's messages to the CF
// (DD-12, RJ-5). The record's lifecycle is written (left) before a BYE goes out.
import { randomBytes } from "node:crypto";
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import type { JoinedClient } from "../media/anchored-session.js";
import type { GroupSessionRef } from "../media/ports.js";
import type { RestartRequest } from "../procedures/delivery-session.js";
import { buildRestartInvite } from "../procedures/restart-invite.js";
import type { GroupSession, SessionDialog } from "../session/group-session.js";
import { focusContact } from "../session/observe.js";
import { type ProxiedDialog, throughProxy, towardsClient, towardsFocus } from "../session/proxied-dialog.js";
import { header, type SipMessage } from "../sip/message.js";
import { bodyParts } from "../sip/multipart.js";
import { uaUriOf } from "../sip/ua.js";

/** The PF's SIP UA, as far as this executor uses it (src/sip/ua.ts). */
export interface GroupDialogUa {
  readonly outboundRoute: string;
  readonly address: { host: string; port: number };
  bye(dialog: ProxiedDialog, headers?: [string, string][]): Promise<number>;
  invite(req: { requestUri: string; route?: string[]; headers: [string, string][]; body: string; callId?: string }): {
    callId: string;
    outcome: Promise<{ status: number; reason: string; response: SipMessage; dialog?: ProxiedDialog }>;
    /** CANCEL (RFC 3261 9.1) once a provisional came; the outcome then ends with the CF's 487. */
    cancel(): void;
  };
  ack(dialog: ProxiedDialog): void;
}

/**
 * What a re-start answers (DD-13 / RJ-3): the CF's final status; with a
 * 2xx, the new group session dialog's Call-ID and the focus its Contact
 * names (;isfocus), when it names one.
 */
export interface RestartOutcome {
  status: number;
  reasonPhrase: string;
  callId?: string;
  focusUri?: string;
}

/**
 * How long a re-start INVITE may ring: the UA's Timer B stops at the first
 * provisional response (RFC 3261 17.1.1.2; Kamailio's 100 Trying is one),
 * so a focus or factory that never gives a final answer is CANCELled after
 * this, as a delivery INVITE is.
 */
export const RESTART_RING_MS = 60_000;

export interface GroupDialogDeps {
  /** The record's lifecycle step (ParticipatingFunction.userLeaves). */
  userLeaves(sessionKey: string): Promise<{ session: GroupSession; dialog: SessionDialog } | undefined>;
  /** The record's lifecycle step (ParticipatingFunction.clientJoined). */
  clientJoined(sessionKey: string): Promise<void>;
  ua: GroupDialogUa;
  /** delivery.originatingRoute: the S-CSCF the PF's requests for the served user go through ("" = none). */
  originatingRoute?: string;
  /** The record takes the re-start's dialog, and the new focus when the 2xx named one (ParticipatingFunction.restarted). */
  restarted(sessionKey: string, dialog: SessionDialog, focusUri?: string): Promise<void>;
  /** RESTART_RING_MS unless given (tests). */
  ringMs?: number;
  /** The PF's own conference subscriptions (src/delivery/conference-subscriptions.ts); absent: the PF holds none. */
  subscriptions?: { unsubscribe(sessionKey: string): Promise<boolean> };
  /** The media plane (src/media/msrp-media-plane.ts). */
  media: {
    originate(req: { session: GroupSessionRef; offerSdp: string; client: JoinedClient }): string;
    /** A re-start that did not come up: the CF side released, the joined delivery session left open. */
    abandon(sessionKey: string): number;
    anchorAnswer(sessionKey: string, answerSdp: string, facts?: { focus?: string }): string;
    /** 8.3.2.3 2.f; how many resources it freed. */
    release(sessionKey: string): number;
    /** DD-12 / RJ-5; throws CpmError CPM_ERR_MEDIA_NOT_ANCHORED. */
    joinClient(sessionKey: string, client: JoinedClient): void;
    /** One device's joined delivery session leaves (BYE-B7); the others stay. */
    leaveClient(sessionKey: string, client: JoinedClient): void;
    /** The session is anchored: its CF side is there to join. */
    holds(sessionKey: string): boolean;
    relayToCf(sessionKey: string, m: { contentType: string; body: Buffer; messageId: string }): Promise<number>;
  };
  log: Logger;
}

export interface ByeOutcome {
  /** The focus's final answer to the PF's BYE. */
  focus: number;
  /** The served user's client's answer on the same dialog, when its Contact is known. */
  client?: number;
}

export class GroupDialogs {
  /** Group session dialogs the PF's UA itself set up (re-starts), by Call-ID: the UA's own dialog state. */
  private readonly own = new Map<string, ProxiedDialog>();

  constructor(private readonly deps: GroupDialogDeps) {}

  /**
   * DD-13 / RJ-3: the re-start INVITE for the served user (8.2.2.7 to the
   * focus, or to the conference factory with the participants), with the
   * PF's CF-facing MSRP offer; the joined delivery session is the new group
   * session's client side. A 2xx is ACKed, its SDP answer anchored and the
   * dialog (and the focus its Contact names) handed to the record; anything
   * else releases the media. Never rejects: a transport failure, no answer
   * or one that rings past ringMs is a 408; a factory's 2xx naming no focus
   * (RFC 4579 3.4: its Contact carries ;isfocus) is ended at once and
   * answers 502, as an unusable SDP answer does 488.
   */
  async restart(req: {
    servedUser: string;
    session: GroupSession;
    restart: RestartRequest;
    client: JoinedClient;
  }): Promise<RestartOutcome> {
    const { ua, media } = this.deps;
    const callId = `${randomBytes(8).toString("hex")}@${ua.address.host}`;
    const via = req.restart.via;
    const target = via === "factory" ? req.restart.factoryUri : req.restart.focusUri;
    const ref = {
      sessionKey: callId,
      servedUser: req.servedUser,
      conversationId: req.restart.conversationId,
      contributionId: req.restart.contributionId,
      focus: target,
    };
    const offer = media.originate({ session: ref, offerSdp: req.session.sdpOffer, client: req.client });
    const invite = buildRestartInvite(req.servedUser, req.restart, uaUriOf(ua.address), offer, this.deps.originatingRoute);
    const fields = { callId, groupCallId: req.session.key, conversationId: ref.conversationId, contributionId: ref.contributionId, via };
    if (via === "factory") {
      this.deps.log.info("re-start INVITE to the conference factory (DD-13: the focus is gone)", {
        ...fields,
        factory: target,
        focus: req.restart.focusUri,
        participants: req.restart.participants.length,
      });
    } else this.deps.log.info("re-start INVITE to the focus (DD-13)", { ...fields, focus: target });
    const sent = ua.invite({ ...invite, callId });
    let rangOut = false;
    const ring = setTimeout(() => {
      rangOut = true;
      sent.cancel();
    }, this.deps.ringMs ?? RESTART_RING_MS);
    ring.unref();
    let outcome: Awaited<typeof sent.outcome>;
    try {
      outcome = await sent.outcome;
    } catch (err) {
      media.abandon(callId);
      this.deps.log.warn("re-start INVITE not answered", { ...fields, reason: err instanceof CpmError ? err.detail : String(err) });
      return { status: 408, reasonPhrase: "Request Timeout" };
    } finally {
      clearTimeout(ring);
    }
    if (outcome.status >= 300 || !outcome.dialog) {
      media.abandon(callId);
      if (rangOut) {
        // Decision (spec silent): the CF gave no final answer in time; the client hears 408, not the 487 our CANCEL caused
        this.deps.log.warn("re-start INVITE rang too long: cancelled", { ...fields, status: outcome.status });
        return { status: 408, reasonPhrase: "Request Timeout" };
      }
      this.deps.log.info("re-start refused by the CF", { ...fields, status: outcome.status });
      return { status: outcome.status, reasonPhrase: outcome.reason };
    }
    ua.ack(outcome.dialog);
    const focusUri = focusContact(outcome.response) || undefined;
    const unusable = async (status: number, phrase: string, reason: string): Promise<RestartOutcome> => {
      // the CF took it but the PF cannot use it: end the new dialog at once (RFC 3261 15)
      media.abandon(callId);
      await ua.bye(outcome.dialog as ProxiedDialog, [["Reason", `SIP;cause=${status};text="${phrase}"`]]).catch(() => 0);
      this.deps.log.warn("re-start answer unusable", { ...fields, status: outcome.status, reason });
      return { status, reasonPhrase: phrase };
    };
    // the factory set a new conference up: without the focus it names, no GSO could point the client at it
    if (via === "factory" && !focusUri)
      return unusable(502, "Bad Gateway", "2xx from the conference factory names no focus (Contact ;isfocus)");
    try {
      media.anchorAnswer(callId, sdpOf(outcome.response), { focus: focusUri ?? target });
    } catch (err) {
      return unusable(488, "Not Acceptable Here", err instanceof CpmError ? err.detail : String(err));
    }
    this.own.set(callId, outcome.dialog);
    const d = outcome.dialog;
    await this.deps.restarted(
      req.session.key,
      {
        callId,
        cfTag: d.remoteTag,
        clientTag: d.localTag,
        remoteTarget: d.remoteTarget,
        routeSet: d.routeSet,
        inviteCseq: 1,
        clientInstance: "",
        initiator: "pf",
        state: "confirmed",
      },
      focusUri,
    );
    if (via === "factory")
      this.deps.log.info("group session re-started via the conference factory (DD-13)", { ...fields, focus: focusUri });
    return { status: outcome.status, reasonPhrase: outcome.reason, callId, ...(focusUri ? { focusUri } : {}) };
  }

  /** Forgets a dialog the UA set up once it ended (the CF's BYE, or the PF's). */
  ended(callId: string): void {
    this.own.delete(callId);
  }

  /**
   * DD-8 ii a: BYE with `reason` to the focus on the group session's dialog;
   * the served user's client, still in that dialog while its MSRP leg is gone,
   * gets one too, so neither end keeps it up. Throws CpmError
   * CPM_ERR_NOT_FOUND when the record holds no confirmed dialog.
   */
  async byeToFocus(sessionKey: string, reason: string): Promise<ByeOutcome> {
    const left = await this.deps.userLeaves(sessionKey);
    if (!left) throw new CpmError("CPM_ERR_NOT_FOUND", `group session ${sessionKey}: no confirmed dialog towards the focus`);
    const headers: [string, string][] = [["Reason", reason]];
    const own = this.own.get(left.dialog.callId);
    if (own) {
      // a dialog the PF's UA set up (a re-start): its own route set; the client is the delivery session
      this.own.delete(left.dialog.callId);
      const focus = await this.deps.ua.bye(own, headers);
      this.deps.log.info("BYE to the focus for the served user", { reason, callId: own.callId, focusStatus: focus });
      return { focus };
    }
    const toFocus = this.viaProxy(towardsFocus(left.session, left.dialog));
    const towardsUser = towardsClient(left.session, left.dialog);
    const [focus, client] = await Promise.all([
      this.deps.ua.bye(toFocus, headers),
      towardsUser ? this.deps.ua.bye(this.viaProxy(towardsUser), headers) : Promise.resolve(undefined),
    ]);
    this.deps.log.info("BYE to the focus for the served user", {
      reason,
      callId: left.dialog.callId,
      conversationId: left.session.conversationId,
      contributionId: left.session.contributionId,
      focus: left.session.focusUri,
      focusStatus: focus,
      clientStatus: client ?? "no client Contact known",
    });
    return client === undefined ? { focus } : { focus, client };
  }

  /** DD-8 ii a: the group session's media resources (anchored legs); how many went. */
  releaseMedia(sessionKey: string): number {
    return this.deps.media.release(sessionKey);
  }

  /** DD-12 / RJ-5: the delivery session's MSRP session becomes the group session's client leg (the CF's messages go to it). */
  /** RJ-5: the PF holds the group session's CF side (anchored media), so a re-joining client can be joined with it. */
  holds(sessionKey: string): boolean {
    return this.deps.media.holds(sessionKey);
  }

  async join(sessionKey: string, client: JoinedClient): Promise<void> {
    this.deps.media.joinClient(sessionKey, client);
    await this.deps.clientJoined(sessionKey);
  }

  /** BYE-B7: one device's joined delivery session leaves the group session; the user's other joined devices stay. */
  leave(sessionKey: string, client: JoinedClient): void {
    this.deps.media.leaveClient(sessionKey, client);
  }

  /** DD-12 / RJ-5: a message of the joined client to the CF; resolves with the CF's code. */
  relayToCf(sessionKey: string, m: { contentType: string; body: Buffer; messageId: string }): Promise<number> {
    return this.deps.media.relayToCf(sessionKey, m);
  }

  /**
   * DD-8 ii b, DD-12 (MAY): the PF's own subscription to the focus's
   * conference event package (held while the client was away) ends with an
   * in-dialog SUBSCRIBE, Expires: 0 (RFC 6665 4.1.2.3). False when the PF
   * holds none for the group session (the caller logs it).
   */
  unsubscribe(sessionKey: string): Promise<boolean> {
    return this.deps.subscriptions?.unsubscribe(sessionKey) ?? Promise.resolve(false);
  }

  private viaProxy(d: ProxiedDialog): ProxiedDialog {
    return throughProxy(d, this.deps.ua.outboundRoute);
  }
}

/** The SDP of a 2xx (alone or in a multipart body). */
function sdpOf(response: SipMessage): string {
  const sdp = bodyParts(header(response, "content-type"), response.body).find((p) => p.contentType === "application/sdp");
  if (!sdp) throw new CpmError("CPM_ERR_BAD_SDP", "2xx to the re-start INVITE carries no SDP answer");
  return sdp.body.toString("utf8");
}
