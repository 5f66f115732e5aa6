import assert from "node:assert/strict";
import { test } from "node:test";
import { parseNameAddr, uriParams } from "../../../src/sip/name-addr.js";

test("BYE-B3: Referred-By name-addr with cid (RFC 3892)", () => {
  const a = parseNameAddr('"Admin, Group" <sip:admin@example.net;user=phone>;cid="<1234@example.net>"');
  assert.equal(a.displayName, "Admin, Group");
  assert.equal(a.uri, "sip:admin@example.net;user=phone");
  assert.equal(a.params.get("cid"), "<1234@example.net>");
});

test("addr-spec: parameters after the URI are header parameters", () => {
  const a = parseNameAddr("tel:+16135551210;tag=abc");
  assert.equal(a.uri, "tel:+16135551210");
  assert.equal(a.params.get("tag"), "abc");
});

test("malformed addresses throw CPM_ERR_BAD_HEADER", () => {
  for (const bad of ["", "<sip:a@b", '"unterminated <sip:a@b>', "not a uri", "<http://x>", '"x" sip:a@b']) {
    assert.throws(
      () => parseNameAddr(bad),
      (e: Error & { code?: string }) => e.code === "CPM_ERR_BAD_HEADER",
      bad,
    );
  }
});

test("URI parameters: isfocus flag (RFC 4579)", () => {
  assert.ok(uriParams("sip:focus@cf;isfocus;transport=udp").has("isfocus"));
  assert.equal(uriParams("sip:focus@cf;transport=udp?x=y").get("transport"), "udp");
});
