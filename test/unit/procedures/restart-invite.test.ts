// DD-13 / RJ-3: the re-start INVITE (8.2.2.7) the PF sends for the served user (src/procedures/restart-invite.ts).
import assert from "node:assert/strict";
import { test } from "node:test";
import { restartRequest } from "../../../src/procedures/delivery-session.js";
import { buildRestartInvite } from "../../../src/procedures/restart-invite.js";
import { bodyParts } from "../../../src/sip/multipart.js";
import { parseResourceLists } from "../../../src/xml/resource-lists.js";
import { groupSession, policy, SERVED_USER } from "../../fixtures/delivery.js";

const ICSI_TAG = '+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"';

test("DD-13 RJ-3 8.2.2.7: to the focus (lastfocussessionid), the same Conversation-ID and Contribution-ID, the CPM feature tag, for the served user, the PF's offer", () => {
  const session = groupSession({ subject: "Trip" });
  const inv = buildRestartInvite(SERVED_USER, restartRequest(session, policy), "sip:10.0.0.5:5097", "v=0\r\n");
  assert.equal(inv.requestUri, session.focusUri);
  assert.deepEqual(inv.headers, [
    ["To", `<${session.focusUri}>`],
    ["From", `<${SERVED_USER}>`],
    ["Contact", `<sip:10.0.0.5:5097>;${ICSI_TAG}`],
    ["Accept-Contact", `*;${ICSI_TAG}`],
    ["P-Asserted-Identity", `<${SERVED_USER}>`],
    ["P-Asserted-Service", "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session"],
    ["Conversation-ID", session.conversationId],
    ["Contribution-ID", session.contributionId],
    ["Subject", "Trip"],
    ["Content-Type", "application/sdp"],
  ]);
  assert.equal(inv.body, "v=0\r\n");
});

test("DD-13 RJ-3: via the conference factory: to the factory URI, Require recipient-list-invite, the SDP and the participants (not the served user) as an RFC 5366 recipient-list part; the focus INVITE has neither", () => {
  const session = groupSession({
    participants: [
      { name: "Bob", commAddr: "tel:+16135551210" },
      { name: "Me", commAddr: SERVED_USER },
    ],
  });
  const focus = restartRequest(session, { conferenceFactoryUri: "sip:factory@cf.example.net" });
  const toFocus = buildRestartInvite(SERVED_USER, focus, "sip:10.0.0.5:5097", "v=0\r\n");
  assert.ok(!toFocus.headers.some(([n]) => n === "Require"));
  const inv = buildRestartInvite(SERVED_USER, { ...focus, via: "factory" }, "sip:10.0.0.5:5097", "v=0\r\n");
  assert.equal(inv.requestUri, "sip:factory@cf.example.net");
  assert.deepEqual(inv.headers.slice(0, 1), [["To", "<sip:factory@cf.example.net>"]]);
  assert.ok(inv.headers.some(([n, v]) => n === "Require" && v === "recipient-list-invite"));
  const ct = inv.headers.find(([n]) => n === "Content-Type")?.[1] ?? "";
  assert.match(ct, /^multipart\/mixed;boundary=/);
  const parts = bodyParts(ct, Buffer.from(inv.body));
  assert.equal(parts[0]?.body.toString(), "v=0");
  assert.equal(parts[1]?.headers.get("content-disposition"), "recipient-list");
  assert.deepEqual(parseResourceLists(parts[1]?.body ?? ""), [{ uri: "tel:+16135551210", displayName: "Bob" }]);
});

test("DD-13 RJ-3 TS 24.229 5.7.3: with delivery.originatingRoute the re-start goes through the S-CSCF's originating processing (Route <URI;lr;orig>), the Request-URI still the focus; without it no Route", () => {
  const session = groupSession();
  const req = restartRequest(session, policy);
  assert.deepEqual(buildRestartInvite(SERVED_USER, req, "sip:10.0.0.5:5097", "v=0\r\n").route, []);
  const via = buildRestartInvite(SERVED_USER, req, "sip:10.0.0.5:5097", "v=0\r\n", "sip:scscf.ims.example.net:6060");
  assert.deepEqual(via.route, ["<sip:scscf.ims.example.net:6060;lr;orig>"]);
  assert.equal(via.requestUri, session.focusUri);
  const kept = buildRestartInvite(SERVED_USER, req, "sip:10.0.0.5:5097", "v=0\r\n", "sip:orig@scscf.example.net;lr;orig;transport=tcp");
  assert.deepEqual(kept.route, ["<sip:orig@scscf.example.net;lr;orig;transport=tcp>"], "the operator's parameters kept, none doubled");
});
