import assert from "node:assert/strict";
import { test } from "node:test";
import { observe } from "../../../src/session/observe.js";
import { parseSipMessage } from "../../../src/sip/message.js";
import { conferenceNotify, inviteFromFocus } from "../../fixtures/sip.js";

const invite = () => observe(undefined, parseSipMessage(inviteFromFocus()), 1000);

test("BYE-B3: the INVITE's resource-list gives the participants; isfocus Contact gives the focus", () => {
  const { session, updated } = invite();
  assert.ok(updated && session);
  assert.equal(session.conversationId, "conv-7f3a");
  assert.equal(session.contributionId, "contrib-1");
  assert.equal(session.focusUri, "sip:focus-7f3a@cf.example.net;transport=udp");
  assert.equal(session.networkTag, "cf-tag");
  assert.equal(session.servedUser, "tel:+16135551200");
  assert.equal(session.subject, "Weekend trip");
  assert.deepEqual(
    session.participants.map((p) => p.commAddr),
    ["tel:+16135551210", "tel:+16135551211", "tel:+16135551212"],
  );
  assert.match(session.sdpOffer, /^v=0/);
});

test("conference NOTIFYs update the latest participant list (RFC 4575 partial/full, versions)", () => {
  const s0 = invite().session;
  const partial = `<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="sip:focus" state="partial" version="1"><users>
    <user entity="tel:+16135551211" state="deleted"/><user entity="tel:+16135551299"><display-text>Dave</display-text></user></users></conference-info>`;
  const s1 = observe(s0, parseSipMessage(conferenceNotify(partial)), 2000);
  assert.ok(s1.updated);
  assert.deepEqual(
    s1.session?.participants.map((p) => p.commAddr),
    ["tel:+16135551210", "tel:+16135551212", "tel:+16135551299"],
  );
  // an older or equal version is discarded
  const stale = observe(s1.session, parseSipMessage(conferenceNotify(partial.replace('version="1"', 'version="0"'))), 3000);
  assert.equal(stale.updated, false);
  const full = `<conference-info entity="sip:focus" state="full" version="2"><conference-description><subject>New</subject></conference-description><users><user entity="tel:+1"/></users></conference-info>`;
  const s2 = observe(s1.session, parseSipMessage(conferenceNotify(full)), 4000);
  assert.deepEqual(
    s2.session?.participants.map((p) => p.commAddr),
    ["tel:+1"],
  );
  assert.equal(s2.session?.subject, "New");
});

test("a hostile conference-info body is skipped with a note; the session survives", () => {
  const s0 = invite().session;
  const r = observe(s0, parseSipMessage(conferenceNotify('<!DOCTYPE x [<!ENTITY e "e">]><conference-info version="9"/>')), 2000);
  assert.equal(r.updated, false);
  assert.equal(r.session, s0);
  assert.match(r.notes[0] ?? "", /conference-info skipped/);
});

test("the 2xx whose Contact is the focus sets focus and network tag (client-originated session)", () => {
  const clientInvite = Buffer.from(
    "INVITE sip:Conference-Factory@cf SIP/2.0\r\nFrom: <tel:+16135551200>;tag=c1\r\nTo: <sip:Conference-Factory@cf>\r\nCall-ID: k2\r\nCSeq: 1 INVITE\r\nContact: <sip:ue@10.0.0.1>\r\nContribution-ID: cid-9\r\nContent-Length: 0\r\n\r\n",
  );
  const s0 = observe(undefined, parseSipMessage(clientInvite), 1).session;
  assert.equal(s0?.servedUser, "tel:+16135551200");
  assert.equal(s0?.conversationId, "cid-9");
  const ok = Buffer.from(
    "SIP/2.0 200 OK\r\nFrom: <tel:+16135551200>;tag=c1\r\nTo: <sip:Conference-Factory@cf>;tag=f9\r\nCall-ID: k2\r\nCSeq: 1 INVITE\r\nContact: <sip:conf-1@cf>;isfocus\r\n\r\n",
  );
  const s1 = observe(s0, parseSipMessage(ok), 2).session;
  assert.equal(s1?.focusUri, "sip:conf-1@cf");
  assert.equal(s1?.networkTag, "f9");
});

test("non-CPM INVITEs (no Conversation-ID/Contribution-ID) are not tracked", () => {
  const plain = Buffer.from("INVITE sip:a@b SIP/2.0\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: z\r\nCSeq: 1 INVITE\r\n\r\n");
  assert.equal(observe(undefined, parseSipMessage(plain), 1).session, undefined);
});

test("DD-3: the focus's invitation's Referred-By (RFC 3892, who invited the user) is kept; a later dialog without one, or the client's own INVITE, keeps it", () => {
  const withRef = observe(
    undefined,
    parseSipMessage(inviteFromFocus({ extraHeaders: ['Referred-By: "Alice" <sip:alice@example.net>'] })),
    1000,
  );
  assert.equal(withRef.session?.referredBy, '"Alice" <sip:alice@example.net>');
  const again = observe(withRef.session, parseSipMessage(inviteFromFocus({ callId: "call-2@cf" })), 2000);
  assert.equal(again.session?.referredBy, '"Alice" <sip:alice@example.net>');
  assert.equal(invite().session?.referredBy, undefined, "none when the invitation had none");
});
