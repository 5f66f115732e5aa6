// SDP anchoring for the PF as B2BUA in the MSRP media path (RFC 4975 8, RFC
// 6135): the SDP one leg sent is passed to the other leg with the PF's own
// address, port and MSRP URI, so that each leg's MSRP connection ends at the
// PF. Everything else of the media description (a=accept-types,
// a=accept-wrapped-types with message/imdn+xml, a=max-size, direction) is
// passed unchanged: the two legs must agree on what they carry.
// sdp-transform parses and writes the SDP; it keeps the MSRP attributes it has
// no grammar for (a=path, a=accept-types, ...) as `invalid` lines, in order.
import sdpTransform from "sdp-transform";
import { CpmError } from "../errors/catalogue.js";
import { answerSetup, type ConnectionRole, type SetupAttribute } from "../msrp/setup.js";
import { parseMsrpPath } from "../msrp/uri.js";

export interface MsrpAnchor {
  /** Address the PF's MSRP listener is reached at (c= and the URI host). */
  host: string;
  port: number;
  /** The PF's MSRP session-id for this leg (CSPRNG, see src/msrp/ids.ts). */
  sessionId: string;
  /** msrps (TCP/TLS/MSRP) or msrp (TCP/MSRP). */
  tls: boolean;
}

export interface AnchoredSdp {
  /** The SDP to send on the other leg. */
  sdp: string;
  /** The peer's a=path of the SDP that came in (relays first, RFC 4976). */
  peerPath: string[];
  /** a=setup the peer sent (undefined when absent). */
  peerSetup: SetupAttribute | undefined;
  /** a=setup the PF put in the SDP it sends. */
  localSetup: SetupAttribute;
}

const SETUPS: readonly string[] = ["active", "passive", "actpass", "holdconn"];

/**
 * Rewrites the first MSRP media description of `sdp` to point at `anchor`.
 * `as`: "offer" when the PF sends it as an offer (a=setup:actpass, RFC 6135
 * 4.1), "answer" when it answers `offerSetup` (the setup of the offer the PF
 * answers on that leg); `prefer`: the PF's role when that offer lets it
 * choose (answerSetup's default otherwise).
 */
export function anchorSdp(
  sdp: string,
  anchor: MsrpAnchor,
  as: "offer" | "answer",
  offerSetup?: SetupAttribute,
  prefer?: ConnectionRole,
): AnchoredSdp {
  if (!sdp.trim()) throw new CpmError("CPM_ERR_BAD_SDP", "empty SDP");
  const session = sdpTransform.parse(sdp);
  const media = session.media?.find((m) => m.type === "message" && /^TCP(\/TLS)?\/MSRP$/i.test(m.protocol));
  if (!media) throw new CpmError("CPM_ERR_BAD_SDP", "no m=message TCP/MSRP media description");
  const other = media.invalid ?? [];
  const pathLine = other.find((a) => a.value.startsWith("path:"));
  if (!pathLine) throw new CpmError("CPM_ERR_BAD_SDP", "MSRP media without a=path (RFC 4975 8.2)");
  const peerPath = pathLine.value.slice("path:".length).trim().split(/\s+/);
  parseMsrpPath(peerPath.join(" ")); // throws CPM_ERR_MSRP_URI on a malformed URI
  const peerSetupRaw = media.setup?.toLowerCase();
  const peerSetup = peerSetupRaw && SETUPS.includes(peerSetupRaw) ? (peerSetupRaw as SetupAttribute) : undefined;

  const scheme = anchor.tls ? "msrps" : "msrp";
  const ip = anchor.host.includes(":") ? 6 : 4;
  pathLine.value = `path:${scheme}://${ip === 6 ? `[${anchor.host}]` : anchor.host}:${anchor.port}/${anchor.sessionId};tcp`;
  media.port = anchor.port;
  media.protocol = anchor.tls ? "TCP/TLS/MSRP" : "TCP/MSRP";
  // c= where the peer had it (media or session level, RFC 4566 5.7); o= names
  // the PF too, which hides the other leg's addresses (topology hiding).
  if (media.connection || !session.connection) media.connection = { version: ip, ip: anchor.host };
  if (session.connection) session.connection = { version: ip, ip: anchor.host };
  if (session.origin) session.origin = { ...session.origin, ipVer: ip, address: anchor.host };
  const localSetup: SetupAttribute = as === "offer" ? "actpass" : answerSetup(offerSetup, prefer);
  media.setup = localSetup;
  return { sdp: sdpTransform.write(session), peerPath, peerSetup, localSetup };
}
