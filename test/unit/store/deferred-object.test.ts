import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { CpmError } from "../../../src/errors/catalogue.js";
import type { DeferredItem } from "../../../src/media/ports.js";
import {
  buildDeferredObject,
  deferredItemFromObject,
  folderTag,
  kindOf,
  msrpIdOfStoredMessageId,
  parseStoredObject,
  storedMessageId,
  transferEncodingFor,
} from "../../../src/store/deferred-object.js";
import { chatCpim, groupSession } from "../../fixtures/cpim.js";

const session = groupSession;
const FOLDER = "Deferred/conv-7f3a/c6cca468b4ade657694b9e75baeb9e93";
const crlf = (s: string) => Buffer.from(s.replace(/\n/g, "\r\n"), "utf8");

const item = (over: Partial<DeferredItem> = {}): DeferredItem => ({
  kind: "message",
  contentType: "message/cpim",
  body: chatCpim("Hello"),
  msrpMessageId: "Ms7fZ1x9aQ",
  receivedAt: new Date(Date.UTC(2016, 5, 14, 10, 9, 49)),
  ...over,
});

test("storedMessageId: derived from the MSRP Message-ID and the folder, and reversible", () => {
  const id = storedMessageId("d", FOLDER, "Ms7fZ1x9aQ");
  assert.equal(id, `d.${Buffer.from("Ms7fZ1x9aQ").toString("hex")}.${folderTag(FOLDER)}@cpm-pf.invalid`);
  assert.deepEqual(msrpIdOfStoredMessageId(`<${id}>`), { kind: "d", msrpMessageId: "Ms7fZ1x9aQ", tag: folderTag(FOLDER) });
  assert.equal(msrpIdOfStoredMessageId("<abc@cpm-pf>"), undefined);
  assert.notEqual(storedMessageId("d", "Deferred/a/b", "x1234"), storedMessageId("d", "Deferred/a/c", "x1234"));
  assert.throws(() => storedMessageId("d", FOLDER, ""), CpmError);
  assert.throws(() => storedMessageId("d", FOLDER, "x".repeat(300)), CpmError);
});

test("property: ids differing only in case stay distinct, and no id is a substring of another (IMAP SEARCH is case-insensitive substring)", () => {
  const ident = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9.+%=-]{3,31}$/);
  fc.assert(
    fc.property(ident, ident, (a, b) => {
      fc.pre(a !== b);
      const x = storedMessageId("d", FOLDER, a).toLowerCase();
      const y = storedMessageId("d", FOLDER, b).toLowerCase();
      assert.ok(!x.includes(y) && !y.includes(x), `${a} vs ${b}`);
      assert.equal(msrpIdOfStoredMessageId(storedMessageId("d", FOLDER, a))?.msrpMessageId, a);
    }),
    { numRuns: 500 },
  );
  assert.notEqual(storedMessageId("d", FOLDER, "AbCd").toLowerCase(), storedMessageId("d", FOLDER, "abcd").toLowerCase());
});

test("transferEncodingFor: 8bit only when the bytes survive as they are", () => {
  assert.equal(transferEncodingFor(crlf("a\nb\n")), "8bit");
  assert.equal(transferEncodingFor(Buffer.from("no newline at all")), "8bit");
  assert.equal(transferEncodingFor(Buffer.from("bare\nLF")), "base64");
  assert.equal(transferEncodingFor(Buffer.from("bare\rCR")), "base64");
  assert.equal(transferEncodingFor(Buffer.from([0x61, 0x00, 0x62])), "base64");
  assert.equal(transferEncodingFor(Buffer.from(`${"x".repeat(999)}\r\n`)), "base64");
  assert.equal(transferEncodingFor(Buffer.from(`${"x".repeat(998)}\r\n`)), "8bit");
});

test("a chat message object: message/cpim, CPIM From, served user To, IMDN-Message-ID, body unchanged", () => {
  const it = item();
  const built = buildDeferredObject(FOLDER, session, it);
  const obj = parseStoredObject(built.raw);
  assert.equal(
    obj.fields.map((f) => f.name).join(" "),
    "Date From To Message-ID MIME-Version Content-Type Content-Transfer-Encoding Conversation-ID Contribution-ID IMDN-Message-ID Message-Direction",
  );
  assert.equal(obj.header("Date"), "Tue, 14 Jun 2016 10:09:49 +0000");
  assert.equal(obj.header("From"), "tel:+16135551210");
  assert.equal(obj.header("To"), "tel:+33612345678");
  assert.equal(obj.header("Message-ID"), `<${built.messageId}>`);
  assert.equal(obj.header("Content-Type"), "message/cpim");
  assert.equal(obj.header("Content-Transfer-Encoding"), "8bit");
  assert.equal(obj.header("Conversation-ID"), "conv-7f3a");
  assert.equal(obj.header("Contribution-ID"), "c6cca468b4ade657694b9e75baeb9e93");
  assert.equal(obj.header("IMDN-Message-ID"), "imdn-1");
  assert.equal(obj.header("Message-Direction"), "received");
  assert.deepEqual(obj.body, Buffer.from(it.body));
  // and it reads back as the same item
  const back = deferredItemFromObject(built.raw);
  assert.equal(back.kind, "message");
  assert.equal(back.contentType, "message/cpim");
  assert.equal(back.msrpMessageId, "Ms7fZ1x9aQ");
  assert.deepEqual(Buffer.from(back.body), Buffer.from(it.body));
  assert.equal(back.receivedAt.getTime(), it.receivedAt.getTime());
  assert.equal(back.imdnMessageId, "imdn-1");
});

test("an IMDN object is message/cpim wrapping message/imdn+xml and reads back as kind imdn", () => {
  const body = crlf(
    'From: <tel:+16135551210>\nTo: <sip:anonymous@anonymous.invalid>\nNS: imdn <urn:ietf:params:imdn>\nimdn.Message-ID: n-77\nContent-Disposition: notification\n\nContent-Type: message/imdn+xml\n\n<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>imdn-1</message-id><delivery-notification><status><delivered/></status></delivery-notification></imdn>',
  );
  const built = buildDeferredObject(FOLDER, session, item({ kind: "imdn", body, msrpMessageId: "imdn77" }));
  const obj = parseStoredObject(built.raw);
  assert.equal(obj.header("Content-Type"), "message/cpim");
  assert.equal(obj.header("IMDN-Message-ID"), "n-77");
  assert.equal(deferredItemFromObject(built.raw).kind, "imdn");
});

test("a GSO is stored as application/group-state-object+xml, unwrapped from CPIM, From anonymous", () => {
  const xml =
    '<?xml version="1.0" encoding="UTF-8"?>\r\n<groupstate timestamp="2016-06-14T12:09:49+02:00" lastfocussessionid="sip:f@x" group-type="Closed"/>';
  const wrapped = Buffer.concat([
    crlf("From: <sip:f@x>\nNS: imdn <urn:ietf:params:imdn>\nimdn.Message-ID: g-1\n\nContent-Type: application/group-state-object+xml\n\n"),
    Buffer.from(xml),
  ]);
  const built = buildDeferredObject(FOLDER, session, item({ kind: "gso", body: wrapped, msrpMessageId: "gso0001" }));
  const obj = parseStoredObject(built.raw);
  assert.equal(obj.header("Content-Type"), "application/group-state-object+xml");
  assert.equal(obj.header("From"), "sip:anonymous@anonymous.invalid");
  assert.equal(obj.header("IMDN-Message-ID"), "g-1");
  assert.equal(obj.body.toString("utf8"), xml);
  const back = deferredItemFromObject(built.raw);
  assert.equal(back.kind, "gso");
  assert.equal(back.contentType, "application/group-state-object+xml");
  // an unwrapped GSO body stays as it is
  const plain = buildDeferredObject(
    FOLDER,
    session,
    item({ kind: "gso", contentType: "application/group-state-object+xml", body: Buffer.from(xml) }),
  );
  assert.equal(parseStoredObject(plain.raw).body.toString("utf8"), xml);
  assert.equal(parseStoredObject(plain.raw).header("IMDN-Message-ID"), undefined);
});

test("malformed CPIM is still stored byte for byte (From falls back to the focus, no IMDN-Message-ID)", () => {
  const body = Buffer.from("garbage without any header block", "utf8");
  const built = buildDeferredObject(FOLDER, session, item({ body }));
  assert.equal(built.cpim.ok, false);
  const obj = parseStoredObject(built.raw);
  assert.equal(obj.header("From"), session.focus);
  assert.equal(obj.header("IMDN-Message-ID"), undefined);
  assert.deepEqual(obj.body, body);
});

test("bodies 8bit cannot carry (bare LF, NUL, long lines) are base64 and read back exactly", () => {
  const body = Buffer.concat([chatCpim("x"), Buffer.from([0x00, 0x0a, 0x0d, 0xff]), Buffer.alloc(3000, 0x41)]);
  const built = buildDeferredObject(FOLDER, session, item({ body }));
  const obj = parseStoredObject(built.raw);
  assert.equal(obj.header("Content-Transfer-Encoding"), "base64");
  for (const line of built.raw.toString("latin1").split("\r\n")) assert.ok(line.length <= 998);
  assert.deepEqual(Buffer.from(deferredItemFromObject(built.raw).body), body);
});

test("header injection through session fields is refused; objects of others are not read as deferred items", () => {
  assert.throws(() => buildDeferredObject(FOLDER, { ...session, conversationId: "a\r\nBcc: x" }, item()), CpmError);
  assert.throws(() => buildDeferredObject(FOLDER, session, item({ msrpMessageId: "" })), CpmError);
  const foreign = crlf("Message-ID: <x@y>\nContent-Type: text/plain\n\nhi");
  assert.throws(() => deferredItemFromObject(foreign), /not a deferred item/);
  assert.throws(() => parseStoredObject(Buffer.from("no header end")), CpmError);
  assert.throws(() => parseStoredObject(crlf("Content-Transfer-Encoding: base64\n\n***")), /bad base64/);
  assert.throws(() => parseStoredObject(crlf("Content-Transfer-Encoding: quoted-printable\n\nx")), /unsupported/);
});

test("kindOf follows the CPIM payload type", () => {
  assert.equal(kindOf("message/cpim", chatCpim("x")), "message");
  assert.equal(kindOf("Application/Group-State-Object+XML", Buffer.from("<groupstate/>")), "gso");
  assert.equal(kindOf("text/plain", Buffer.from("x")), "message");
});
