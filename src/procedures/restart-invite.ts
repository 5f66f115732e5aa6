// The re-start INVITE of a long-lived group session the PF sends for the
// served user (DD-13, RJ-3: the client sent in the delivery session of an
// inactive group), with the same Conversation-ID and Contribution-ID, the
// CPM feature tag in Contact and Accept-Contact, and the PF's CF-facing MSRP
// offer:
// - via "focus": 8.2.2.7 "CPM Group Re-join Requests", to the group
//   session's focus (lastfocussessionid), the SDP alone;
// - via "factory" (the focus is gone): to the conference factory, the known
//   participants in an RFC 5366 recipient list next to the SDP, so the CF
//   sets the group up again with them.
// Pure: the caller gives the PF's Contact and SDP offer, and sends it.
import { acceptContactFor, CPM_SESSION_ICSI, icsiRefParam } from "../sip/feature-tags.js";
import { preloadedRoute } from "../sip/preloaded-route.js";
import { sdpWithRecipientList } from "../sip/recipient-list.js";
import type { RestartRequest } from "./delivery-session.js";

export interface RestartInvite {
  requestUri: string;
  /** Routes pre-loaded after Kamailio's: the S-CSCF's originating route (delivery.originatingRoute), when set. */
  route: string[];
  /** In order; Content-Type included, Content-Length left to the UA. */
  headers: [string, string][];
  body: string;
}

/**
 * `contact`: the PF's SIP URI (its UA), where the CF's in-dialog requests go; `sdpOffer`: the PF's CF-facing leg;
 * `originatingRoute`: the S-CSCF's URI ("" = none): the PF acts for the served user, so the S-CSCF's
 * originating processing (TS 24.229 5.7.3, the "orig" parameter) comes before the CF.
 */
export function buildRestartInvite(
  servedUser: string,
  restart: RestartRequest,
  contact: string,
  sdpOffer: string,
  originatingRoute = "",
): RestartInvite {
  const target = restart.via === "factory" ? restart.factoryUri : restart.focusUri;
  const body =
    restart.via === "factory" ? sdpWithRecipientList(sdpOffer, restart.participants) : { contentType: "application/sdp", body: sdpOffer };
  const headers: [string, string][] = [
    ["To", `<${target}>`],
    ["From", `<${servedUser}>`],
    ["Contact", `<${contact}>;${icsiRefParam(CPM_SESSION_ICSI)}`],
    ["Accept-Contact", acceptContactFor(CPM_SESSION_ICSI)],
    // the PF acts for the served user in the trusted domain (TS 24.229 5.7.3)
    ["P-Asserted-Identity", `<${servedUser}>`],
    ["P-Asserted-Service", CPM_SESSION_ICSI],
    ["Conversation-ID", restart.conversationId],
    ["Contribution-ID", restart.contributionId],
  ];
  // RFC 5366 3: the factory must process the recipient list, not ignore it
  if (restart.via === "factory") headers.push(["Require", "recipient-list-invite"]);
  if (restart.subject) headers.push(["Subject", restart.subject]);
  headers.push(["Content-Type", body.contentType]);
  const route = originatingRoute ? [preloadedRoute(originatingRoute, { orig: true })] : [];
  return { requestUri: target, route, headers, body: body.body };
}
