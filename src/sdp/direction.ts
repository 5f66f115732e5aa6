// SDP direction attributes (RFC 4566 6: a=sendrecv / sendonly / recvonly /
// inactive, session or media level; a media-level one overrides the session's).
// sdp-transform parses and writes the SDP and keeps the MSRP attributes it has
// no grammar for (a=path, a=accept-types, ...) in order.
import sdpTransform from "sdp-transform";
import { CpmError } from "../errors/catalogue.js";

export type Direction = "sendrecv" | "sendonly" | "recvonly" | "inactive";

/**
 * `sdp` with `direction` on every media description and no session-level
 * direction (it could only contradict); added where the SDP had none.
 * Throws CPM_ERR_BAD_SDP for an empty SDP or one without media.
 */
export function withDirection(sdp: string, direction: Direction): string {
  if (!sdp.trim()) throw new CpmError("CPM_ERR_BAD_SDP", "empty SDP");
  let session: ReturnType<typeof sdpTransform.parse>;
  try {
    session = sdpTransform.parse(sdp);
  } catch (err) {
    throw new CpmError("CPM_ERR_BAD_SDP", "SDP does not parse", { cause: err });
  }
  if (!session.media || session.media.length === 0) throw new CpmError("CPM_ERR_BAD_SDP", "SDP without a media description");
  delete session.direction;
  for (const m of session.media) m.direction = direction;
  return sdpTransform.write(session);
}
