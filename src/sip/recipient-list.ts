// The body of an INVITE that names participants (RFC 5366 4): the SDP and a
// resource-lists document (RFC 4826) in a multipart/mixed body (RFC 2046
// 5.1), the list's part marked Content-Disposition: recipient-list. The
// delivery INVITE to the client (DD-2) and the re-start INVITE to the
// conference factory (DD-13 / RJ-3) both carry it.
import { buildResourceLists, type ListEntry } from "../xml/resource-lists.js";
import { buildMultipart } from "./multipart.js";

/** The multipart body and its Content-Type value; an empty list is still a valid document. */
export function sdpWithRecipientList(sdp: string, entries: readonly ListEntry[]): { contentType: string; body: string } {
  return buildMultipart([
    { contentType: "application/sdp", body: sdp },
    {
      contentType: "application/resource-lists+xml",
      headers: [["Content-Disposition", "recipient-list"]],
      body: buildResourceLists(entries),
    },
  ]);
}
