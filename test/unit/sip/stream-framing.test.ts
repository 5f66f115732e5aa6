// SIP framing on a stream transport (RFC 3261 18.3, 7.5; RFC 5626 4.4.1 keep-alives).
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { type SipStreamEvent, SipStreamFramer } from "../../../src/sip/stream-framing.js";

function message(method: string, body = "", extra: string[] = []): string {
  return [
    `${method} sip:pf@127.0.0.1:5097 SIP/2.0`,
    "Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK1",
    "Call-ID: c1",
    `CSeq: 1 ${method}`,
    ...extra,
    `Content-Length: ${Buffer.byteLength(body)}`,
    "",
    body,
  ].join("\r\n");
}

const INVITE = message("INVITE", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=é\r\n");
const BYE = message("BYE");

/** Pushes `chunks` in order; all events. */
function feed(framer: SipStreamFramer, chunks: (string | Buffer)[]): SipStreamEvent[] {
  return chunks.flatMap((c) => framer.push(typeof c === "string" ? Buffer.from(c, "utf8") : c));
}

const texts = (events: SipStreamEvent[]): string[] =>
  events.map((e) => (e.type === "message" ? e.bytes.toString("utf8") : e.type === "ping" ? "<ping>" : `<error ${e.reason}>`));

test("a message split at every byte boundary comes out once, whole, from the push that completed it", () => {
  const bytes = Buffer.from(INVITE, "utf8");
  for (let cut = 1; cut < bytes.length; cut++) {
    const framer = new SipStreamFramer();
    assert.deepEqual(framer.push(bytes.subarray(0, cut)), [], `nothing before the end (cut at ${cut})`);
    assert.deepEqual(texts(framer.push(bytes.subarray(cut))), [INVITE]);
    assert.equal(framer.buffered, 0);
  }
  const oneByOne = new SipStreamFramer();
  const events = [...bytes].flatMap((b) => oneByOne.push(Buffer.from([b])));
  assert.deepEqual(texts(events), [INVITE]);
});

test("several messages in one chunk, in order, the body bytes (not characters) counted", () => {
  const framer = new SipStreamFramer();
  assert.deepEqual(texts(feed(framer, [INVITE + BYE + INVITE])), [INVITE, BYE, INVITE]);
});

test("any chunking of a stream of messages and keep-alives gives the same events", () => {
  const stream = Buffer.from(`\r\n\r\n${INVITE}\r\n${BYE}\r\n\r\n${INVITE}`, "utf8");
  const whole = texts(new SipStreamFramer().push(stream));
  assert.deepEqual(whole, ["<ping>", INVITE, BYE, "<ping>", INVITE]);
  fc.assert(
    fc.property(fc.uniqueArray(fc.integer({ min: 1, max: stream.length - 1 }), { maxLength: 12 }), (cuts) => {
      const at = [0, ...cuts.sort((a, b) => a - b), stream.length];
      const framer = new SipStreamFramer();
      const events = at.slice(1).flatMap((end, i) => framer.push(stream.subarray(at[i], end)));
      assert.deepEqual(texts(events), whole);
    }),
  );
});

test("RFC 5626 4.4.1: CRLFCRLF is a ping, even split across chunks; a lone CRLF (pong) and CRLFs before a start line (RFC 3261 7.5) are skipped", () => {
  const framer = new SipStreamFramer();
  assert.deepEqual(texts(feed(framer, ["\r\n\r\n"])), ["<ping>"]);
  assert.deepEqual(texts(feed(framer, ["\r", "\n\r", "\n"])), ["<ping>"]);
  assert.deepEqual(texts(feed(framer, ["\r\n"])), [], "a pong: nothing to do");
  assert.deepEqual(texts(feed(framer, [BYE])), [BYE], "the pong's CRLF before a start line is skipped");
  assert.deepEqual(texts(feed(framer, [`\r\n${BYE}`])), [BYE]);
  assert.equal(framer.buffered, 0);
});

test("Content-Length: the compact form l counts; a missing one (mandatory on a stream, RFC 3261 18.3) is an error event", () => {
  const compact = INVITE.replace("Content-Length:", "l :");
  assert.deepEqual(texts(new SipStreamFramer().push(Buffer.from(compact))), [compact]);
  const framer = new SipStreamFramer();
  const events = feed(framer, [BYE.replace("Content-Length: 0\r\n", "")]);
  assert.equal(events.length, 1);
  assert.deepEqual(events[0], {
    type: "error",
    reason: "no-content-length",
    detail: "no Content-Length on a stream transport (RFC 3261 18.3)",
  });
  assert.deepEqual(feed(framer, [BYE]), [], "framing is lost: nothing more comes out");
});

test("a Content-Length that is no number, or two different ones, is an error event", () => {
  for (const bad of ["Content-Length: 12abc", "Content-Length: -1", "Content-Length:"]) {
    const events = new SipStreamFramer().push(Buffer.from(BYE.replace("Content-Length: 0", bad)));
    assert.equal(events[0]?.type === "error" && events[0].reason, "bad-content-length", bad);
  }
  const two = new SipStreamFramer().push(Buffer.from(message("BYE", "", ["Content-Length: 4"])));
  assert.equal(two[0]?.type === "error" && two[0].reason, "bad-content-length");
  const same = message("BYE", "", ["l: 0"]);
  assert.deepEqual(texts(new SipStreamFramer().push(Buffer.from(same))), [same], "the same value twice is one length");
});

test("limits: a header block without its empty line within maxHeaderBytes, or a Content-Length above maxBodyBytes, is an error event; memory stays bounded", () => {
  const header = new SipStreamFramer({ maxHeaderBytes: 256 });
  const slow = `INVITE sip:pf@127.0.0.1 SIP/2.0\r\nX-Filler: ${"x".repeat(300)}`;
  const events = feed(header, [slow.slice(0, 100), slow.slice(100)]);
  assert.equal(events.length, 1);
  assert.equal(events[0]?.type === "error" && events[0].reason, "header-too-large");
  assert.equal(header.buffered, 0);
  const complete = new SipStreamFramer({ maxHeaderBytes: 64 });
  assert.equal(complete.push(Buffer.from(BYE))[0]?.type, "error", "a complete head above the limit too");
  const body = new SipStreamFramer({ maxBodyBytes: 1000 });
  const big = body.push(Buffer.from(message("INVITE", "b".repeat(1001)).slice(0, 200)));
  assert.deepEqual(
    big,
    [{ type: "error", reason: "body-too-large", detail: "Content-Length 1001, limit 1000" }],
    "refused from its head, before the body comes",
  );
  const fits = message("INVITE", "b".repeat(1000));
  assert.deepEqual(texts(new SipStreamFramer({ maxBodyBytes: 1000 }).push(Buffer.from(fits))), [fits]);
});

test("a message's bytes are its own: the framer's buffer can go", () => {
  const framer = new SipStreamFramer();
  const chunk = Buffer.from(BYE + BYE.slice(0, 20));
  const [first] = framer.push(chunk);
  chunk.fill(0);
  assert.equal(first?.type === "message" && first.bytes.toString("utf8"), BYE);
});
