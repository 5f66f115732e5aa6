import assert from "node:assert/strict";
import { test } from "node:test";
import { classifyPayload, cpimHeaderBlocks, mediaType } from "../../../src/media/classify.js";

function cpim(contentType: string, extra: string[] = [], eol = "\r\n"): Buffer {
  const lines = ["From: <sip:a@example.net>", "To: <sip:anonymous@anonymous.invalid>", "NS: imdn <urn:ietf:params:imdn>", ""];
  lines.push(`Content-Type: ${contentType}`, ...extra, "", "<body/>");
  return Buffer.from(lines.join(eol));
}

test("media plane classify: the CPIM payload's Content-Type decides message / imdn / gso / isComposing", () => {
  assert.equal(classifyPayload("message/cpim", cpim("text/plain;charset=UTF-8")), "message");
  assert.equal(classifyPayload("message/cpim", cpim("message/imdn+xml", ["Content-Disposition: notification"])), "imdn");
  assert.equal(classifyPayload("Message/CPIM", cpim("Application/Group-State-Object+xml")), "gso");
  assert.equal(classifyPayload("message/cpim", cpim("application/im-iscomposing+xml")), "isComposing");
  assert.equal(classifyPayload("message/cpim", cpim("application/vnd.gsma.rcs-ft-http+xml")), "message");
  // RFC 5438 7.1.1: a notification without the IMDN content type is still an IMDN
  assert.equal(classifyPayload("message/cpim", cpim("application/xml", ["Content-Disposition: notification"])), "imdn");
  // bare LF line ends, as some clients send
  assert.equal(classifyPayload("message/cpim", cpim("message/imdn+xml", [], "\n")), "imdn");
});

test("media plane classify: unwrapped payloads by the MSRP Content-Type; anything unknown is a message", () => {
  assert.equal(classifyPayload("application/group-state-object+xml", Buffer.from("<groupstate/>")), "gso");
  assert.equal(classifyPayload("application/im-iscomposing+xml; charset=utf-8", Buffer.from("<isComposing/>")), "isComposing");
  assert.equal(classifyPayload("message/imdn+xml", Buffer.from("<imdn/>")), "imdn");
  assert.equal(classifyPayload("text/plain", Buffer.from("hi")), "message");
  assert.equal(classifyPayload(undefined, Buffer.alloc(0)), "message");
  // a CPIM body with no header blocks at all
  assert.equal(classifyPayload("message/cpim", Buffer.from("garbage without blank lines")), "message");
});

test("media plane classify: only the head of a large body is read", () => {
  const huge = Buffer.concat([cpim("message/imdn+xml"), Buffer.alloc(5 * 1024 * 1024, 0x41)]);
  assert.equal(classifyPayload("message/cpim", huge), "imdn");
  const blocks = cpimHeaderBlocks(Buffer.from("A: 1\r\nB: 2\r\n  continued\r\n\r\nContent-Type: text/plain\r\n\r\nbody"));
  assert.equal(blocks[0]?.get("b"), "2 continued");
  assert.equal(blocks[1]?.get("content-type"), "text/plain");
  assert.equal(mediaType(" Text/Plain ; charset=utf-8"), "text/plain");
});
