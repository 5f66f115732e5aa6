import assert from "node:assert/strict";
import { test } from "node:test";
import { type ByeEvent, type ByePolicy, classifyCause, handleBye } from "../../../src/procedures/handle-bye.js";
import type { GroupSession } from "../../../src/session/group-session.js";

const session: GroupSession = {
  key: "call-1@cf",
  conversationId: "conv-7f3a",
  contributionId: "contrib-1",
  focusUri: "sip:focus-7f3a@cf.example.net",
  networkTag: "cf-tag",
  servedUser: "tel:+16135551200",
  groupType: "Closed",
  subject: "Trip",
  icon: "https://x/i.png",
  participants: [
    { name: "Bob", commAddr: "tel:+16135551210" },
    { name: "", commAddr: "tel:+16135551211" },
  ],
  conferenceVersion: 3,
  sdpOffer: "",
  conferenceFactoryUri: "",
  lifecycle: "active",
  lifecycleAt: 0,
  endCause: undefined,
  pendingDeferred: false,
  dialogs: [],
  createdAt: 0,
  updatedAt: 0,
};
const b2bua: ByePolicy = { mode: "b2bua", unknownSessionMode: "proxy", groupSessionDataManagement: false };
const at = new Date("2026-11-25T10:00:00Z");
const bye = (reasons: string[], extra: Partial<ByeEvent> = {}): ByeEvent => ({
  callId: "call-1@cf",
  cseq: 2,
  fromTag: "cf-tag",
  reasons,
  referredBy: undefined,
  receivedAt: at,
  ...extra,
});
const kinds = (d: ReturnType<typeof handleBye>) => d.actions.map((a) => a.kind);
const storedGso = (d: ReturnType<typeof handleBye>) => d.actions.find((a) => a.kind === "storeGso");

test("BYE-P1: proxy mode forwards the BYE unchanged and answers after the clients", () => {
  const d = handleBye(session, bye(['SIP;cause=410;text="Gone"']), { ...b2bua, mode: "proxy" });
  assert.equal(d.mode, "proxy");
  assert.equal(d.clientReason, "");
  assert.deepEqual(d.actions, [{ kind: "byeToClients", reason: undefined }, { kind: "answerSenderAfterClients" }]);
});

test("BYE-B1: no Reason header is treated as SIP;cause=200", () => {
  const d = handleBye(session, bye([]), b2bua);
  assert.equal(d.reasonCause, 200);
  assert.equal(d.cause, "participant-left");
  assert.equal(d.clientReason, "SIP;cause=200", "no text made up for a cause that came without one");
  assert.equal(storedGso(d), undefined);
});

test("BYE-B2: cause=200 means the other parties left; the text is kept", () => {
  const d = handleBye(session, bye(['SIP;cause=200;text="Bye all"']), b2bua);
  assert.equal(d.cause, "participant-left");
  assert.equal(d.clientReason, 'SIP;cause=200;text="Bye all"');
  assert.deepEqual(kinds(d), ["refuseClientMedia", "byeToClients", "answerSenderAfterClients"]);
});

test("BYE-B3: cause=410 stores a GSO with status removed and referred-by", () => {
  const d = handleBye(session, bye(['SIP ;cause=410 ;text="Gone"'], { referredBy: '"Admin" <sip:admin@example.net>;cid="x"' }), b2bua);
  assert.equal(d.cause, "terminated");
  const a = storedGso(d);
  assert.ok(a && a.kind === "storeGso");
  assert.equal(a.gso.status, "removed");
  assert.equal(a.gso.referredBy, "sip:admin@example.net");
  assert.equal(a.gso.lastFocusSessionId, session.focusUri);
  assert.equal(a.gso.timestamp, at);
  assert.deepEqual(a.gso.participants, session.participants);
  assert.equal(a.gso.subject, undefined);
  // 2.b then 2.c then 2.e, in that order
  assert.deepEqual(kinds(d), ["storeGso", "refuseClientMedia", "byeToClients", "answerSenderAfterClients"]);
});

test("BYE-B4 BYE-B5: the GSO action names the BYE it comes from (Call-ID, CSeq, the CF's From tag): its identity in the store", () => {
  const a = storedGso(handleBye(session, bye(["SIP;cause=480"], { cseq: 7 }), b2bua));
  assert.ok(a && a.kind === "storeGso");
  assert.deepEqual(a.bye, { callId: "call-1@cf", cseq: 7, fromTag: "cf-tag" });
});

test("BYE-B3: a malformed Referred-By is left out with a note, the GSO is still stored", () => {
  const d = handleBye(session, bye(["SIP;cause=410"], { referredBy: "<<garbage" }), b2bua);
  const a = storedGso(d);
  assert.ok(a && a.kind === "storeGso");
  assert.equal(a.gso.referredBy, undefined);
  assert.ok(d.notes.some((n) => n.startsWith("Referred-By ignored")));
});

test("BYE-B4: cause=480 stores a GSO without status; subject and icon with Group Session Data management (MAY)", () => {
  const d = handleBye(session, bye(["sip;Cause=480"]), { ...b2bua, groupSessionDataManagement: true });
  assert.equal(d.cause, "inactivity");
  const a = storedGso(d);
  assert.ok(a && a.kind === "storeGso");
  assert.equal(a.gso.status, undefined);
  assert.equal(a.gso.subject, "Trip");
  assert.equal(a.gso.icon, "https://x/i.png");
});

test("BYE-B5: any other cause (503) is a SIP/IP core release and stores a GSO", () => {
  const d = handleBye(session, bye(['SIP;cause=503;text="Service Unavailable"']), b2bua);
  assert.equal(d.cause, "network");
  assert.equal(d.clientReason, 'SIP;cause=503;text="Service Unavailable"');
  assert.ok(storedGso(d));
});

test("BYE-B5: garbage Reason is handled as other, logged, and still stores a GSO", () => {
  const d = handleBye(session, bye(["%%%;;cause=="]), b2bua);
  assert.equal(d.cause, "network");
  assert.ok(d.notes.some((n) => n.startsWith("malformed Reason treated as other")));
  assert.ok(storedGso(d));
});

test("several Reason values: the SIP one decides, Q.850 alone is 'other'", () => {
  assert.equal(handleBye(session, bye(["Q.850;cause=16", "SIP;cause=410"]), b2bua).cause, "terminated");
  assert.equal(handleBye(session, bye(["Q.850;cause=16"]), b2bua).cause, "network");
});

test("BYE-B7/B9: B2BUA sends the BYE to the clients, then answers the sender", () => {
  const d = handleBye(session, bye(["SIP;cause=480"]), b2bua);
  const i = kinds(d).indexOf("byeToClients");
  assert.ok(i >= 0 && i < kinds(d).indexOf("answerSenderAfterClients"));
  assert.deepEqual(d.actions[i], { kind: "byeToClients", reason: "SIP;cause=480" });
});

test("Reason towards the client: an unusable SIP cause is the mapped SIP;cause=503 without made-up text", () => {
  for (const reasons of [["SIP;cause=abc"], ["SIP"], ["%%%;;cause=="]]) {
    const d = handleBye(session, bye(reasons), b2bua);
    assert.equal(d.reasonCause, 503, JSON.stringify(reasons));
    assert.equal(d.clientReason, "SIP;cause=503", JSON.stringify(reasons));
  }
});

test("Reason towards the client: other-protocol values (Q.850) go on as received, one per protocol, after the SIP value", () => {
  assert.equal(
    handleBye(session, bye(['Q.850 ; cause=16 ;text="Terminated"', 'SIP;cause=410;text="Gone"']), b2bua).clientReason,
    'SIP;cause=410;text="Gone", Q.850 ; cause=16 ;text="Terminated"',
  );
  // Q.850 alone: the SIP value is the mapped 503, the Q.850 one kept
  assert.equal(handleBye(session, bye(["Q.850;cause=16"]), b2bua).clientReason, "SIP;cause=503, Q.850;cause=16");
  // one per protocol (RFC 3326 2): the first of each; a second SIP value does not decide nor go on
  assert.equal(
    handleBye(session, bye(["SIP;cause=480, Q.850;cause=16, q.850;cause=31, SIP;cause=410", "X-Vendor;cause=7;foo=bar"]), b2bua)
      .clientReason,
    "SIP;cause=480, Q.850;cause=16, X-Vendor;cause=7;foo=bar",
  );
});

test("a BYE from the client side is relayed, not treated as 8.3.2.3", () => {
  const d = handleBye(session, bye(["SIP;cause=410"], { fromTag: "client-tag" }), b2bua);
  assert.equal(d.side, "client");
  assert.equal(d.mode, "proxy");
  assert.equal(storedGso(d), undefined);
});

test("unknown session: mode from pf.unknownSessionMode, no GSO without participants", () => {
  assert.equal(handleBye(undefined, bye(["SIP;cause=410"]), b2bua).mode, "proxy");
  const d = handleBye(undefined, bye(["SIP;cause=410"]), { ...b2bua, unknownSessionMode: "b2bua" });
  assert.equal(d.mode, "b2bua");
  assert.equal(storedGso(d), undefined);
  assert.ok(d.notes.includes("no participant list known: GSO not stored"));
});

test("cause classes (8.3.2.3 2.b)", () => {
  assert.deepEqual([200, 410, 480, 503, 404, 0].map(classifyCause), [
    "participant-left",
    "terminated",
    "inactivity",
    "network",
    "network",
    "network",
  ]);
});
