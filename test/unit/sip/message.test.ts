import assert from "node:assert/strict";
import { test } from "node:test";
import { header, headerValues, parseSipMessage, splitCommaList } from "../../../src/sip/message.js";
import { bodyParts, replaceBodyPart } from "../../../src/sip/multipart.js";
import { inviteFromFocus } from "../../fixtures/sip.js";

test("compact forms, folding and case-insensitive names (RFC 3261 7.3)", () => {
  const m = parseSipMessage(
    Buffer.from('BYE sip:a@b SIP/2.0\r\ni: abc\r\nf: <sip:x@y>;tag=1\r\nREASON: SIP;cause=410\r\n ;text="Gone"\r\nb: <sip:r@y>\r\n\r\n'),
  );
  assert.equal(m.method, "BYE");
  assert.equal(header(m, "call-id"), "abc");
  assert.equal(header(m, "Reason"), 'SIP;cause=410 ;text="Gone"');
  assert.equal(header(m, "referred-by"), "<sip:r@y>");
});

test("status lines and bare-LF messages", () => {
  const m = parseSipMessage(Buffer.from("SIP/2.0 200 OK\nCSeq: 1 INVITE\n\nbody"));
  assert.equal(m.kind, "response");
  assert.equal(m.statusCode, 200);
  assert.equal(m.body.toString(), "body");
});

test("garbage start lines and empty messages are refused with CPM_ERR_BAD_SIP", () => {
  for (const raw of ["", "hello world\r\n\r\n", "\u0000\u0001"]) {
    assert.throws(
      () => parseSipMessage(Buffer.from(raw)),
      (e: Error & { code?: string }) => e.code === "CPM_ERR_BAD_SIP",
    );
  }
});

test("comma lists respect quotes and angle brackets", () => {
  assert.deepEqual(splitCommaList('"a,b" <sip:x@y;p=1,2>, SIP;cause=200'), ['"a,b" <sip:x@y;p=1,2>', "SIP;cause=200"]);
});

test("multipart/mixed INVITE body splits into SDP and resource-lists", () => {
  const m = parseSipMessage(inviteFromFocus());
  const parts = bodyParts(header(m, "content-type"), m.body);
  assert.deepEqual(
    parts.map((p) => p.contentType),
    ["application/sdp", "application/resource-lists+xml"],
  );
  assert.match(parts[0]?.body.toString() ?? "", /^v=0\r\n[\s\S]*a=sendrecv\r\n$/);
  assert.equal(headerValues(m, "contact").length, 1);
});

test("multipart without boundary or closing delimiter is an error", () => {
  assert.throws(() => bodyParts("multipart/mixed", Buffer.from("x")));
  assert.throws(() => bodyParts("multipart/mixed;boundary=b", Buffer.from("--b\r\nContent-Type: a/b\r\n\r\nxx")));
});

test("SDP anchoring: replaceBodyPart swaps the SDP part of a multipart body and keeps the rest byte for byte", () => {
  const body = Buffer.from(
    "--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\nold\r\n--b\r\nContent-Type: text/plain\r\n\r\nkeep\r\n--b--\r\n",
  );
  const out = replaceBodyPart("multipart/mixed;boundary=b", body, "application/sdp", Buffer.from("v=0\r\nnew\r\n"));
  assert.equal(
    out?.toString(),
    "--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\nnew\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nkeep\r\n--b--\r\n",
  );
  assert.equal(replaceBodyPart("application/sdp", Buffer.from("v=0\r\n"), "application/sdp", Buffer.from("x"))?.toString(), "x");
  assert.equal(replaceBodyPart("text/plain", Buffer.from("hi"), "application/sdp", Buffer.from("x")), undefined);
});
