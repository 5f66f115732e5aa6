// The S-CSCF's third-party REGISTER (TS 24.229 5.4.1.7) as the PF reads it
// for DD-1: who registered, whether it is a registration, which contact.
import assert from "node:assert/strict";
import { test } from "node:test";
import { CpmError } from "../../../src/errors/catalogue.js";
import { parseSipMessage } from "../../../src/sip/message.js";
import { sameUser } from "../../../src/sip/public-identity.js";
import { readThirdPartyRegister } from "../../../src/sip/third-party-register.js";
import { REGISTRAR_OK, registerAndResponse, UE_REGISTER as TS24228_UE_REGISTER, thirdPartyRegister } from "../../fixtures/registration.js";

const UE_REGISTER = [
  "REGISTER sip:ims.example.net SIP/2.0",
  "Via: SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bKue1",
  "From: <sip:alice@example.net>;tag=ue1",
  "To: <sip:alice@example.net>",
  "Call-ID: ue-reg-1@192.0.2.20",
  "CSeq: 7 REGISTER",
  'Contact: <sip:alice@192.0.2.20:5070;transport=udp>;expires=0, <sip:alice@192.0.2.20:5072>;+sip.instance="<urn:gsma:imei:35-209900-176148-1>";+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"',
  "Expires: 600000",
  "Content-Length: 0",
  "",
  "",
].join("\r\n");

function thirdParty(opts: { expires?: string; body?: string; contentType?: string } = {}): Buffer {
  const body = opts.body ?? "";
  const lines = [
    "REGISTER sip:cpm-pf@as.example.net SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKscscf",
    "From: <sip:scscf.example.net>;tag=s1",
    "To: <sip:alice@example.net>",
    "Call-ID: 3rd-1@scscf",
    "CSeq: 1 REGISTER",
    "Contact: <sip:scscf.example.net>",
  ];
  if (opts.expires !== undefined) lines.push(`Expires: ${opts.expires}`);
  if (body) lines.push(`Content-Type: ${opts.contentType ?? "message/sip"}`);
  lines.push(`Content-Length: ${Buffer.byteLength(body)}`, "", body);
  return Buffer.from(lines.join("\r\n"));
}

test("DD-1: the served user is the To of the third-party REGISTER; the client's contact comes from the UE's REGISTER in the body (a removed contact skipped)", () => {
  const r = readThirdPartyRegister(parseSipMessage(thirdParty({ expires: "600000", body: UE_REGISTER })));
  assert.equal(r.servedUser, "sip:alice@example.net");
  assert.equal(r.registered, true);
  assert.match(r.contact ?? "", /^<sip:alice@192\.0\.2\.20:5072>;\+sip\.instance=/);
  assert.equal(r.instanceId, "<urn:gsma:imei:35-209900-176148-1>");
});

test("DD-1: message/sip inside multipart/mixed (UE REGISTER and its 200 OK) is read; the 200 OK part is skipped", () => {
  const ok = "SIP/2.0 200 OK\r\nContact: <sip:alice@198.51.100.9:9999>;expires=600000\r\nContent-Length: 0\r\n\r\n";
  const body = `--b1\r\nContent-Type: message/sip\r\n\r\n${ok}\r\n--b1\r\nContent-Type: message/sip\r\n\r\n${UE_REGISTER}\r\n--b1--\r\n`;
  const r = readThirdPartyRegister(parseSipMessage(thirdParty({ body, contentType: "multipart/mixed;boundary=b1" })));
  assert.match(r.contact ?? "", /^<sip:alice@192\.0\.2\.20:5072>/);
});

test("DD-1: Expires: 0 is a de-registration, not a registration event; no body leaves the contact unknown", () => {
  const r = readThirdPartyRegister(parseSipMessage(thirdParty({ expires: "0" })));
  assert.equal(r.registered, false);
  assert.equal(r.contact, undefined);
  assert.equal(r.instanceId, undefined);
});

test("DD-1 bad input: not a REGISTER, no To, a message/sip part that is not SIP -> CpmError", () => {
  const invite = Buffer.from("INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\nContent-Length: 0\r\n\r\n");
  assert.throws(() => readThirdPartyRegister(parseSipMessage(invite)), CpmError);
  const noTo = Buffer.from("REGISTER sip:as SIP/2.0\r\nContent-Length: 0\r\n\r\n");
  assert.throws(() => readThirdPartyRegister(parseSipMessage(noTo)), /without To/);
  assert.throws(() => readThirdPartyRegister(parseSipMessage(thirdParty({ body: "hello, not SIP" }))), /not a SIP message/);
});

test("DD-1 identities: the registrar's 200 OK in the body (include-register-response) gives the user's identities, P-Associated-URI values in order", () => {
  const r = readThirdPartyRegister(parseSipMessage(thirdPartyRegister({ body: registerAndResponse() })));
  assert.equal(r.servedUser, "sip:user1_public1@home1.net");
  assert.deepEqual(r.identities, [
    "sip:user1_public1@home1.net",
    "sip:user1_public2@home1.net",
    "sip:+1-212-555-1234@home1.net;user=phone",
  ]);
  assert.ok(r.identities.some((id) => sameUser(id, "tel:+12125551234")));
  assert.match(r.contact ?? "", /^<sip:\[5555::aaa:bbb:ccc:ddd\]:1357;comp=sigcomp>/, "the contact still comes from the UE's REGISTER");
  assert.equal(r.instanceId, "<urn:gsma:imei:35209900-176148-0>");
  // the 200 OK alone (include-register-response without the request)
  const okOnly = readThirdPartyRegister(parseSipMessage(thirdPartyRegister({ body: REGISTRAR_OK })));
  assert.equal(okOnly.identities.length, 3);
  assert.equal(okOnly.contact, undefined);
});

test("DD-1 identities: no registrar's 200 OK (or one without P-Associated-URI, or not a 200) -> no identity set", () => {
  assert.deepEqual(readThirdPartyRegister(parseSipMessage(thirdPartyRegister({ body: TS24228_UE_REGISTER }))).identities, []);
  const noPau = REGISTRAR_OK.replace(/^P-Associated-URI: .*\r\n/gm, "");
  assert.deepEqual(readThirdPartyRegister(parseSipMessage(thirdPartyRegister({ body: registerAndResponse(noPau) }))).identities, []);
  const notOk = REGISTRAR_OK.replace("SIP/2.0 200 OK", "SIP/2.0 401 Unauthorized");
  assert.deepEqual(readThirdPartyRegister(parseSipMessage(thirdPartyRegister({ body: notOk }))).identities, []);
});

test("DD-1 identities: a malformed P-Associated-URI value is a clear CpmError (CPM_ERR_BAD_HEADER), not another throw", () => {
  for (const value of ["<sip:user1_public1@home1.net", "user1_public1@home1.net", '"Alice <sip:a@b>', "<http://example.com>"]) {
    const ok = REGISTRAR_OK.replace(/^P-Associated-URI: <sip:\+1.*$/m, `P-Associated-URI: ${value}`);
    assert.throws(
      () => readThirdPartyRegister(parseSipMessage(thirdPartyRegister({ body: registerAndResponse(ok) }))),
      (e: unknown) =>
        e instanceof CpmError &&
        e.code === "CPM_ERR_BAD_HEADER" &&
        /P-Associated-URI of the registrar's 200 OK is malformed/.test(e.message),
      value,
    );
  }
  // an empty element of the list (", ,") is skipped, not an error
  const gaps = REGISTRAR_OK.replace(/^P-Associated-URI: <sip:\+1.*$/m, "P-Associated-URI: <sip:user1_public3@home1.net>, ,");
  assert.equal(readThirdPartyRegister(parseSipMessage(thirdPartyRegister({ body: gaps }))).identities.length, 3);
});
