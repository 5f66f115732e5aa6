// DD-1 trust (OMA CPM 8.3.2.9.1.2, TS 24.229 5.4.1.7): only a trusted
// registrar's third-party REGISTER, and only for one of the registered
// user's own identities, may start deferred delivery.
import assert from "node:assert/strict";
import { test } from "node:test";
import { CpmError } from "../../../src/errors/catalogue.js";
import {
  isTrustedRegistrar,
  parseTrustedRegistrars,
  refuseRegistration,
  sourceAddress,
  trustedRegistrars,
} from "../../../src/sip/registration-trust.js";
import { REGISTRAR_OK, thirdPartyRegister } from "../../fixtures/registration.js";

test("DD-1 trust: the Envelope source ($si:$sp) is read as an address: IPv4, bare and bracketed IPv6, IPv4-mapped", () => {
  assert.equal(sourceAddress("127.0.0.1:5060"), "127.0.0.1");
  assert.equal(sourceAddress("::1:5060"), "::1", "Kamailio's $si has no brackets");
  assert.equal(sourceAddress("2001:db8::5:5060"), "2001:db8::5");
  assert.equal(sourceAddress("[2001:db8::5]:5060"), "2001:db8::5");
  assert.equal(sourceAddress("::ffff:10.0.0.5:5060"), "10.0.0.5");
  assert.equal(sourceAddress("10.0.0.5"), "10.0.0.5");
  assert.equal(sourceAddress("::1"), "::1");
  for (const bad of ["", "scscf.home1.net:5060", "10.0.0.256:5060", "[::1", "x"]) assert.equal(sourceAddress(bad), undefined, bad);
});

test("DD-1 trust: trusted registrars are IPs and CIDRs; anything else is not trusted", () => {
  const t = parseTrustedRegistrars("127.0.0.1, ::1,10.0.1.0/24,2001:db8:5::/48");
  assert.ok(isTrustedRegistrar("127.0.0.1:5060", t));
  assert.ok(isTrustedRegistrar("::1:5060", t));
  assert.ok(isTrustedRegistrar("10.0.1.200:5060", t));
  assert.ok(isTrustedRegistrar("[2001:db8:5::9]:5060", t));
  assert.ok(isTrustedRegistrar("::ffff:127.0.0.1:5060", t));
  assert.ok(!isTrustedRegistrar("127.0.0.2:5060", t));
  assert.ok(!isTrustedRegistrar("10.0.2.1:5060", t));
  assert.ok(!isTrustedRegistrar("2001:db8:6::1:5060", t));
  assert.ok(!isTrustedRegistrar("", t), "no source: not trusted");
  assert.ok(!isTrustedRegistrar("scscf1.home1.net:5060", t));
  assert.equal(trustedRegistrars("127.0.0.1"), trustedRegistrars("127.0.0.1"), "parsed once per value");
});

test("DD-1 trust: a bad list is a CpmError naming the entry", () => {
  for (const [value, re] of [
    ["", /at least one/],
    [" , ", /at least one/],
    ["10.0.0.1,scscf", /"scscf" is not an IP address or CIDR/],
    ["10.0.0.0/33", /"10\.0\.0\.0\/33"/],
    ["10.0.0.0/x", /"10\.0\.0\.0\/x"/],
    ["::/200", /"::\/200"/],
  ] as const) {
    assert.throws(
      () => parseTrustedRegistrars(value),
      (e: unknown) => e instanceof CpmError && e.code === "CPM_ERR_CONFIG" && re.test(e.message),
    );
  }
});

const TRUSTED = "127.0.0.1,::1";

test("DD-1 trust: an untrusted source gets reject_status 403, whatever the REGISTER says (it is not even read)", () => {
  const r = refuseRegistration({ raw: Buffer.from("not SIP at all"), source: "127.0.0.2:5060" }, TRUSTED);
  assert.equal(r?.rejectStatus, 403);
  assert.equal(r?.rejectReason, "Forbidden");
  assert.equal(r?.accepted, false);
  assert.equal(r?.deliveries, 0);
  assert.match(r?.notes[0] ?? "", /127\.0\.0\.2:5060, not a trusted registrar/);
  assert.equal(refuseRegistration({ raw: thirdPartyRegister({}), source: "" }, TRUSTED)?.rejectStatus, 403);
});

test("DD-1 trust: the trusted S-CSCF's REGISTER for one of the user's identities (P-Associated-URI, any form) goes on", () => {
  const body = REGISTRAR_OK;
  for (const to of ["sip:user1_public1@home1.net", "sip:user1_public2@HOME1.NET", "tel:+1-212-555-1234"]) {
    assert.equal(refuseRegistration({ raw: thirdPartyRegister({ to, body }), source: "127.0.0.1:5060" }, TRUSTED), undefined, to);
  }
  // no registrar's 200 OK in the body: no identity set to check against
  assert.equal(refuseRegistration({ raw: thirdPartyRegister({}), source: "[::1]:5060" }, TRUSTED), undefined);
});

test("DD-1 trust: a To that is not among the P-Associated-URI identities is refused (not accepted, a note, no reject status: 200 OK)", () => {
  const r = refuseRegistration(
    { raw: thirdPartyRegister({ to: "sip:mallory@home1.net", body: REGISTRAR_OK }), source: "127.0.0.1:5060" },
    TRUSTED,
  );
  assert.ok(r);
  assert.equal(r.accepted, false);
  assert.equal(r.rejectStatus, undefined);
  assert.match(r.notes[0] ?? "", /sip:mallory@home1\.net is not among the registered user's identities/);
});

test("DD-1 trust: a malformed REGISTER or P-Associated-URI from the trusted S-CSCF is a CpmError (the RPC answers INVALID_ARGUMENT), never another throw", () => {
  const badPau = REGISTRAR_OK.replace(/^P-Associated-URI: .*$/m, "P-Associated-URI: <sip:user1_public1@home1.net>, <not a uri>");
  for (const raw of [Buffer.from("garbage"), thirdPartyRegister({ body: badPau }), thirdPartyRegister({ to: '"unterminated <sip:a@b>' })]) {
    assert.throws(
      () => refuseRegistration({ raw, source: "127.0.0.1:5060" }, TRUSTED),
      (e: unknown) => e instanceof CpmError && (e.code === "CPM_ERR_BAD_SIP" || e.code === "CPM_ERR_BAD_HEADER"),
    );
  }
});
