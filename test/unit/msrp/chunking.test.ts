import assert from "node:assert/strict";
import { test } from "node:test";
import { chunkMessage, MessageChunker, makeEmptySend, Reassembler } from "../../../src/msrp/chunking.js";
import type { MsrpRequest } from "../../../src/msrp/frame.js";
import { MsrpParser } from "../../../src/msrp/parser.js";
import { serializeFrame } from "../../../src/msrp/serializer.js";
import { parseMsrpUri } from "../../../src/msrp/uri.js";
import { BASIC_SEND, CHUNK_1, CHUNK_2, OVERVIEW_SEND } from "./rfc-examples.js";

const to = [parseMsrpUri("msrp://bob.example.com:8888/bobsession;tcp")];
const from = [parseMsrpUri("msrp://alice.example.com:7777/alicesession;tcp")];

function parse(bytes: Buffer): MsrpRequest {
  const ev = new MsrpParser().push(bytes)[0];
  assert.ok(ev?.type === "frame" && ev.frame.kind === "request");
  return ev.frame;
}

test("sending: Byte-Range per chunk, + then $, one Message-ID, fresh tids", () => {
  const body = Buffer.from("0123456789");
  const chunks = chunkMessage({ body, contentType: "text/plain", successReport: "yes" }, to, from, 4);
  assert.equal(chunks.length, 3);
  assert.deepEqual(
    chunks.map((c) => [c.byteRange, c.continuation, c.body?.toString()]),
    [
      [{ start: 1, end: 4, total: 10 }, "+", "0123"],
      [{ start: 5, end: 8, total: 10 }, "+", "4567"],
      [{ start: 9, end: 10, total: 10 }, "$", "89"],
    ],
  );
  assert.equal(new Set(chunks.map((c) => c.messageId)).size, 1);
  assert.equal(new Set(chunks.map((c) => c.transactionId)).size, 3);
  assert.ok(chunks.every((c) => c.contentType === "text/plain" && c.successReport === "yes"));
  // Every chunk serializes and parses back.
  for (const c of chunks) assert.deepEqual(parse(serializeFrame(c)), c);
});

test("sending: an empty message is one chunk 1-0/0; the bind SEND has no body at all", () => {
  const [only, ...rest] = chunkMessage({ body: Buffer.alloc(0), contentType: "text/plain" }, to, from);
  assert.equal(rest.length, 0);
  assert.deepEqual(only?.byteRange, { start: 1, end: 0, total: 0 });
  assert.equal(only?.continuation, "$");
  const bind = makeEmptySend(to, from);
  assert.equal(bind.body, undefined);
  assert.equal(bind.contentType, undefined);
  assert.ok(serializeFrame(bind).toString().includes("Byte-Range: 1-0/0\r\n-------"));
});

test("sending: a 413 stops the rest of the message (RFC 4975 10.5)", () => {
  const c = new MessageChunker({ body: Buffer.alloc(10_000), contentType: "application/octet-stream" }, to, from, 1000);
  assert.ok(c.next());
  assert.ok(c.next());
  c.stop(413);
  assert.equal(c.next(), undefined);
  assert.equal(c.stoppedWith, 413);
  assert.ok(c.done);
});

test("receiving: the RFC 4975 chunked example reassembles to abcdEFGH", () => {
  const r = new Reassembler();
  const first = r.accept(parse(CHUNK_1));
  assert.deepEqual(first, { kind: "partial", messageId: "4564dpWd", receivedBytes: 4 });
  assert.equal(r.bufferedBytes, 4);
  const second = r.accept(parse(CHUNK_2));
  assert.ok(second.kind === "complete");
  assert.equal(second.message.body.toString(), "abcdEFGH");
  assert.deepEqual(second.message.byteRange, { start: 1, end: 8, total: 8 });
  assert.equal(second.message.chunks, 2);
  assert.equal(r.bufferedBytes, 0);
  assert.equal(r.messagesInFlight, 0);
});

test("receiving: out of order, interleaved with another message, overlapping resend", () => {
  const r = new Reassembler();
  const a = chunkMessage({ body: Buffer.from("AAAABBBBCC"), contentType: "text/plain", messageId: "msgA" }, to, from, 4);
  const b = chunkMessage({ body: Buffer.from("xyz"), contentType: "text/plain", messageId: "msgB" }, to, from, 2);
  const [a1, a2, a3] = a as [MsrpRequest, MsrpRequest, MsrpRequest];
  const [b1, b2] = b as [MsrpRequest, MsrpRequest];
  assert.equal(r.accept(a3).kind, "partial");
  assert.equal(r.accept(b1).kind, "partial");
  assert.equal(r.accept(a1).kind, "partial");
  assert.equal(r.accept(a1).kind, "partial"); // resent after a reconnect: overlaps
  const bDone = r.accept(b2);
  assert.ok(bDone.kind === "complete" && bDone.message.body.toString() === "xyz");
  const aDone = r.accept(a2);
  assert.ok(aDone.kind === "complete" && aDone.message.body.toString() === "AAAABBBBCC");
  assert.equal(r.bufferedBytes, 0);
});

test("receiving: whole message in one chunk; RFC examples whose Byte-Range counts the CRLF", () => {
  const r = new Reassembler();
  const basic = r.accept(parse(BASIC_SEND));
  assert.ok(basic.kind === "complete");
  assert.equal(basic.message.body.toString(), "Hi, I'm Alice!");
  assert.equal(basic.message.declaredTotal, 16);
  const overview = r.accept(parse(OVERVIEW_SEND));
  assert.ok(overview.kind === "complete" && overview.message.declaredTotal === 25 && overview.message.body.length === 23);
});

test("receiving: a # chunk aborts the message and drops what was collected", () => {
  const r = new Reassembler();
  const [c1, c2] = chunkMessage({ body: Buffer.from("12345678"), contentType: "text/plain" }, to, from, 4) as [MsrpRequest, MsrpRequest];
  assert.equal(r.accept(c1).kind, "partial");
  assert.equal(r.bufferedBytes, 4);
  assert.deepEqual(r.accept({ ...c2, continuation: "#" }), { kind: "aborted", messageId: c1.messageId });
  assert.equal(r.bufferedBytes, 0);
  assert.equal(r.messagesInFlight, 0);
});

test("receiving: maxMessageBytes gives 413 on the declared total, and later chunks get 413 until $ / #", () => {
  const r = new Reassembler({ maxMessageBytes: 8 });
  const chunks = chunkMessage({ body: Buffer.alloc(20, 0x41), contentType: "text/plain" }, to, from, 4);
  assert.deepEqual(r.accept(chunks[0] as MsrpRequest), {
    kind: "rejected",
    status: 413,
    reason: "message-too-large",
    messageId: chunks[0]?.messageId,
  });
  assert.equal(r.bufferedBytes, 0);
  // A sender that does not stop keeps getting 413 without anything being buffered.
  for (const c of chunks.slice(1, 4))
    assert.deepEqual(r.accept(c), { kind: "rejected", status: 413, reason: "stopped", messageId: c.messageId });
  assert.equal(r.bufferedBytes, 0);
  // Its last chunk (or its #) ends the refusal.
  assert.equal(r.accept({ ...(chunks[4] as MsrpRequest), continuation: "#" }).kind, "rejected");
  assert.equal(r.accept({ ...(chunks[4] as MsrpRequest), continuation: "#" }).kind, "aborted");
});

test("receiving: maxMessageBytes also holds when the total is unknown (*)", () => {
  const r = new Reassembler({ maxMessageBytes: 8 });
  const c = chunkMessage({ body: Buffer.alloc(12, 0x41), contentType: "text/plain" }, to, from, 4).map((x) => ({
    ...x,
    byteRange: { start: x.byteRange?.start ?? 1, end: "*" as const, total: "*" as const },
  }));
  assert.equal(r.accept(c[0] as MsrpRequest).kind, "partial");
  assert.equal(r.accept(c[1] as MsrpRequest).kind, "partial");
  const third = r.accept(c[2] as MsrpRequest);
  assert.ok(third.kind === "rejected" && third.status === 413);
  assert.equal(r.bufferedBytes, 0);
});

test("receiving: maxMessagesInFlight refuses a new message with 413 and keeps the others", () => {
  const r = new Reassembler({ maxMessagesInFlight: 2 });
  const first = (id: string) =>
    chunkMessage({ body: Buffer.from("abcdef"), contentType: "text/plain", messageId: id }, to, from, 3)[0] as MsrpRequest;
  assert.equal(r.accept(first("m1")).kind, "partial");
  assert.equal(r.accept(first("m2")).kind, "partial");
  const third = r.accept(first("m3"));
  assert.ok(third.kind === "rejected" && third.status === 413 && third.reason === "too-many-in-flight");
  assert.equal(r.messagesInFlight, 2);
  // Single-chunk messages need no slot.
  assert.equal(r.accept(parse(BASIC_SEND)).kind, "complete");
});

test("receiving: SEND without Message-ID but with a body is a 400; without a body it is an empty SEND", () => {
  const r = new Reassembler();
  const c = chunkMessage({ body: Buffer.from("x"), contentType: "text/plain" }, to, from)[0] as MsrpRequest;
  const { messageId: _drop, ...noId } = c;
  assert.deepEqual(r.accept(noId), { kind: "rejected", status: 400, reason: "no-message-id" });
  assert.deepEqual(r.accept(makeEmptySend(to, from)), { kind: "empty" });
});
