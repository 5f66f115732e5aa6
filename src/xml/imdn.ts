// RFC 5438 7.2.1.1 delivery notification document (message/imdn+xml): the
// PF writes only the "failed" one (RJ-4). Built as text with every value
// escaped (src/xml/parse.ts escapeXml): no XML library needed to write it.
import { escapeXml } from "./parse.js";

export interface DeliveryNotification {
  /** imdn.Message-ID of the message it is about. */
  messageId: string;
  /** DateTime of that message (RFC 5438 7.2.1.1 <datetime>). */
  datetime: string;
  /** Its intended recipient, when known. */
  recipientUri?: string;
  status: "delivered" | "failed";
}

export function buildDeliveryNotification(n: DeliveryNotification): string {
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<imdn xmlns="urn:ietf:params:xml:ns:imdn">',
    `<message-id>${escapeXml(n.messageId)}</message-id>`,
    `<datetime>${escapeXml(n.datetime)}</datetime>`,
    ...(n.recipientUri ? [`<recipient-uri>${escapeXml(n.recipientUri)}</recipient-uri>`] : []),
    `<delivery-notification><status><${n.status}/></status></delivery-notification>`,
    "</imdn>",
  ].join("\n");
}
