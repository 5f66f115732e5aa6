// RJ-4: the PF's own negative delivery notification (src/cpim/notification.ts).
import assert from "node:assert/strict";
import { test } from "node:test";
import { contentHeader, cpimHeader, IMDN_URN, imdnMessageId, parseCpim } from "../../../src/cpim/cpim.js";
import { negativeDeliveryNotification, wantsNegativeDelivery } from "../../../src/cpim/notification.js";
import { children, childText, parseXml } from "../../../src/xml/parse.js";
import { chatCpim } from "../../fixtures/cpim.js";

const FOCUS = "sip:focus-7f3a@cf.example.net";
const NOW = new Date("2026-12-03T10:00:00Z");

test("RJ-4 RFC 5438 6.2: only a message that asked for negative-delivery gets the notification", () => {
  assert.equal(wantsNegativeDelivery(parseCpim(chatCpim("hi", "m1"))), false); // positive-delivery, display
  const asked = parseCpim(chatCpim("hi", "m1", "tel:+16135551200", "positive-delivery,Negative-Delivery"));
  assert.equal(wantsNegativeDelivery(asked), true);
  assert.equal(negativeDeliveryNotification(parseCpim(chatCpim("hi", "m1")), FOCUS, NOW), undefined);
});

test("RJ-4 RFC 5438 7.2.1.1: a 'failed' notification about the message, from the group to its sender, that a CPIM reader and an XML parser read back", () => {
  const original = parseCpim(chatCpim("hi", "id<&>1", "tel:+16135551200", "negative-delivery"));
  const out = negativeDeliveryNotification(original, FOCUS, NOW);
  assert.ok(out);
  const n = parseCpim(out);
  assert.equal(cpimHeader(n, "From"), `<${FOCUS}>`);
  assert.equal(cpimHeader(n, "To"), "<tel:+16135551200>");
  assert.notEqual(imdnMessageId(n), "id<&>1", "a notification has its own imdn.Message-ID");
  assert.ok(cpimHeader(n, "Message-ID", IMDN_URN));
  assert.equal(contentHeader(n, "Content-Type"), "message/imdn+xml");
  assert.equal(contentHeader(n, "Content-Disposition"), "notification");
  const imdn = children(parseXml(Buffer.from(n.content)), "imdn")[0];
  assert.equal(childText(imdn, "message-id"), "id<&>1", "escaped on the way out, the same id read back");
  assert.equal(childText(imdn, "datetime"), "2016-06-14T10:09:49Z", "the original message's DateTime");
  assert.match(Buffer.from(n.content).toString("utf8"), /<delivery-notification><status><failed\/><\/status><\/delivery-notification>/);
});
