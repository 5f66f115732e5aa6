import assert from "node:assert/strict";
import { test } from "node:test";
import { CpmError } from "../../../src/errors/catalogue.js";
import type { MsrpRequest } from "../../../src/msrp/frame.js";
import { alnumEntropyBits, newMessageId, newSessionId, newTransactionId } from "../../../src/msrp/ids.js";
import { MsrpParser } from "../../../src/msrp/parser.js";
import { firstEndLine, makeResponse, serializeFrame } from "../../../src/msrp/serializer.js";
import { parseMsrpUri } from "../../../src/msrp/uri.js";
import { BASIC_200, BASIC_SEND } from "./rfc-examples.js";

const alice = parseMsrpUri("msrp://alicepc.example.com:7777/iau39soe2843z;tcp");
const relay = parseMsrpUri("msrp://relay.example.com:2855/r1;tcp");
const bob = parseMsrpUri("msrp://bob.example.com:8888/9di4eae923wzd;tcp");

function parseOne(bytes: Buffer) {
  const ev = new MsrpParser().push(bytes);
  assert.equal(ev.length, 1);
  return ev[0]?.type === "frame" ? ev[0].frame : assert.fail(JSON.stringify(ev));
}

test("RFC 4975 order: To-Path, From-Path first, other headers, MIME headers, Content-Type last", () => {
  const req: MsrpRequest = {
    kind: "request",
    method: "SEND",
    transactionId: "abcd1234",
    toPath: [bob],
    fromPath: [alice],
    headers: [
      { name: "Content-ID", value: "<x@y>" },
      { name: "X-Extra", value: "1" },
    ],
    contentType: "text/plain",
    failureReport: "partial",
    successReport: "yes",
    byteRange: { start: 1, end: 2, total: 2 },
    messageId: "m123",
    body: Buffer.from("hi"),
    continuation: "$",
  };
  const text = serializeFrame(req).toString();
  assert.equal(
    text,
    [
      "MSRP abcd1234 SEND",
      `To-Path: ${"msrp://bob.example.com:8888/9di4eae923wzd;tcp"}`,
      "From-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp",
      "Message-ID: m123",
      "Byte-Range: 1-2/2",
      "Success-Report: yes",
      "Failure-Report: partial",
      "X-Extra: 1",
      "Content-ID: <x@y>",
      "Content-Type: text/plain",
      "",
      "hi",
      "-------abcd1234$",
      "",
    ].join("\r\n"),
  );
  assert.deepEqual(parseOne(serializeFrame(req)), { ...req, headers: [req.headers[1], req.headers[0]] });
});

test("RFC 4975 7.2: the response to a SEND goes to the first From-Path URI, from our URI", () => {
  const viaRelay = { transactionId: "d93kswow", toPath: [bob], fromPath: [relay, alice] };
  const res = makeResponse(viaRelay, 200);
  assert.deepEqual(res.toPath, [relay]);
  assert.deepEqual(res.fromPath, [bob]);
  assert.equal(res.comment, "OK");
  const ours = parseMsrpUri("msrp://10.0.0.1:9999/9di4eae923wzd;tcp");
  assert.deepEqual(makeResponse(viaRelay, 481, { localUri: ours }).fromPath, [ours]);
  assert.equal(makeResponse(viaRelay, 481, { comment: null }).comment, undefined);
});

test("the RFC 4975 11.1 200 is what makeResponse builds for the 11.1 SEND", () => {
  const send = parseOne(BASIC_SEND);
  assert.equal(send.kind, "request");
  assert.equal(serializeFrame(makeResponse(send as MsrpRequest, 200)).toString(), BASIC_200.toString());
});

test("refuses frames that would not parse back", () => {
  const base: MsrpRequest = {
    kind: "request",
    method: "SEND",
    transactionId: "abcd",
    toPath: [bob],
    fromPath: [alice],
    headers: [],
    continuation: "$",
  };
  const bad: [string, MsrpRequest][] = [
    ["short tid", { ...base, transactionId: "abc" }],
    ["lower-case method", { ...base, method: "send" }],
    ["CRLF in a value", { ...base, headers: [{ name: "X", value: "a\r\nInjected: 1" }] }],
    ["typed header in headers", { ...base, headers: [{ name: "Message-ID", value: "x" }] }],
    ["body without Content-Type", { ...base, body: Buffer.from("x") }],
    ["body holding its own end-line", { ...base, contentType: "text/plain", body: Buffer.from("a\r\n-------abcd$\r\nb") }],
    ["no To-Path", { ...base, toPath: [] }],
  ];
  for (const [what, frame] of bad) assert.throws(() => serializeFrame(frame), CpmError, what);
  // Our tid in the body without a valid end-line around it is fine, and parses back.
  const ok = { ...base, contentType: "text/plain", body: Buffer.from("-------abcd$ and \r\n-------abcdX\r\n") };
  assert.deepEqual(parseOne(serializeFrame(ok)), ok);
});

test("firstEndLine finds the end-line the parser would", () => {
  assert.equal(firstEndLine(Buffer.from("xx\r\n-------abcd+\r\n"), "abcd"), 2);
  assert.equal(firstEndLine(Buffer.from("xx\r\n-------abcdX\r\n"), "abcd"), -1);
});

test("ids: CSPRNG, ident syntax, >= 80 bits for session-ids, tid avoids the body", () => {
  const ids = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const s = newSessionId();
    assert.match(s, /^[A-Za-z0-9]{20}$/);
    ids.add(s);
    assert.match(newTransactionId(), /^[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}$/);
    assert.match(newMessageId(), /^[A-Za-z0-9]{4,32}$/);
  }
  assert.equal(ids.size, 1000);
  assert.ok(alnumEntropyBits(newSessionId().length) >= 80);
  // Every character shows up: no bias towards a subset.
  const chars = new Set([...Array.from({ length: 200 }, newSessionId).join("")]);
  assert.equal(chars.size, 62);
});
