import assert from "node:assert/strict";
import { test } from "node:test";
import { formatClientReason, formatReason, parseReasonHeaders, parseReasonValue } from "../../../src/sip/reason.js";

test("BYE-B2/B3: RFC 3326 Reason with odd spacing and case", () => {
  const v = parseReasonValue('sip ;CAUSE = 410 ; Text="Gone, for good"');
  assert.deepEqual(v, { protocol: "SIP", cause: 410, text: "Gone, for good" });
});

test("several Reason values on one line and across lines (RFC 3326 2)", () => {
  const r = parseReasonHeaders(['Q.850;cause=16;text="Terminated", SIP;cause=480', "SIP;cause=200"]);
  assert.deepEqual(
    r.values.map((v) => [v.protocol, v.cause]),
    [
      ["Q.850", 16],
      ["SIP", 480],
      ["SIP", 200],
    ],
  );
  assert.equal(r.errors.length, 0);
});

test("quoted text may hold commas, semicolons and escaped quotes", () => {
  const r = parseReasonHeaders(['SIP;cause=503;text="a;b, \\"c\\""']);
  assert.equal(r.values[0]?.text, 'a;b, "c"');
});

test("garbage Reason values are reported, not thrown", () => {
  const r = parseReasonHeaders(["SIP;cause=abc", "<<>>", 'SIP;cause=410;text="unterminated', "SIP;cause=410"]);
  assert.equal(r.errors.length, 3);
  assert.deepEqual(
    r.values.map((v) => v.cause),
    [410],
  );
});

test("formatReason quotes and escapes text", () => {
  assert.equal(formatReason({ protocol: "SIP", cause: 410, text: 'Go"ne\r\n' }), 'SIP;cause=410;text="Go\\"ne  "');
  assert.equal(formatReason({ protocol: "SIP", cause: 200 }), "SIP;cause=200");
});

test("Reason towards the client: formatClientReason keeps each other protocol's first value as received, raw aligned with values", () => {
  const received = parseReasonHeaders(['Q.850;cause=16;text="Normal, clearing"', "<<>>", "SIP;cause=480", "Q.850;cause=31"]);
  assert.deepEqual(received.raw, ['Q.850;cause=16;text="Normal, clearing"', "SIP;cause=480", "Q.850;cause=31"]);
  assert.equal(formatClientReason({ cause: 480 }, received), 'SIP;cause=480, Q.850;cause=16;text="Normal, clearing"');
  assert.equal(formatClientReason({ cause: 200, text: "Call completed" }, parseReasonHeaders([])), 'SIP;cause=200;text="Call completed"');
});
