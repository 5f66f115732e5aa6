// Public user identities compared as the same user (TS 24.229 5.4.1.7: the
// To of the third-party REGISTER against the P-Associated-URI set): tel / sip
// user=phone forms (RFC 3966, RFC 3261 19.1.6), case rules of RFC 3261 19.1.4.
import assert from "node:assert/strict";
import { test } from "node:test";
import { normaliseIdentity, sameUser } from "../../../src/sip/public-identity.js";

test("DD-1 identities: sip:+16135551210@host;user=phone is tel:+16135551210 (visual separators, parameters dropped)", () => {
  assert.equal(normaliseIdentity("sip:+16135551210@home1.net;user=phone"), "tel:+16135551210");
  assert.equal(normaliseIdentity("<tel:+1-613-555-1210>"), "tel:+16135551210");
  assert.equal(normaliseIdentity("tel:+1.613.555.1210;phone-context=+1"), "tel:+16135551210");
  assert.equal(normaliseIdentity("TEL:+1(613)5551210"), "tel:+16135551210");
  assert.ok(sameUser("sip:+16135551210@home1.net;user=phone", "tel:+16135551210"));
  assert.ok(sameUser("tel:+1-613-555-1210", "sip:+1-613-555-1210@ims.mnc001.mcc001.3gppnetwork.org;user=phone"));
  assert.ok(sameUser("sip:+16135551210;npdi@home1.net;user=phone", "tel:+16135551210"), "tel parameters inside the user part");
  assert.ok(sameUser("sip:+16135551210@home1.net;USER=PHONE", "tel:+16135551210"));
});

test("DD-1 identities: scheme and host case-insensitive, user case-sensitive, %-escapes decoded, URI parameters and headers dropped", () => {
  assert.equal(normaliseIdentity("SIP:alice@HOME1.Net;transport=tcp?subject=x"), "sip:alice@home1.net");
  assert.ok(sameUser("<sip:alice@Home1.NET>", "sip:alice@home1.net;lr"));
  assert.ok(sameUser("sip:%61lice@home1.net", "sip:alice@home1.net"));
  assert.ok(!sameUser("sip:Alice@home1.net", "sip:alice@home1.net"), "RFC 3261 19.1.4: userinfo is case-sensitive");
  assert.ok(!sameUser("sips:alice@home1.net", "sip:alice@home1.net"), "RFC 3261 19.1.4: sip and sips differ");
  assert.ok(!sameUser("sip:alice@home1.net:5060", "sip:alice@home1.net"), "a port is part of the URI");
  assert.ok(!sameUser("sip:mallory@home1.net", "sip:alice@home1.net"));
});

test("DD-1 identities: a number without user=phone stays a SIP URI; a local number keeps its phone-context", () => {
  assert.equal(normaliseIdentity("sip:+16135551210@home1.net"), "sip:+16135551210@home1.net");
  assert.ok(!sameUser("sip:+16135551210@home1.net", "tel:+16135551210"));
  assert.equal(normaliseIdentity("tel:555-1210;phone-context=home1.net"), "tel:5551210;phone-context=home1.net");
  assert.ok(!sameUser("tel:5551210;phone-context=home1.net", "tel:5551210;phone-context=other.net"));
  assert.equal(normaliseIdentity("tel:5551210"), undefined, "a local number without context identifies no one");
  assert.equal(normaliseIdentity("sip:5551210@home1.net;user=phone"), "sip:5551210@home1.net", "local number, no tel form");
});

test("DD-1 identities: what is not a usable URI normalises to undefined and is the same user as nothing", () => {
  for (const bad of [
    "",
    "alice@home1.net",
    "mailto:alice@home1.net",
    "sip:",
    "sip:alice@",
    "sip:a b@home1.net",
    "tel:+1-abc",
    "sip:%zz@home1.net",
    "<sip:alice@home1.net",
  ]) {
    assert.equal(normaliseIdentity(bad), undefined, JSON.stringify(bad));
    assert.ok(!sameUser(bad, bad), `${JSON.stringify(bad)} is nobody, not even itself`);
  }
  assert.equal(normaliseIdentity("sip:home1.net"), "sip:home1.net");
  assert.equal(normaliseIdentity("sip:alice@[2001:DB8::1]:5060"), "sip:alice@[2001:db8::1]:5060");
});
