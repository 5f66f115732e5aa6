import assert from "node:assert/strict";
import { test } from "node:test";
import { CpmError } from "../../../src/errors/catalogue.js";
import { header, parseSipMessage } from "../../../src/sip/message.js";
import { serializeRequest, serializeResponse } from "../../../src/sip/serialize.js";

test("a request keeps header order and counts Content-Length in bytes (RFC 3261 20.14)", () => {
  const raw = serializeRequest(
    "INVITE",
    "sip:bob@example.com",
    [
      ["To", "<sip:bob@example.com>"],
      ["From", "<sip:pf@example.com>;tag=1"],
    ],
    "héllo",
  );
  const text = raw.toString("utf8");
  assert.equal(
    text,
    "INVITE sip:bob@example.com SIP/2.0\r\nTo: <sip:bob@example.com>\r\nFrom: <sip:pf@example.com>;tag=1\r\nContent-Length: 6\r\n\r\nhéllo",
  );
  const msg = parseSipMessage(raw);
  assert.equal(msg.method, "INVITE");
  assert.equal(msg.body.toString("utf8"), "héllo");
});

test("a response has a status line and Content-Length: 0 without a body", () => {
  const msg = parseSipMessage(serializeResponse(486, "Busy Here", [["Call-ID", "c@h"]]));
  assert.deepEqual(
    [msg.kind, msg.statusCode, msg.reasonPhrase, header(msg, "call-id"), header(msg, "content-length")],
    ["response", 486, "Busy Here", "c@h", "0"],
  );
});

test("a CR or LF in a header value, a bad header name, method or status is refused (no header injection)", () => {
  const bad = (fn: () => unknown) => assert.throws(fn, (err) => err instanceof CpmError && err.code === "CPM_ERR_BAD_REQUEST");
  bad(() => serializeRequest("BYE", "sip:a@b", [["Reason", "SIP;cause=200\r\nVia: evil"]]));
  bad(() => serializeRequest("BYE", "sip:a@b", [["Bad Name", "x"]]));
  bad(() => serializeRequest("BY E", "sip:a@b", []));
  bad(() => serializeRequest("BYE", "sip:a@b c", []));
  bad(() => serializeResponse(99, "x", []));
  bad(() => serializeResponse(200, "OK\r\nX: y", []));
});
