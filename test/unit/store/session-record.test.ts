// BYE-B8 (OMA CPM 8.5.2 Record CPM Session): the objects, without a store.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { RecordedMessage } from "../../../src/media/ports.js";
import { msrpIdOfStoredMessageId, parseStoredObject } from "../../../src/store/deferred-object.js";
import {
  buildRecordedMessageObject,
  buildSessionInfoObject,
  notRecordedBecause,
  SESSION_INFO_CONTENT_TYPE,
  sessionInfoXml,
} from "../../../src/store/session-record.js";
import { children, childText, parseXml } from "../../../src/xml/parse.js";
import { chatCpim, groupSession, imdnCpim, isComposingCpim } from "../../fixtures/cpim.js";

const session = groupSession;
const FOLDER = "Default/conv-7f3a/c6cca468b4ade657694b9e75baeb9e93";
const info = {
  startedAt: new Date(Date.UTC(2016, 5, 14, 10, 0, 0)),
  endedAt: new Date(Date.UTC(2016, 5, 14, 10, 30, 0)),
  participants: ["tel:+16135551210", "tel:+16135551211", 'sip:x&"y"@example.com'],
  subject: "Sortie à la plage",
};

test("BYE-B8: session-info object is multipart/related with one Application/X-CPM-Session part", () => {
  const built = buildSessionInfoObject(FOLDER, session, {
    ...info,
    sdp: "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nm=message 7394 TCP/MSRP *\r\n",
  });
  const obj = parseStoredObject(built.raw);
  assert.equal(obj.header("Content-Type"), SESSION_INFO_CONTENT_TYPE);
  assert.equal(SESSION_INFO_CONTENT_TYPE, 'multipart/related;boundary=cpm; type="Application/X-CPM-Session"');
  assert.equal(obj.header("From"), "tel:+33612345678");
  assert.equal(obj.header("To"), "sip:focus-7f3a@cf.example.net");
  assert.equal(obj.header("Date"), "Tue, 14 Jun 2016 10:00:00 +0000");
  assert.equal(obj.header("Conversation-ID"), "conv-7f3a");
  assert.equal(obj.header("Contribution-ID"), "c6cca468b4ade657694b9e75baeb9e93");
  assert.match(obj.header("Subject") ?? "", /^=\?UTF-8\?B\?/);
  assert.equal(msrpIdOfStoredMessageId(obj.header("Message-ID") ?? "")?.kind, "s");
  assert.equal(obj.header("IMDN-Message-ID"), built.messageId.split("@")[0]);
  const text = obj.body.toString("utf8");
  const parts = text.split("\r\n--cpm");
  assert.ok(text.startsWith("--cpm\r\nContent-Type: Application/X-CPM-Session\r\n"), text.slice(0, 60));
  assert.equal(parts.at(-1), "--\r\n");
  const xml = text.slice(text.indexOf("<?xml"), text.lastIndexOf("\r\n--cpm--"));
  const s = children(parseXml(xml), "session")[0];
  assert.equal(childText(s, "session-type"), "Group");
  assert.equal(childText(s, "invited-participants"), info.participants.join(";"));
  assert.match(childText(s, "sdp") ?? "", /m=message 7394 TCP\/MSRP/);
});

test("sessionInfoXml escapes participants and leaves <sdp> out when unknown", () => {
  const xml = sessionInfoXml({ ...info, participants: ["<a>"] });
  assert.ok(xml.includes("<invited-participants>&lt;a&gt;</invited-participants>"));
  assert.ok(!xml.includes("<sdp>"));
});

const msg = (over: Partial<RecordedMessage>): RecordedMessage => ({
  direction: "from-network",
  contentType: "message/cpim",
  body: chatCpim("hi", "imdn-9"),
  msrpMessageId: "Rn00001",
  at: new Date(Date.UTC(2016, 5, 14, 10, 5, 0)),
  ...over,
});

test("BYE-B8: a message from the network is a received message/cpim object to the served user", () => {
  const m = msg({});
  const obj = parseStoredObject(buildRecordedMessageObject(FOLDER, session, m).raw);
  assert.equal(obj.header("Content-Type"), "message/cpim");
  assert.equal(obj.header("Message-Direction"), "received");
  assert.equal(obj.header("From"), "tel:+16135551210");
  assert.equal(obj.header("To"), "tel:+33612345678");
  assert.equal(obj.header("IMDN-Message-ID"), "imdn-9");
  assert.equal(msrpIdOfStoredMessageId(obj.header("Message-ID") ?? "")?.kind, "rn");
  assert.deepEqual(obj.body, Buffer.from(m.body));
});

test("BYE-B8: a message from the client is a sent object to the focus", () => {
  const m = msg({ direction: "from-client", body: chatCpim("yo", "imdn-10", "tel:+33612345678") });
  const obj = parseStoredObject(buildRecordedMessageObject(FOLDER, session, m).raw);
  assert.equal(obj.header("Message-Direction"), "sent");
  assert.equal(obj.header("From"), "tel:+33612345678");
  assert.equal(obj.header("To"), "sip:focus-7f3a@cf.example.net");
  assert.equal(msrpIdOfStoredMessageId(obj.header("Message-ID") ?? "")?.kind, "rc");
  // same MSRP Message-ID in the other direction is another object
  assert.notEqual(
    buildRecordedMessageObject(FOLDER, session, m).messageId,
    buildRecordedMessageObject(FOLDER, session, { ...m, direction: "from-network" }).messageId,
  );
});

test("isComposing and non-CPIM bodies are not recorded; IMDNs are", () => {
  assert.match(notRecordedBecause(msg({ body: isComposingCpim() })) ?? "", /isComposing/);
  assert.match(notRecordedBecause(msg({ contentType: "text/plain", body: Buffer.from("x") })) ?? "", /not message\/cpim/);
  assert.equal(notRecordedBecause(msg({ body: imdnCpim("imdn-9", "n-1") })), undefined);
  assert.equal(notRecordedBecause(msg({})), undefined);
});
