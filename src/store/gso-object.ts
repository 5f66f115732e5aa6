// A Group State Object as the Message Store keeps it (cpm-facts 1.4): one
// RFC 5322 message, application/group-state-object+xml, in the group
// session's folder.
//
// Its identity is the BYE that caused it (8.3.2.3 2.b.ii, 2.b.iii, "other"):
// the BYE's Call-ID, CSeq sequence number and its sender's From tag identify
// that request (RFC 3261 8.1.1.3, 8.1.1.5, 17.2.3), so a retransmission of
// it, a replay, or the same BYE reaching a second Kamailio gives the same
// Message-ID and the store keeps one object:
//   Message-ID       <gso.HEX@cpm-pf.invalid>
//   IMDN-Message-ID  HEX
// HEX: 32 hex digits of SHA-256 over the three values.
import { createHash } from "node:crypto";
import { CpmError } from "../errors/catalogue.js";
import type { ByeIdentity } from "../procedures/handle-bye.js";
import { type GroupStateObject, GSO_CONTENT_TYPE, serializeGso } from "../xml/gso.js";
import { buildCpmObject } from "./cpm-object.js";
import { ANONYMOUS_URI, STORED_ID_DOMAIN } from "./deferred-object.js";

export interface GsoObjectInput {
  gso: GroupStateObject;
  bye: ByeIdentity;
  /** To: the served user. */
  to: string;
  conversationId: string;
  contributionId: string;
  /** Written as Subject (Group Session Data management). */
  subject?: string;
}

/** 32 hex digits naming the GSO of one BYE. */
export function gsoIdentity(bye: ByeIdentity): string {
  if (typeof bye?.callId !== "string" || bye.callId === "") throw new CpmError("CPM_ERR_BAD_REQUEST", "GSO identity: no Call-ID");
  if (!Number.isSafeInteger(bye.cseq) || bye.cseq < 0) {
    throw new CpmError("CPM_ERR_BAD_REQUEST", `GSO identity: CSeq ${String(bye.cseq)} is not a sequence number`);
  }
  if (typeof bye.fromTag !== "string") throw new CpmError("CPM_ERR_BAD_REQUEST", "GSO identity: no From tag");
  // JSON: unambiguous whatever the values contain
  const key = JSON.stringify([bye.callId, bye.cseq, bye.fromTag]);
  return createHash("sha256").update(key, "utf8").digest("hex").slice(0, 32);
}

/** The GSO's Message-ID (bare, without brackets). */
export function gsoMessageId(bye: ByeIdentity): string {
  return `gso.${gsoIdentity(bye)}@${STORED_ID_DOMAIN}`;
}

/** Builds the stored GSO. Throws CPM_ERR_BAD_REQUEST on unusable input. */
export function buildGsoObject(o: GsoObjectInput): { raw: Buffer; messageId: string } {
  const id = gsoIdentity(o.bye);
  const messageId = `gso.${id}@${STORED_ID_DOMAIN}`;
  const raw = buildCpmObject({
    contentType: GSO_CONTENT_TYPE,
    from: ANONYMOUS_URI,
    to: o.to,
    date: o.gso.timestamp,
    conversationId: o.conversationId,
    contributionId: o.contributionId,
    imdnMessageId: id,
    messageId,
    subject: o.subject,
    direction: "received",
    body: serializeGso(o.gso),
  });
  return { raw, messageId };
}
