// The CF's in-dialog re-INVITE or UPDATE on a group session whose client leg
// is gone (the client away, or replaced by a joined delivery session, DD-12 /
// RJ-5): most often an RFC 4028 session refresh. Relayed, it would reach the
// client's dead Contact and fail; the CF would then end the long-lived group
// session for the served user. As B2BUA the PF answers it for the client
// instead (8.3.2.9.1.2 c: the PF keeps the group session's dialog towards the
// CF). Pure: the facts in, the answer out; src/delivery/session-refresh.ts
// executes it.
//
// BYE-B7: a further device of a forked INVITE (its dialog is the PF's, held
// by the UA; the CF never saw it) refreshing its own dialog is answered by
// the PF too: relayed, the CF would answer 481 and the device would end its
// part of the group session.

/** What the PF knows when the request arrives. */
export interface RefreshFacts {
  method: "INVITE" | "UPDATE";
  /** The request came from the CF's side of the group session's dialog (its From tag). */
  fromNetwork: boolean;
  /** BYE-B7: it came from a further device of a forked INVITE, whose dialog the PF's UA holds (its From tag). */
  fromFurtherDevice: boolean;
  /** The PF anchors the session's media and its original client leg is gone. */
  clientLegGone: boolean;
  /** The request's SDP offer, if any. */
  offerSdp: string | undefined;
  /** Its Session-Expires value (RFC 4028 4), if any. */
  sessionExpires: string | undefined;
  /** "timer" is among its Supported / Require option tags. */
  supportsTimer: boolean;
  /** Its CSeq number. */
  cseq: number;
  /** The highest CSeq of the sender's requests in the dialog the PF knows (the record's; undefined: none known). */
  lastCseq: number | undefined;
}

export type RefreshAnswer =
  /** Not the PF's to answer: relayed as before. */
  | { kind: "relay"; why: string }
  /**
   * 2xx with these headers (Contact and Content-Type added by the executor);
   * `sdp`: "answer" the request's offer on the CF leg, "offer" the CF leg as
   * it is (an offerless re-INVITE: the CF's answer comes in the ACK), "none".
   */
  | { kind: "answer"; headers: [string, string][]; sdp: "answer" | "offer" | "none" }
  | { kind: "refuse"; status: number; reason: string };

/** RFC 4028 9: the UAS's 2xx names the refresher; the sender, which asked, stays the refresher (refresher=uac). */
function timerHeaders(f: RefreshFacts): [string, string][] {
  if (f.sessionExpires === undefined || !f.supportsTimer) return [];
  const delta = /^\s*(\d+)/.exec(f.sessionExpires)?.[1];
  if (delta === undefined) return [];
  return [
    ["Session-Expires", `${delta};refresher=uac`],
    ["Require", "timer"],
  ];
}

export function answerRefresh(f: RefreshFacts): RefreshAnswer {
  if (!f.fromFurtherDevice) {
    if (!f.fromNetwork) return { kind: "relay", why: "not from the CF's side" };
    if (!f.clientLegGone) return { kind: "relay", why: "the client is there to answer it" };
  }
  // RFC 3261 12.2.2: lower than the last request's: out of order (equal: the same request again, answered again)
  if (f.lastCseq !== undefined && f.cseq < f.lastCseq) return { kind: "refuse", status: 500, reason: "Server Internal Error" };
  if (f.method === "UPDATE") {
    // RFC 3311 5.2: an UPDATE with an offer changes the session; the PF keeps its leg as it is
    return { kind: "answer", headers: timerHeaders(f), sdp: f.offerSdp !== undefined ? "answer" : "none" };
  }
  // RFC 3261 14.2: an offerless re-INVITE wants an offer in the 2xx and the answer in the ACK;
  // RFC 3264 8: the PF offers its leg unchanged (same path, session-id and connection role)
  return { kind: "answer", headers: timerHeaders(f), sdp: f.offerSdp !== undefined ? "answer" : "offer" };
}
