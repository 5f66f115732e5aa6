import assert from "node:assert/strict";
import { test } from "node:test";
import { CpmError } from "../../../src/errors/catalogue.js";
import { parseCSeq } from "../../../src/sip/cseq.js";

test("CSeq (RFC 3261 20.16): sequence number and method", () => {
  assert.deepEqual(parseCSeq("2 BYE"), { seq: 2, method: "BYE" });
  assert.deepEqual(parseCSeq("  4711\tbye "), { seq: 4711, method: "BYE" });
  assert.deepEqual(parseCSeq("2147483647 INVITE"), { seq: 2 ** 31 - 1, method: "INVITE" });
});

test("a missing or malformed CSeq is a CPM_ERR_BAD_HEADER", () => {
  const bad = (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_BAD_HEADER";
  for (const v of [undefined, "", "BYE", "2", "-1 BYE", "2.5 BYE", "2 BYE x", "2147483648 BYE", "99999999999 BYE"]) {
    assert.throws(() => parseCSeq(v), bad, JSON.stringify(v));
  }
});
