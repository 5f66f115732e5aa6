import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { startDeferredDelivery, stepDeferredDelivery } from "../../../src/procedures/deferred-delivery.js";
import { type DeliveryClaims, deliveryKey } from "../../../src/procedures/delivery-guard.js";
import type { ClientMedia, DeliveryAction, DeliveryPolicy, SessionEvent } from "../../../src/procedures/delivery-session.js";
import { ANONYMOUS_KEYWORD } from "../../../src/procedures/device-view.js";
import {
  answersRejoin,
  type RejoinState,
  rejoinClaims,
  startRejoinDelivery,
  stepRejoinDelivery,
} from "../../../src/procedures/rejoin-delivery.js";
import type { GroupSession } from "../../../src/session/group-session.js";
import { parseGso } from "../../../src/xml/gso.js";
import { AT, groupSession, item, kinds, only, policy, SERVED_USER, uidsOf } from "../../fixtures/delivery.js";

const KEY = deliveryKey(SERVED_USER, "call-1@cf", ANONYMOUS_KEYWORD);

function rejoin(session: GroupSession | undefined = groupSession(), claims: DeliveryClaims = new Map()) {
  return startRejoinDelivery({ type: "rejoinInvite", servedUser: SERVED_USER, clientCallId: "client-call@ue", session }, claims, policy);
}

function started(session: GroupSession = groupSession()): RejoinState {
  const r = rejoin(session);
  assert.ok(r.state, r.notes.join("; "));
  return r.state;
}

function run(state: RejoinState, events: SessionEvent[], p: DeliveryPolicy = policy) {
  const actions: DeliveryAction[] = [];
  const notes: string[] = [];
  let claim: ReturnType<typeof stepRejoinDelivery>["claim"];
  for (const ev of events) {
    const r = stepRejoinDelivery(state, ev, p);
    assert.equal(r.error, undefined, `${ev.type}: ${r.error?.message}`);
    ({ state, claim } = r);
    actions.push(...r.actions);
    notes.push(...r.notes);
  }
  return { state, actions, notes, claim };
}

const read = (...items: ReturnType<typeof item>[]): SessionEvent => ({ type: "itemsRead", items, at: AT });
const delivered = (uid: number): SessionEvent => ({ type: "itemDelivered", handle: item(uid).handle });
const sent = (msrpMessageId: string, failureReport: ClientMedia["failureReport"] = "yes"): SessionEvent => ({
  type: "clientSentMedia",
  media: { msrpMessageId, kind: "message", failureReport },
});
const inactive = () => groupSession({ lifecycle: "inactive" });

test("RJ-1: a re-join before the register notification is accepted and claimed; the registration then delivers nothing", () => {
  const r = rejoin();
  assert.deepEqual(r.actions, [{ kind: "acceptRejoin", clientCallId: "client-call@ue" }]);
  assert.deepEqual(r.claims.get(KEY), { owner: "rejoin", status: "delivering" });
  const reg = startDeferredDelivery(
    {
      type: "registered",
      servedUser: SERVED_USER,
      client: { contact: "sip:ue@10.0.0.5" },
      pending: [{ conversationId: "conv-7f3a", contributionId: "contrib-1", count: 3, session: groupSession() }],
    },
    r.claims,
    policy,
  );
  assert.equal(reg.deliveries.length, 0);
  assert.ok(reg.notes.some((n) => n.includes("rejoin delivering: not delivered again")));
});

test("RJ-1: a re-join while the registration delivery runs takes it over (once), the registration machine stands down", () => {
  const reg = startDeferredDelivery(
    {
      type: "registered",
      servedUser: SERVED_USER,
      client: { contact: "sip:ue@10.0.0.5" },
      pending: [{ conversationId: "conv-7f3a", contributionId: "contrib-1", count: 3, session: groupSession() }],
    },
    new Map(),
    policy,
  );
  const r = rejoin(groupSession(), reg.claims);
  assert.deepEqual(r.actions, [
    { kind: "supersedeRegistrationDelivery", key: KEY },
    { kind: "acceptRejoin", clientCallId: "client-call@ue" },
  ]);
  assert.deepEqual(r.claims.get(KEY), { owner: "rejoin", status: "delivering" });
  const regState = reg.deliveries[0]?.state;
  assert.ok(regState);
  assert.deepEqual(kinds(stepDeferredDelivery(regState, { type: "superseded" }, policy).actions), ["cancelInvite"]);
  // a second re-join (another device) while this one delivers: plain re-join, no second delivery
  const second = rejoin(groupSession(), r.claims);
  assert.equal(second.state, undefined);
  assert.deepEqual(second.actions, [{ kind: "relayRejoin", clientCallId: "client-call@ue" }]);
});

test("RJ-1: a re-join for a group session the PF does not know is a plain re-join", () => {
  const ev = { type: "rejoinInvite", servedUser: SERVED_USER, clientCallId: "client-call@ue", session: undefined } as const;
  const r = startRejoinDelivery(ev, new Map(), policy);
  assert.equal(r.state, undefined);
  assert.deepEqual(r.actions, [{ kind: "relayRejoin", clientCallId: "client-call@ue" }]);
  assert.equal(r.claims.size, 0);
});

test("RJ-2: all pending data is delivered over MSRP in order, the confirmed ones removed from the queue as one set per batch", () => {
  const r = run(started(), [
    { type: "msrpUp" },
    read(item(2, "imdn"), item(1)),
    delivered(1),
    delivered(2),
    read(item(3)),
    delivered(3),
    read(),
  ]);
  assert.deepEqual(uidsOf(r.actions, "deliverInOrder"), [[1, 2], [3]]);
  assert.deepEqual(uidsOf(r.actions, "ackDeferred"), [[1, 2], [3]]);
  assert.equal(r.state.delivery.phase, "delivered");
  assert.deepEqual(r.claim, { owner: "rejoin", status: "connected" });
});

test("RJ-3: inactive group session → re-start with the CF at once, the last participant information as a GSO after the data", () => {
  const r = rejoin(inactive());
  assert.deepEqual(kinds(r.actions), ["acceptRejoin", "restartGroupSession"]);
  assert.deepEqual(only(r.actions, "restartGroupSession")[0]?.restart.focusUri, "sip:focus-7f3a@cf.example.net");
  assert.ok(r.state);
  const d = run(r.state, [{ type: "msrpUp" }, read(item(1)), delivered(1), read()]);
  assert.deepEqual(kinds(d.actions), ["readDeferred", "deliverInOrder", "readDeferred", "ackDeferred", "sendGso"]);
  const [gso] = only(d.actions, "sendGso");
  assert.equal(gso?.contentType, "application/group-state-object+xml");
  const parsed = parseGso(gso?.body ?? "");
  assert.equal(parsed.lastFocusSessionId, "sip:focus-7f3a@cf.example.net");
  assert.deepEqual(
    parsed.participants.map((p) => [p.name, p.commAddr]),
    [
      ["Bob", "tel:+16135551210"],
      ["", "tel:+16135551211"],
    ],
  );
});

test("RJ-3 (MAY): interim GSOs from the queue only with delivery.sendInterimGsos", () => {
  const events: SessionEvent[] = [{ type: "msrpUp" }, read(item(1, "gso"), item(2))];
  const off = run(started(inactive()), events);
  assert.deepEqual(
    only(off.actions, "deliverInOrder")[0]?.items.map((i) => i.handle.uid),
    [2],
  );
  const on = run(started(inactive()), events, { ...policy, sendInterimGsos: true });
  assert.deepEqual(
    only(on.actions, "deliverInOrder")[0]?.items.map((i) => i.handle.uid),
    [1, 2],
  );
});

test("RJ-3: the CF answers the re-start with an error → what is pending is delivered, then the last participants as a GSO, then BYE to the client with that cause", () => {
  const r = run(started(inactive()), [{ type: "restartResponse", via: "focus", status: 404, reasonPhrase: "Not Found" }]);
  assert.deepEqual(r.actions, [], "no BYE before the pending data went out");
  assert.notEqual(r.state.delivery.phase, "ended");
  assert.ok(r.claim, "the delivery still holds the session");
  const d = run(r.state, [{ type: "msrpUp" }, read(item(1)), delivered(1), read()]);
  assert.deepEqual(kinds(d.actions).slice(-2), ["sendGso", "byeToClient"]);
  assert.deepEqual(d.actions.at(-1), { kind: "byeToClient", reason: 'SIP;cause=404;text="Not Found"' });
  assert.ok(kinds(d.actions).indexOf("deliverInOrder") < kinds(d.actions).indexOf("byeToClient"));
  assert.equal(d.state.delivery.phase, "ended");
  assert.equal(d.claim, undefined);
  const f = run(started(inactive()), [
    { type: "restartResponse", via: "focus", status: 180 },
    { type: "restartResponse", via: "focus", status: 403 },
    { type: "msrpUp" },
    read(),
  ]);
  assert.deepEqual(f.actions.at(-1), { kind: "byeToClient", reason: "SIP;cause=403" });
});

test("RJ-4: the re-start failed and the client had sent messages → an MSRP failure REPORT for each at once (and for any it sends after), the BYE once the pending data is delivered", () => {
  const r = run(started(inactive()), [
    { type: "msrpUp" },
    sent("c1"),
    sent("c2", "no"),
    sent("c3", "partial"),
    { type: "restartResponse", via: "focus", status: 403, reasonPhrase: "Forbidden" },
  ]);
  assert.deepEqual(r.actions.slice(1), [
    { kind: "msrpFailureReport", msrpMessageId: "c1", status: 403 },
    { kind: "msrpFailureReport", msrpMessageId: "c3", status: 403 },
  ]);
  const later = run(r.state, [sent("c4")]);
  assert.deepEqual(later.actions, [{ kind: "msrpFailureReport", msrpMessageId: "c4", status: 403 }], "no second re-start");
  const end = run(later.state, [read()]);
  assert.deepEqual(end.actions.at(-1), { kind: "byeToClient", reason: 'SIP;cause=403;text="Forbidden"' });
  const nf = run(started(inactive()), [{ type: "msrpUp" }, sent("c1"), { type: "restartResponse", via: "focus", status: 404 }]);
  assert.deepEqual(only(nf.actions, "msrpFailureReport"), [{ kind: "msrpFailureReport", msrpMessageId: "c1", status: 403 }]);
});

test("RJ-3/RJ-5: the re-start succeeds → the dialogs are joined after the deferred data, held client SENDs go on", () => {
  const r = run(started(inactive()), [
    { type: "msrpUp" },
    sent("c1"),
    { type: "restartResponse", via: "focus", status: 200 },
    read(item(1)),
  ]);
  assert.ok(!kinds(r.actions).includes("joinGroupDialog"), "not before the queue is drained");
  const d = run(r.state, [delivered(1), read()]);
  assert.deepEqual(d.actions.slice(-3), [
    only(d.actions, "sendGso")[0],
    { kind: "joinGroupDialog", sessionKey: "call-1@cf" },
    { kind: "forwardToFocus", msrpMessageIds: ["c1"] },
  ]);
});

test("RJ-5: active group session → no re-start; the client's dialog is joined with the CF dialog once the data is delivered", () => {
  const r = rejoin(groupSession());
  assert.ok(!kinds(r.actions).includes("restartGroupSession"));
  assert.ok(r.state);
  const d = run(r.state, [{ type: "msrpUp" }, read(item(1)), sent("c1"), delivered(1), read()]);
  assert.deepEqual(kinds(d.actions), [
    "readDeferred",
    "deliverInOrder",
    "readDeferred",
    "ackDeferred",
    "joinGroupDialog",
    "forwardToFocus",
  ]);
  assert.equal(only(d.actions, "sendGso").length, 0);
  assert.deepEqual(run(d.state, [sent("c2")]).actions, [{ kind: "forwardToFocus", msrpMessageIds: ["c2"] }]); // joined: on to the focus as it comes
});

test("re-join: client BYE cause=200 discards the rest (as DD-14), other events after it are ignored", () => {
  const r = run(started(), [{ type: "msrpUp" }, read(item(1)), { type: "clientBye", reasons: [] }, delivered(1)]);
  assert.deepEqual(kinds(r.actions), ["readDeferred", "deliverInOrder", "readDeferred", "handleAsBye", "discardDeferred"]);
  assert.ok(r.notes.some((n) => n.includes("ignored in phase ended")));
  assert.deepEqual(rejoinClaims(new Map([[KEY, { owner: "rejoin", status: "delivering" }]]), r.state, r.claim).size, 0);
});

test("re-join bad input: unknown status codes are typed errors, events in the wrong phase are ignored with a note", () => {
  const s = started(inactive());
  for (const status of [0, 99, 1000]) {
    const r = stepRejoinDelivery(s, { type: "restartResponse", via: "focus", status }, policy);
    assert.equal(r.error?.code, "CPM_ERR_BAD_REQUEST");
    assert.equal(r.state.delivery, s.delivery);
  }
  const early = stepRejoinDelivery(s, read(item(1)), policy);
  assert.deepEqual(early.actions, []);
  assert.match(early.notes[0] ?? "", /itemsRead ignored in phase connecting/);
  const noRestart = stepRejoinDelivery(started(), { type: "restartResponse", via: "focus", status: 200 }, policy);
  assert.match(noRestart.notes[0] ?? "", /restartResponse \(focus\) ignored/);
});

test("property (RJ-2): whatever the events, items go out at most once and in UID order; never a throw", () => {
  const uid = fc.integer({ min: 1, max: 10 });
  const ev: fc.Arbitrary<SessionEvent> = fc.oneof(
    fc.constant<SessionEvent>({ type: "msrpUp" }),
    fc.array(uid, { maxLength: 5 }).map((us) => read(...us.map((u) => item(u)))),
    uid.map(delivered),
    fc
      .tuple(uid, fc.constantFrom(408, 415, 481))
      .map(([u, status]): SessionEvent => ({ type: "itemFailed", handle: item(u).handle, status })),
    fc.constant(sent("c")),
    fc.constantFrom(180, 200, 404).map((status): SessionEvent => ({ type: "restartResponse", via: "focus", status })),
  );
  fc.assert(
    fc.property(fc.boolean(), fc.array(ev, { maxLength: 40 }), (active, events) => {
      let s = started(groupSession({ lifecycle: active ? "active" : "inactive" }));
      const uids: number[] = [];
      for (const e of [{ type: "msrpUp" } as SessionEvent, ...events]) {
        const r = stepRejoinDelivery(s, e, policy);
        s = r.state;
        for (const a of only(r.actions, "deliverInOrder")) uids.push(...a.items.map((i) => i.handle.uid));
      }
      assert.deepEqual(
        uids,
        [...new Set(uids)].sort((a, b) => a - b),
      );
    }),
    { numRuns: 500 },
  );
});

test("RJ-1: the PF answers a re-join itself only for an interrupted group it knows the focus of, and not while another re-join of it is delivered", () => {
  const none: DeliveryClaims = new Map();
  const answers = (extra: Partial<GroupSession>, claims = none, cfLegLive = true) =>
    answersRejoin(SERVED_USER, groupSession(extra), claims, cfLegLive);
  assert.equal(answers({ lifecycle: "client-absent" }), true, "RJ-5: the CF side is there to join");
  assert.equal(answers({ lifecycle: "inactive" }), true);
  assert.equal(answers({ lifecycle: "inactive" }, none, false), true, "RJ-3: re-started, no CF leg needed");
  assert.equal(answers({ lifecycle: "active", pendingDeferred: true }), true);
  assert.equal(answers({ lifecycle: "active" }), false, "nothing missed: the focus takes it");
  assert.equal(answers({ lifecycle: "terminated", pendingDeferred: true }), false);
  assert.equal(answers({ lifecycle: "left", pendingDeferred: true }), false);
  assert.equal(answers({ lifecycle: "inactive", focusUri: "" }), false);
  const registration: DeliveryClaims = new Map([[KEY, { owner: "registration", status: "delivering" }]]);
  assert.equal(answers({ lifecycle: "client-absent" }, registration), true, "a re-join takes over");
  const rejoining: DeliveryClaims = new Map([[KEY, { owner: "rejoin", status: "delivering" }]]);
  assert.equal(answers({ lifecycle: "client-absent" }, rejoining), false);
});

test("RJ-1 RJ-5: after a restart the PF lost the CF side: a client-absent group with data pending is still delivered; with nothing pending the re-join goes to the focus (no loop of re-joins the PF cannot join)", () => {
  const none: DeliveryClaims = new Map();
  assert.equal(answersRejoin(SERVED_USER, groupSession({ lifecycle: "client-absent", pendingDeferred: true }), none, false), true);
  assert.equal(answersRejoin(SERVED_USER, groupSession({ lifecycle: "client-absent" }), none, false), false);
});

test("RJ-1: a re-join the PF could not answer (no MSRP endpoint for its offer) ends at once, releases the claim and keeps the data", () => {
  const s = started(groupSession({ lifecycle: "client-absent" }));
  const r = stepRejoinDelivery(
    s,
    { type: "actionUnavailable", action: { kind: "acceptRejoin", clientCallId: "client-call@ue" }, reason: "bad SDP" },
    policy,
  );
  assert.deepEqual(r.actions, []);
  assert.equal(r.claim, undefined);
  assert.equal(r.state.delivery.phase, "ended");
});

test("RJ-3 RJ-4 DD-13: on a re-join too, a focus that is gone (410) -> the conference factory; its 2xx joins after the data with the new focus in the GSO; its refusal is RJ-3 with its code", () => {
  const p = { ...policy, conferenceFactoryUri: "sip:factory@cf.example.net" };
  const s = startRejoinDelivery(
    { type: "rejoinInvite", servedUser: SERVED_USER, clientCallId: "client-call@ue", session: inactive() },
    new Map(),
    p,
  ).state;
  assert.ok(s);
  const up = run(s, [{ type: "msrpUp" }, sent("c1"), { type: "restartResponse", via: "focus", status: 410, reasonPhrase: "Gone" }], p);
  assert.deepEqual(only(up.actions, "restartGroupSession")[0]?.restart.via, "factory");
  const ok = run(
    up.state,
    [{ type: "restartResponse", via: "factory", status: 200, focusUri: "sip:focus-new@cf.example.net", at: AT }, read()],
    p,
  );
  assert.deepEqual(kinds(ok.actions), ["sendGso", "joinGroupDialog", "forwardToFocus"]);
  assert.equal(only(ok.actions, "sendGso")[0]?.gso.lastFocusSessionId, "sip:focus-new@cf.example.net");
  const refused = run(up.state, [{ type: "restartResponse", via: "factory", status: 404, reasonPhrase: "Not Found" }], p);
  assert.deepEqual(refused.actions, [{ kind: "msrpFailureReport", msrpMessageId: "c1", status: 403 }]);
  assert.deepEqual(run(refused.state, [read()], p).actions.at(-1), { kind: "byeToClient", reason: 'SIP;cause=404;text="Not Found"' });
});
