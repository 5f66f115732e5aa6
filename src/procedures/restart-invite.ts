// 8.2.2.7 "CPM Group Re-join Requests" as the PF sends it for the served user
// (DD-13, RJ-3: the client sent in the delivery session of an inactive group):
// an INVITE to the group session's focus (lastfocussessionid) with the same
// Conversation-ID and Contribution-ID, the CPM feature tag in Contact and
// Accept-Contact, and the PF's CF-facing MSRP offer. Pure: the caller gives
// the PF's Contact and SDP offer, and sends it.
import { acceptContactFor, CPM_SESSION_ICSI, icsiRefParam } from "../sip/feature-tags.js";
import type { RestartRequest } from "./delivery-session.js";

export interface RestartInvite {
  requestUri: string;
  /** In order; Content-Type included, Content-Length left to the UA. */
  headers: [string, string][];
  body: string;
}

/** `contact`: the PF's SIP URI (its UA), where the CF's in-dialog requests go; `sdpOffer`: the PF's CF-facing leg. */
export function buildRestartInvite(servedUser: string, restart: RestartRequest, contact: string, sdpOffer: string): RestartInvite {
  const headers: [string, string][] = [
    ["To", `<${restart.focusUri}>`],
    ["From", `<${servedUser}>`],
    ["Contact", `<${contact}>;${icsiRefParam(CPM_SESSION_ICSI)}`],
    ["Accept-Contact", acceptContactFor(CPM_SESSION_ICSI)],
    // the PF acts for the served user in the trusted domain (TS 24.229 5.7.3)
    ["P-Asserted-Identity", `<${servedUser}>`],
    ["P-Asserted-Service", CPM_SESSION_ICSI],
    ["Conversation-ID", restart.conversationId],
    ["Contribution-ID", restart.contributionId],
  ];
  if (restart.subject) headers.push(["Subject", restart.subject]);
  headers.push(["Content-Type", "application/sdp"]);
  return { requestUri: restart.focusUri, headers, body: sdpOffer };
}
