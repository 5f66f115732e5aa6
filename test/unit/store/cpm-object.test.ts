import assert from "node:assert/strict";
import { test } from "node:test";
import { CpmError } from "../../../src/errors/catalogue.js";
import { buildCpmObject, type CpmObjectInput, encodeSubject, newMessageId, rfc5322Date } from "../../../src/store/cpm-object.js";

const base: CpmObjectInput = {
  contentType: "application/group-state-object+xml",
  from: "sip:anonymous@anonymous.invalid",
  to: "tel:+33612345678",
  date: new Date(Date.UTC(2016, 5, 14, 10, 9, 49)),
  conversationId: "conv-7f3a",
  contributionId: "c6cca468b4ade657694b9e75baeb9e93",
  imdnMessageId: "imdn-1",
  messageId: "0b9f6c1e@cpm-pf",
  direction: "received",
  body: '<?xml version="1.0" encoding="UTF-8"?>\n<groupstate timestamp="2016-06-14T12:09:49+02:00"/>\n',
};

function split(raw: Buffer): { headers: Map<string, string>; head: string; body: Buffer } {
  const sep = raw.indexOf("\r\n\r\n");
  assert.ok(sep > 0, "header/body separator");
  const head = raw.subarray(0, sep).toString("utf8");
  const headers = new Map<string, string>();
  for (const line of head.replace(/\r\n[ \t]/g, " ").split("\r\n")) {
    const i = line.indexOf(":");
    headers.set(line.slice(0, i), line.slice(i + 2));
  }
  return { headers, head, body: raw.subarray(sep + 4) };
}

test("all CPM headers are present with the right values", () => {
  const { headers, body } = split(buildCpmObject({ ...base, subject: "Weekend trip" }));
  assert.deepEqual(
    [...headers.keys()],
    [
      "Date",
      "From",
      "To",
      "Message-ID",
      "Subject",
      "MIME-Version",
      "Content-Type",
      "Content-Transfer-Encoding",
      "Conversation-ID",
      "Contribution-ID",
      "IMDN-Message-ID",
      "Message-Direction",
    ],
  );
  assert.equal(headers.get("Date"), "Tue, 14 Jun 2016 10:09:49 +0000");
  assert.equal(headers.get("From"), "sip:anonymous@anonymous.invalid");
  assert.equal(headers.get("To"), "tel:+33612345678");
  assert.equal(headers.get("Message-ID"), "<0b9f6c1e@cpm-pf>");
  assert.equal(headers.get("Subject"), "Weekend trip");
  assert.equal(headers.get("MIME-Version"), "1.0");
  assert.equal(headers.get("Content-Type"), "application/group-state-object+xml");
  assert.equal(headers.get("Content-Transfer-Encoding"), "8bit");
  assert.equal(headers.get("Conversation-ID"), "conv-7f3a");
  assert.equal(headers.get("Contribution-ID"), "c6cca468b4ade657694b9e75baeb9e93");
  assert.equal(headers.get("IMDN-Message-ID"), "imdn-1");
  assert.equal(headers.get("Message-Direction"), "received");
  assert.equal(body.toString("utf8"), '<?xml version="1.0" encoding="UTF-8"?>\r\n<groupstate timestamp="2016-06-14T12:09:49+02:00"/>\r\n');
});

test("optional Subject and Message-Direction are left out when not given; bracketed Message-ID kept once", () => {
  const { headers } = split(buildCpmObject({ ...base, direction: undefined, messageId: "<x@y>" }));
  assert.equal(headers.has("Subject"), false);
  assert.equal(headers.has("Message-Direction"), false);
  assert.equal(headers.get("Message-ID"), "<x@y>");
});

test("every line ends in CRLF, no bare CR or LF anywhere", () => {
  const raw = buildCpmObject({ ...base, subject: "Ünïcödé ".repeat(20), body: Buffer.from("a\nb\rc\r\nd\n\n") });
  const text = raw.toString("latin1");
  assert.equal(/\r(?!\n)|(?<!\r)\n/.test(text), false);
  assert.ok(text.endsWith("a\r\nb\r\nc\r\nd\r\n\r\n"));
  for (const line of text.split("\r\n")) assert.ok(line.length <= 998);
});

test("non-ASCII Subject is RFC 2047 encoded and decodes back", () => {
  const subject = "Sortie à la plage 🏖️ ".repeat(6).trim();
  const encoded = encodeSubject(subject);
  assert.match(encoded, /^[\x20-\x7e\r\n]+$/);
  const words = encoded.split("\r\n ");
  let decoded = Buffer.alloc(0);
  for (const w of words) {
    assert.ok(w.length <= 75, `encoded-word too long: ${w.length}`);
    const m = /^=\?UTF-8\?B\?([A-Za-z0-9+/=]+)\?=$/.exec(w);
    assert.ok(m, w);
    const bytes = Buffer.from(m[1] as string, "base64");
    assert.equal(bytes.toString("utf8"), new TextDecoder("utf-8", { fatal: true }).decode(bytes), "whole characters per word");
    decoded = Buffer.concat([decoded, bytes]);
  }
  assert.equal(decoded.toString("utf8"), subject);
  assert.equal(encodeSubject("plain"), "plain");
  assert.match(encodeSubject("looks =?like?= a word"), /^=\?UTF-8\?B\?/);
});

test("header injection through any header value is rejected", () => {
  const fields = ["from", "to", "conversationId", "contributionId", "imdnMessageId", "messageId", "contentType", "subject"] as const;
  for (const f of fields) {
    for (const evil of ["x\r\nBcc: victim@example.com", "x\nX-Evil: 1", "x\rX-Evil: 1", "x\0y"]) {
      assert.throws(
        () => buildCpmObject({ ...base, [f]: evil }),
        (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_BAD_REQUEST",
        `${f} with ${JSON.stringify(evil)}`,
      );
    }
  }
});

test("invalid values are rejected", () => {
  const isBad = (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_BAD_REQUEST";
  assert.throws(() => buildCpmObject({ ...base, date: new Date(Number.NaN) }), isBad);
  assert.throws(() => buildCpmObject({ ...base, messageId: "no-at-sign" }), isBad);
  assert.throws(() => buildCpmObject({ ...base, messageId: "a b@c" }), isBad);
  assert.throws(() => buildCpmObject({ ...base, conversationId: "" }), isBad);
  assert.throws(() => buildCpmObject({ ...base, conversationId: "x".repeat(2000) }), isBad);
  assert.throws(() => buildCpmObject({ ...base, direction: "sideways" as "sent" }), isBad);
});

test("newMessageId is unique and well-formed", () => {
  const a = newMessageId("pf.example.net");
  const b = newMessageId("pf.example.net");
  assert.notEqual(a, b);
  assert.match(a, /^[0-9a-f-]{36}@pf\.example\.net$/);
  assert.throws(() => newMessageId("bad domain\r\n"), CpmError);
  assert.equal(rfc5322Date(new Date(Date.UTC(2026, 0, 5, 1, 2, 3))), "Mon, 05 Jan 2026 01:02:03 +0000");
});

test("IMDN-Message-ID is left out when not given; base64 transfer encoding keeps any bytes", () => {
  const { headers } = split(buildCpmObject({ ...base, imdnMessageId: undefined }));
  assert.equal(headers.has("IMDN-Message-ID"), false);
  const bytes = Buffer.from([0x00, 0x0a, 0x0d, 0xff, ...Buffer.alloc(200, 0x41)]);
  const raw = buildCpmObject({ ...base, transferEncoding: "base64", body: bytes });
  const { headers: h, body } = split(raw);
  assert.equal(h.get("Content-Transfer-Encoding"), "base64");
  for (const line of body.toString("ascii").split("\r\n")) assert.ok(line.length <= 76);
  assert.deepEqual(Buffer.from(body.toString("ascii").replace(/\r\n/g, ""), "base64"), bytes);
  assert.throws(() => buildCpmObject({ ...base, transferEncoding: "7bit" as "8bit" }), CpmError);
});
