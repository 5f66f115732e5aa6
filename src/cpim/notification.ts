// The PF's own negative delivery notification (RFC 5438 7.2.1.1, RJ-4) for a
// message the served user's client sent that could not reach the group: a
// message/cpim (RFC 3862) whose content is a message/imdn+xml document with
// <delivery-notification><status><failed/>. Only for a message that asked
// for it (imdn.Disposition-Notification: negative-delivery, RFC 5438 6.2).
import { randomBytes } from "node:crypto";
import { buildDeliveryNotification } from "../xml/imdn.js";
import { addressUri, type CpimMessage, cpimHeader, cpimHeaders, IMDN_URN, imdnMessageId } from "./cpim.js";

/** RFC 5438 6.2: the message asked for a notification when it is not delivered. */
export function wantsNegativeDelivery(msg: CpimMessage): boolean {
  if (imdnMessageId(msg) === undefined) return false;
  return cpimHeaders(msg, "Disposition-Notification", IMDN_URN).some((v) =>
    v.split(",").some((d) => d.trim().toLowerCase() === "negative-delivery"),
  );
}

/**
 * RFC 5438 7.2.1.1 / 7.2.1.2: the "failed" delivery notification for `msg`,
 * from `reporter` (the group, on whose behalf the PF could not deliver) to
 * the message's sender. Undefined when `msg` asked for none.
 */
export function negativeDeliveryNotification(msg: CpimMessage, reporter: string, now: Date): Buffer | undefined {
  const aboutId = imdnMessageId(msg);
  if (aboutId === undefined || !wantsNegativeDelivery(msg)) return undefined;
  const sender = addressUri(cpimHeader(msg, "From")) ?? "sip:anonymous@anonymous.invalid";
  const recipient = addressUri(cpimHeader(msg, "To"));
  const original = cpimHeader(msg, "DateTime");
  const xml = buildDeliveryNotification({
    messageId: aboutId,
    datetime: original ?? now.toISOString(),
    ...(recipient ? { recipientUri: recipient } : {}),
    status: "failed",
  });
  const content = Buffer.from(xml, "utf8");
  const head = [
    `From: <${reporter}>`,
    `To: <${sender}>`,
    "NS: imdn <urn:ietf:params:imdn>",
    `imdn.Message-ID: ${randomBytes(12).toString("hex")}`,
    `DateTime: ${now.toISOString()}`,
    "",
    "Content-Type: message/imdn+xml",
    "Content-Disposition: notification",
    `Content-Length: ${content.length}`,
    "",
    "",
  ].join("\r\n");
  return Buffer.concat([Buffer.from(head, "utf8"), content]);
}
