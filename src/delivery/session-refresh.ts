// Executes src/procedures/session-refresh.ts: the CF's re-INVITE / UPDATE on
// a group session whose client leg is gone, which Kamailio relays to the PF's
// UA when ObserveSession answered answer_by_pf (cpm-pf.cfg
// route[CPM_PF_REFRESH]). The 2xx carries the PF's UA as Contact (RFC 3261
// 12.2: a target refresh), so the CF's ACK and its later in-dialog requests
// of this dialog come to the PF, which answers them for the absent client;
// its BYE is still decided by HandleBye on the way (8.3.2.3). A further
// device of a forked INVITE (BYE-B7) refreshing its own dialog gets the same
// from the PF, with that device's client leg as it is; its BYE still goes to
// the forked devices' executor (src/delivery/device-dialogs.ts).
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import { answerRefresh, type RefreshFacts } from "../procedures/session-refresh.js";
import type { GroupSession } from "../session/group-session.js";
import { parseCSeq } from "../sip/cseq.js";
import { header, headerValues, type SipMessage, splitCommaList } from "../sip/message.js";
import { bodyParts } from "../sip/multipart.js";
import { tagOf } from "../sip/name-addr.js";
import type { UaIncomingInvite } from "./service.js";

const SDP = "application/sdp";
/** Dialogs remembered for their BYE (the oldest forgotten first: a BYE that then comes gets 481, its GSO is HandleBye's anyway). */
const MAX_ANSWERED = 10_000;

export interface SessionRefreshDeps {
  sessions: { get(callId: string): GroupSession | undefined };
  /** The record keeps the CSeq of a CF request the PF answered (ParticipatingFunction.cfRequest). */
  answeredCf?(callId: string, cseq: number): Promise<void>;
  media: {
    clientLegGone(sessionKey: string): boolean;
    refreshAnswer(sessionKey: string, offerSdp: string): string;
    deviceRefreshAnswer(sessionKey: string, deviceKey: string, offerSdp: string): string;
  };
  /** The PF's UA's own URI: the Contact of its answers. */
  uaUri: string;
  log: Logger;
}

/** The request's CSeq number; 0 when it has none usable (Kamailio's parser let it through: nothing to order). */
function cseqOf(msg: SipMessage): number {
  try {
    return parseCSeq(header(msg, "cseq")).seq;
  } catch {
    return 0;
  }
}

function offerOf(msg: SipMessage): string | undefined {
  try {
    return bodyParts(header(msg, "content-type"), msg.body)
      .find((p) => p.contentType === SDP)
      ?.body.toString("utf8");
  } catch {
    return undefined;
  }
}

export class SessionRefresh {
  /** The CF dialogs the PF answered for the absent client (their Call-IDs): its ACKs and BYE come to the UA now. */
  private readonly answered = new Set<string>();
  /** Refreshes answered, refused (metrics, tests). */
  counts = { answered: 0, refused: 0 };

  constructor(private readonly deps: SessionRefreshDeps) {}

  private facts(msg: SipMessage): { facts: RefreshFacts; session: GroupSession | undefined; fromTag: string } {
    const callId = header(msg, "call-id") ?? "";
    const session = this.deps.sessions.get(callId);
    const dialog = session?.dialogs.find((d) => d.callId === callId);
    const options = [...headerValues(msg, "supported"), ...headerValues(msg, "require")].flatMap(splitCommaList);
    const fromTag = tagOf(header(msg, "from")) ?? "";
    return {
      session,
      fromTag,
      facts: {
        method: msg.kind === "request" && msg.method === "UPDATE" ? "UPDATE" : "INVITE",
        fromNetwork: dialog !== undefined && dialog.cfTag !== "" && fromTag === dialog.cfTag,
        fromFurtherDevice: fromTag !== "" && dialog?.forks?.some((f) => f.clientTag === fromTag) === true,
        clientLegGone: session !== undefined && this.deps.media.clientLegGone(callId),
        offerSdp: offerOf(msg),
        // "x": its compact form (RFC 4028 4)
        sessionExpires: header(msg, "session-expires") ?? header(msg, "x"),
        supportsTimer: options.some((o) => o.trim().toLowerCase() === "timer"),
        cseq: cseqOf(msg),
        // the CF's side: its requests are ordered in the record (a further device's dialog is the UA's own)
        lastCseq: dialog && fromTag === dialog.cfTag ? (dialog.cfCseq ?? dialog.inviteCseq) : undefined,
      },
    };
  }

  /** ObserveSession: is this in-dialog re-INVITE / UPDATE the PF's to answer? */
  answers(msg: SipMessage): boolean {
    return answerRefresh(this.facts(msg).facts).kind !== "relay";
  }

  /** A BYE the UA got on a dialog it answered refreshes for (HandleBye decided it on the way): 200, forgotten. */
  takesBye(callId: string): boolean {
    return this.answered.delete(callId);
  }

  /** The PF's SDP for an answered refresh: the sender's leg as it is, answering `offerSdp`. */
  private keptLeg(callId: string, facts: RefreshFacts, fromTag: string, offerSdp: string): string {
    return facts.fromFurtherDevice
      ? this.deps.media.deviceRefreshAnswer(callId, fromTag, offerSdp)
      : this.deps.media.refreshAnswer(callId, offerSdp);
  }

  /** The CF's (or a further device's) re-INVITE, at the UA. */
  onReinvite(invite: UaIncomingInvite): void {
    const req = invite.request;
    const { facts, session, fromTag } = this.facts(req);
    const answer = answerRefresh(facts);
    const fields = { callId: header(req, "call-id"), method: "INVITE" };
    if (answer.kind !== "answer") {
      // relay: the state changed since ObserveSession (the PF has no client to pass it to any more)
      const r = answer.kind === "refuse" ? answer : { status: 481, reason: "Call/Transaction Does Not Exist" };
      this.refused(fields, r);
      invite.reject(r.status, r.reason);
      return;
    }
    let sdp: string;
    const callId = header(req, "call-id") ?? "";
    try {
      // an offer in the 2xx: the leg as it is, i.e. the PF's answer to the CF's original offer
      // (RFC 3264 8: an unchanged stream); the answer in the ACK leaves it so, not read
      sdp = this.keptLeg(callId, facts, fromTag, (answer.sdp === "offer" ? session?.sdpOffer : facts.offerSdp) ?? "");
    } catch (err) {
      this.refused(fields, { status: 488, reason: err instanceof CpmError ? err.detail : String(err) });
      invite.reject(488, "Not Acceptable Here");
      return;
    }
    invite.acceptInDialog([...this.contact(), ...answer.headers, ["Content-Type", SDP]], sdp);
    this.done(req, fields, facts, fromTag);
  }

  /** The CF's (or a further device's) UPDATE, at the UA (RFC 3311). */
  onUpdate(req: SipMessage, reply: (status: number, reason: string, headers?: [string, string][], body?: string) => void): void {
    const { facts, fromTag } = this.facts(req);
    const answer = answerRefresh(facts);
    const fields = { callId: header(req, "call-id"), method: "UPDATE" };
    if (answer.kind !== "answer") {
      const r = answer.kind === "refuse" ? answer : { status: 481, reason: "Call/Transaction Does Not Exist" };
      this.refused(fields, r);
      reply(r.status, r.reason);
      return;
    }
    if (answer.sdp !== "answer") {
      reply(200, "OK", [...this.contact(), ...answer.headers]);
      this.done(req, fields, facts, fromTag);
      return;
    }
    // RFC 3311 5.2: an UPDATE with an offer gets the answer in its 2xx; the PF keeps its leg as it is
    let sdp: string;
    try {
      sdp = this.keptLeg(header(req, "call-id") ?? "", facts, fromTag, facts.offerSdp ?? "");
    } catch (err) {
      this.refused(fields, { status: 488, reason: err instanceof CpmError ? err.detail : String(err) });
      reply(488, "Not Acceptable Here");
      return;
    }
    reply(200, "OK", [...this.contact(), ...answer.headers, ["Content-Type", SDP]], sdp);
    this.done(req, fields, facts, fromTag);
  }

  private contact(): [string, string][] {
    return [["Contact", `<${this.deps.uaUri}>`]];
  }

  private done(req: SipMessage, fields: Record<string, unknown>, facts: RefreshFacts, fromTag: string): void {
    this.counts.answered++;
    const logged = { ...fields, sessionExpires: header(req, "session-expires") };
    if (facts.fromFurtherDevice) {
      // its dialog's BYE is the forked devices' executor's, as before
      this.deps.log.info("session refresh of a further device answered (BYE-B7)", { ...logged, device: fromTag });
      return;
    }
    const callId = header(req, "call-id") ?? "";
    this.answered.add(callId);
    if (this.answered.size > MAX_ANSWERED) this.answered.delete(this.answered.values().next().value as string);
    this.deps.log.info("session refresh answered for the absent client", logged);
    // a later request of the CF's with a lower CSeq is out of order, also after a restart
    this.deps
      .answeredCf?.(callId, facts.cseq)
      .catch((err: unknown) => this.deps.log.warn("the CF request's CSeq not kept in the record", { ...fields, reason: String(err) }));
  }

  private refused(fields: Record<string, unknown>, r: { status: number; reason: string }): void {
    this.counts.refused++;
    this.deps.log.warn("session refresh refused", { ...fields, status: r.status, reason: r.reason });
  }
}
