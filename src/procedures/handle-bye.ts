// OMA CPM Conversation Functions 8.3.2.3 "Handle a SIP BYE Request" (as
// changed by the CR in shared/spec): pure. Takes the session snapshot and the
// BYE, returns the decision and the actions the adapters carry out.
import type { PfMode } from "../config/config.js";
import { CpmError } from "../errors/catalogue.js";
import type { GroupSession } from "../session/group-session.js";
import { parseNameAddr } from "../sip/name-addr.js";
import { formatClientReason, parseReasonHeaders } from "../sip/reason.js";
import type { GroupStateObject } from "../xml/gso.js";

/**
 * The BYE a GSO comes from: its Call-ID, CSeq sequence number and its
 * sender's From tag identify the request (RFC 3261 8.1.1.3, 8.1.1.5; not the
 * branch, which a replay through another proxy changes), so they are the
 * GSO's identity in the store (src/store/gso-object.ts).
 */
export interface ByeIdentity {
  callId: string;
  cseq: number;
  fromTag: string;
}

export type ByeCause = "participant-left" | "terminated" | "inactivity" | "network";

export interface ByePolicy {
  mode: PfMode;
  unknownSessionMode: PfMode;
  /** Group Session Data management: subject and icon in the GSO (MAY). */
  groupSessionDataManagement: boolean;
}

export interface ByeEvent {
  callId: string;
  /** The CSeq sequence number: with the Call-ID and the From tag, the GSO's identity. */
  cseq: number;
  fromTag: string;
  /** Every Reason header line, as received. */
  reasons: readonly string[];
  /** The Referred-By header value, as received. */
  referredBy: string | undefined;
  receivedAt: Date;
}

export type ByeAction =
  /** 8.3.2.3 2.b.ii-iii and "other": store a GSO in the group session folder, once per BYE (`bye` is its identity). */
  | { kind: "storeGso"; gso: GroupStateObject; session: GroupSession; bye: ByeIdentity }
  /** 1.a / 2.c: send the BYE to the client(s); `reason` replaces the Reason header (B2BUA). */
  | { kind: "byeToClients"; reason: string | undefined }
  /** 2.b.iv: from now on, MSRP from the clients on this session gets 481 (media plane seam). */
  | { kind: "refuseClientMedia"; sessionKey: string }
  /** 1.a / 2.e: answer the BYE's sender after the clients' 200 OK. */
  | { kind: "answerSenderAfterClients" };

export interface ByeDecision {
  side: "network" | "client";
  mode: PfMode;
  cause: ByeCause;
  /** The reason-cause the decision used; 200 when absent (2.a). */
  reasonCause: number;
  clientReason: string;
  actions: ByeAction[];
  notes: string[];
}

/** 8.3.2.3 2.b: the class of a reason-cause. */
export function classifyCause(cause: number): ByeCause {
  if (cause === 200) return "participant-left"; // 2.b.i
  if (cause === 410) return "terminated"; // 2.b.ii
  if (cause === 480) return "inactivity"; // 2.b.iii
  return "network"; // "any other values": SIP/IP core, possibly connection loss
}

/** Which of proxy or B2BUA the PF is for this session (operator policy + session facts). */
export function chooseMode(session: GroupSession | undefined, policy: ByePolicy): PfMode {
  if (!session) return policy.unknownSessionMode;
  return policy.mode;
}

/** The address of a Referred-By value (RFC 3892), or undefined with a note. */
export function referredByAddress(value: string | undefined, notes: string[]): string | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  try {
    return parseNameAddr(value).uri;
  } catch (err) {
    notes.push(`Referred-By ignored: ${err instanceof CpmError ? err.detail : String(err)}`);
    return undefined;
  }
}

export function handleBye(session: GroupSession | undefined, bye: ByeEvent, policy: ByePolicy): ByeDecision {
  const notes: string[] = [];
  // A BYE from the served user's client is not this procedure (8.2.2.3): relay it.
  if (session?.networkTag && bye.fromTag !== session.networkTag) {
    return {
      side: "client",
      mode: "proxy",
      cause: "participant-left",
      reasonCause: 0,
      clientReason: "",
      actions: [{ kind: "byeToClients", reason: undefined }],
      notes,
    };
  }
  const mode = chooseMode(session, policy);
  if (!session) notes.push(`no state for this session: ${mode} per pf.unknownSessionMode`);

  // 2.a: no Reason -> SIP;cause=200. 2.b: the SIP reason-value decides; other
  // protocols (Q.850) and unparseable values fall under "any other values".
  const parsed = parseReasonHeaders(bye.reasons);
  for (const e of parsed.errors) notes.push(`malformed Reason treated as other: ${e}`);
  const sip = parsed.values.find((v) => v.protocol === "SIP" && v.cause !== undefined);
  let reasonCause: number;
  let text: string | undefined;
  if (sip?.cause !== undefined) {
    reasonCause = sip.cause;
    text = sip.text;
  } else if (bye.reasons.length === 0 || (parsed.values.length === 0 && parsed.errors.length === 0)) {
    reasonCause = 200;
  } else {
    reasonCause = 503;
    notes.push("Reason present without a usable SIP cause: handled as a SIP/IP core release (cause 503)");
  }
  const cause = classifyCause(reasonCause);
  // the mapped SIP value (its text only as received) and the other protocols' values as received
  const clientReason = formatClientReason({ cause: reasonCause, text }, parsed);

  if (mode === "proxy") {
    // 1.a: forward the BYE unchanged; its 200 OK goes back the same path.
    return {
      side: "network",
      mode,
      cause,
      reasonCause,
      clientReason: "",
      actions: [{ kind: "byeToClients", reason: undefined }, { kind: "answerSenderAfterClients" }],
      notes,
    };
  }

  const actions: ByeAction[] = [];
  if (cause !== "participant-left") {
    if (session) {
      const gso: GroupStateObject = {
        timestamp: bye.receivedAt,
        lastFocusSessionId: session.focusUri,
        groupType: session.groupType,
        contributionId: session.contributionId,
        participants: session.participants,
      };
      if (cause === "terminated") {
        gso.status = "removed"; // 2.b.ii
        gso.referredBy = referredByAddress(bye.referredBy, notes);
      }
      if (policy.groupSessionDataManagement) {
        gso.subject = session.subject;
        gso.icon = session.icon;
      }
      const identity: ByeIdentity = { callId: bye.callId, cseq: bye.cseq, fromTag: bye.fromTag };
      if (session.focusUri) actions.push({ kind: "storeGso", gso, session, bye: identity });
      else notes.push("no focus URI known for the session: GSO not stored (clients reject a GSO without lastfocussessionid)");
    } else {
      notes.push("no participant list known: GSO not stored");
    }
  }
  actions.push({ kind: "refuseClientMedia", sessionKey: bye.callId });
  actions.push({ kind: "byeToClients", reason: clientReason });
  actions.push({ kind: "answerSenderAfterClients" });
  return { side: "network", mode, cause, reasonCause, clientReason, actions, notes };
}
