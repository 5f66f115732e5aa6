import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { CpmError } from "../../../src/errors/catalogue.js";
import {
  buildDeliveryInvite,
  CALL_COMPLETED,
  type DeferredDeliveryEvent,
  type DeferredDeliveryState,
  type RegisteredEvent,
  retryDelay,
  startDeferredDelivery,
  stepDeferredDelivery,
} from "../../../src/procedures/deferred-delivery.js";
import { applyClaim, type DeliveryClaims, deliveryKey } from "../../../src/procedures/delivery-guard.js";
import { ACK_BATCH, type DeliveryAction, type DeliveryPolicy, READ_BATCH } from "../../../src/procedures/delivery-session.js";
import { ANONYMOUS_KEYWORD } from "../../../src/procedures/device-view.js";
import { buildRestartInvite } from "../../../src/procedures/restart-invite.js";
import type { GroupSession } from "../../../src/session/group-session.js";
import { bodyParts } from "../../../src/sip/multipart.js";
import { parseGso } from "../../../src/xml/gso.js";
import { parseResourceLists } from "../../../src/xml/resource-lists.js";
import { AT, groupSession, item, kinds, only, policy, SERVED_USER, uidsOf } from "../../fixtures/delivery.js";

const CLIENT = { contact: '<sip:+16135551200@10.0.0.5:5060;transport=tcp>;+sip.instance="<urn:gsma:imei:1>"' };
const ICSI_TAG = '+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session"';
const KEY = deliveryKey(SERVED_USER, "call-1@cf", ANONYMOUS_KEYWORD);

const registered = (sessions: GroupSession[], extra: Partial<RegisteredEvent> = {}): RegisteredEvent => ({
  type: "registered",
  servedUser: SERVED_USER,
  client: CLIENT,
  pending: sessions.map((s) => ({ conversationId: s.conversationId, contributionId: s.contributionId, count: 2, session: s })),
  ...extra,
});

function start(session = groupSession(), p: DeliveryPolicy = policy) {
  const r = startDeferredDelivery(registered([session]), new Map(), p);
  const first = r.deliveries[0];
  assert.ok(first, `no delivery started: ${r.notes.join("; ")}`);
  return { state: first.state, actions: first.actions, claims: r.claims, notes: [...r.notes, ...first.notes] };
}

/** Runs events in order; returns the last state and every action, in order. */
function run(state: DeferredDeliveryState, events: DeferredDeliveryEvent[], p: DeliveryPolicy = policy) {
  const actions: DeliveryAction[] = [];
  const notes: string[] = [];
  let claim: ReturnType<typeof stepDeferredDelivery>["claim"];
  for (const ev of events) {
    const r = stepDeferredDelivery(state, ev, p);
    assert.equal(r.error, undefined, `${ev.type}: ${r.error?.message}`);
    state = r.state;
    claim = r.claim;
    actions.push(...r.actions);
    notes.push(...r.notes);
  }
  return { state, actions, notes, claim };
}

/** The client answered 200, MSRP is up. */
const connected: DeferredDeliveryEvent[] = [{ type: "inviteResponse", status: 200 }, { type: "msrpUp" }];
const read = (...items: ReturnType<typeof item>[]): DeferredDeliveryEvent => ({ type: "itemsRead", items, at: AT });
const delivered = (uid: number): DeferredDeliveryEvent => ({ type: "itemDelivered", handle: item(uid).handle });

test("DD-1: a register notification starts one delivery per group session with pending data, and claims it", () => {
  const other = groupSession({ key: "call-2@cf", conversationId: "conv-2", contributionId: "c-2" });
  const ev = registered([groupSession(), other]);
  ev.pending.push({ conversationId: "conv-gone", contributionId: "c-gone", count: 4, session: undefined });
  ev.pending.push({ conversationId: "conv-empty", contributionId: "c-e", count: 0, session: groupSession({ key: "call-3@cf" }) });
  const r = startDeferredDelivery(ev, new Map(), policy);
  assert.equal(r.deliveries.length, 2);
  assert.deepEqual(
    r.deliveries.map((d) => kinds(d.actions)),
    [["sendInvite"], ["sendInvite"]],
  );
  assert.deepEqual([...r.claims.keys()], [KEY, deliveryKey(SERVED_USER, "call-2@cf", ANONYMOUS_KEYWORD)]);
  assert.deepEqual(r.claims.get(KEY), { owner: "registration", status: "delivering" });
  assert.ok(r.notes.some((n) => n.startsWith("conv-gone/c-gone: group session unknown")));
});

test("DD-1: a refreshed registration while a delivery runs does not deliver twice", () => {
  const first = start();
  const again = startDeferredDelivery(registered([groupSession()]), first.claims, policy);
  assert.equal(again.deliveries.length, 0);
  assert.ok(again.notes.some((n) => n.includes("registration delivering: not delivered again")));
});

test("DD-1/DD-4: no CPMDeferredMsgMgmtURI configured → delivery off, nothing claimed", () => {
  const r = startDeferredDelivery(registered([groupSession()]), new Map(), { ...policy, deferredMsgMgmtUri: "" });
  assert.equal(r.deliveries.length, 0);
  assert.equal(r.claims.size, 0);
  assert.match(r.notes[0] ?? "", /deferredMsgMgmtUri is not configured/);
});

test("DD-2/DD-3/DD-4/DD-5: the delivery INVITE's rendered headers", () => {
  const { actions } = start();
  const [send] = only(actions, "sendInvite");
  assert.ok(send);
  assert.equal(send.invite.requestUri, "sip:+16135551200@10.0.0.5:5060;transport=tcp");
  assert.deepEqual(send.invite.headers, [
    ["To", "<tel:+16135551200>"],
    ["From", "<sip:focus-7f3a@cf.example.net>"],
    ["Contact", `<sip:focus-7f3a@cf.example.net>;isfocus;${ICSI_TAG}`],
    ["Accept-Contact", `*;${ICSI_TAG}`],
    ["P-Asserted-Identity", "<sip:deferred@pf.example.net>"],
    ["P-Asserted-Service", "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session"],
    ["Conversation-ID", "conv-7f3a"],
    ["Contribution-ID", "contrib-1"],
    ["Subject", "Trip"],
    ["Content-Type", "multipart/mixed;boundary=cpm-pf-boundary"],
  ]);
});

test("DD-3 (delivery.contact \"pf\"): the delivery INVITE's Contact is the PF's own UA with the CPM ICSI and no ;isfocus; From still names the focus; without the UA's address it is a configuration error", () => {
  const own = { ...policy, contact: "pf" as const, uaUri: "sip:10.1.2.3:5070" };
  const inv = buildDeliveryInvite(SERVED_USER, CLIENT, groupSession(), own);
  const headers = new Map(inv.headers);
  assert.equal(headers.get("Contact"), `<sip:10.1.2.3:5070>;${ICSI_TAG}`);
  assert.equal(headers.get("From"), "<sip:focus-7f3a@cf.example.net>");
  assert.throws(
    () => buildDeliveryInvite(SERVED_USER, CLIENT, groupSession(), { ...own, uaUri: undefined }),
    (e: unknown) => e instanceof CpmError && e.code === "CPM_ERR_CONFIG",
  );
});

test("DD-3: the original invitation's Referred-By goes into the delivery INVITE (the client shows who invited the user)", () => {
  const [send] = only(start(groupSession({ referredBy: '"Alice" <sip:alice@example.net>' })).actions, "sendInvite");
  const headers = send?.invite.headers ?? [];
  assert.deepEqual(
    headers.find(([n]) => n === "Referred-By"),
    ["Referred-By", '"Alice" <sip:alice@example.net>'],
  );
  assert.equal(headers.at(-1)?.[0], "Content-Type");
});

test("DD-3 TS 24.229 5.7.3: with delivery.terminatingRoute the INVITE goes through the S-CSCF (pre-loaded Route), addressed to the public identity, the registered device picked by its +sip.instance (RFC 3841 require;explicit)", () => {
  const viaScscf = { ...policy, terminatingRoute: "sip:scscf.ims.example.net:6060" };
  const client = { ...CLIENT, instanceId: '"<urn:gsma:imei:1>"' };
  const inv = buildDeliveryInvite(SERVED_USER, client, groupSession(), viaScscf);
  assert.equal(inv.requestUri, SERVED_USER);
  assert.deepEqual(inv.route, ["<sip:scscf.ims.example.net:6060;lr>"]);
  const accept = inv.headers.filter(([n]) => n === "Accept-Contact").map(([, v]) => v);
  assert.deepEqual(accept, [`*;${ICSI_TAG}`, '*;+sip.instance="<urn:gsma:imei:1>";require;explicit']);
  // without it: straight to the registered contact, no Route beyond Kamailio's
  const direct = buildDeliveryInvite(SERVED_USER, client, groupSession(), policy);
  assert.equal(direct.requestUri, "sip:+16135551200@10.0.0.5:5060;transport=tcp");
  assert.deepEqual(direct.route, []);
  assert.equal(direct.headers.filter(([n]) => n === "Accept-Contact").length, 1);
});

test("DD-2: the body carries the SDP and the latest participants as an RFC 5366 resource-list", () => {
  const session = groupSession({ participants: [{ name: "Carol & co", commAddr: "tel:+16135551212" }] });
  const inv = buildDeliveryInvite(SERVED_USER, CLIENT, session, policy);
  const ct = inv.headers.find(([n]) => n === "Content-Type")?.[1];
  const parts = bodyParts(ct, Buffer.from(inv.body));
  assert.deepEqual(
    parts.map((p) => p.contentType),
    ["application/sdp", "application/resource-lists+xml"],
  );
  assert.equal(parts[1]?.headers.get("content-disposition"), "recipient-list");
  assert.deepEqual(parseResourceLists(parts[1]?.body ?? Buffer.alloc(0)), [{ uri: "tel:+16135551212", displayName: "Carol & co" }]);
  assert.equal(`${parts[0]?.body.toString()}\r\n`, inv.sdp);
});

test("DD-2: a snapshot with no participants still delivers, with an empty list and a note", () => {
  const { actions, notes } = start(groupSession({ participants: [] }));
  const [send] = only(actions, "sendInvite");
  assert.ok(send);
  const ct = send.invite.headers.find(([n]) => n === "Content-Type")?.[1];
  assert.deepEqual(parseResourceLists(bodyParts(ct, Buffer.from(send.invite.body))[1]?.body ?? ""), []);
  assert.ok(notes.includes("no participants known: resource-list sent empty"));
});

test("DD-6: the original offer with a=sendrecv replacing its direction, MSRP attributes kept", () => {
  const offer =
    "v=0\r\no=cf 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\na=sendonly\r\nm=message 7394 TCP/MSRP *\r\na=accept-types:message/cpim\r\na=path:msrp://127.0.0.1:7394/s1;tcp\r\na=recvonly\r\n";
  const { sdp } = buildDeliveryInvite(SERVED_USER, CLIENT, groupSession({ sdpOffer: offer }), policy);
  assert.deepEqual(
    sdp.split("\r\n").filter((l) => /^a=(sendrecv|sendonly|recvonly|inactive)$/.test(l)),
    ["a=sendrecv"],
  );
  assert.ok(sdp.includes("a=path:msrp://127.0.0.1:7394/s1;tcp\r\n"));
  assert.ok(sdp.includes("a=accept-types:message/cpim\r\n"));
});

test("DD-6: an offer without a direction attribute gets a=sendrecv", () => {
  const offer =
    "v=0\r\no=cf 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=message 7394 TCP/MSRP *\r\na=path:msrp://127.0.0.1:7394/s1;tcp\r\n";
  const { sdp } = buildDeliveryInvite(SERVED_USER, CLIENT, groupSession({ sdpOffer: offer }), policy);
  assert.match(sdp, /m=message 7394 TCP\/MSRP \*\r\n(?:a=.*\r\n)*a=sendrecv\r\n/);
});

test("DD-6: no usable SDP offer → typed error, no INVITE, claim released, data kept", () => {
  const r = startDeferredDelivery(registered([groupSession({ sdpOffer: "" })]), new Map(), policy);
  const d = r.deliveries[0];
  assert.ok(d);
  assert.equal(d.error?.code, "CPM_ERR_BAD_SDP");
  assert.deepEqual(d.actions, []);
  assert.equal(d.claim, undefined);
  assert.equal(r.claims.size, 0);
  assert.ok(r.notes.some((n) => n.endsWith("empty SDP")));
});

test("DD-7/DD-10: provisional ignored, 200 → ACK, MSRP up → the queue is read and delivered in UID order", () => {
  const { state } = start();
  const r = run(state, [{ type: "inviteResponse", status: 180 }, ...connected, read(item(3), item(1), item(2, "imdn"))]);
  assert.deepEqual(kinds(r.actions), ["sendAck", "readDeferred", "deliverInOrder", "readDeferred"]);
  const [readAction, ahead] = only(r.actions, "readDeferred");
  assert.equal(readAction?.after, undefined, "the first read starts at the oldest item");
  assert.deepEqual(ahead?.after, { afterUid: 3, uidValidity: "7" }, "the next batch is read ahead, above the last UID taken");
  assert.deepEqual(readAction?.queue, {
    sessionKey: "call-1@cf",
    servedUser: SERVED_USER,
    conversationId: "conv-7f3a",
    contributionId: "contrib-1",
    focus: "sip:focus-7f3a@cf.example.net",
    device: ANONYMOUS_KEYWORD,
  });
  assert.deepEqual(
    only(r.actions, "deliverInOrder")[0]?.items.map((i) => i.handle.uid),
    [1, 2, 3],
  );
  assert.ok(r.notes.includes("provisional 180"));
});

test("DD-10: the next batch is read ahead while one is delivered; confirmed items are removed as one set once nothing is in flight; empty read = drained", () => {
  const { state } = start(groupSession({ lifecycle: "inactive" }));
  const r = run(state, [...connected, read(item(1), item(2)), delivered(2), delivered(1), read(item(3)), delivered(3), read()]);
  assert.deepEqual(kinds(r.actions), [
    "sendAck",
    "readDeferred",
    "deliverInOrder",
    "readDeferred",
    "ackDeferred",
    "deliverInOrder",
    "readDeferred",
    "ackDeferred",
  ]);
  assert.deepEqual(uidsOf(r.actions, "ackDeferred"), [[2, 1], [3]]);
  assert.deepEqual(
    only(r.actions, "readDeferred").map((a) => a.after?.afterUid),
    [undefined, 2, 3],
  );
  assert.equal(r.state.delivery.phase, "delivered");
  assert.deepEqual(r.claim, { owner: "registration", status: "connected" });
});

test("DD-10: a long batch is retired in sets of ACK_BATCH while the rest is in flight (a crash re-delivers at most that many)", () => {
  const { state } = start(groupSession({ lifecycle: "inactive" }));
  const items = Array.from({ length: ACK_BATCH + 5 }, (_, i) => item(i + 1));
  const r = run(state, [...connected, read(...items), ...items.map((i) => delivered(i.handle.uid))]);
  const sets = uidsOf(r.actions, "ackDeferred");
  assert.deepEqual(
    sets.map((u) => u.length),
    [ACK_BATCH, 5],
  );
  assert.deepEqual(
    sets.flat(),
    items.map((i) => i.handle.uid),
    "every confirmed item removed once, in order",
  );
});

test("DD-10: items read again before their ack are not delivered twice, older ones never after newer", () => {
  const { state } = start();
  const r = run(state, [...connected, read(item(5), item(6)), delivered(5), delivered(6), read(item(5), item(6), item(4), item(7))]);
  assert.deepEqual(uidsOf(r.actions, "deliverInOrder"), [[5, 6], [7]]);
  assert.ok(r.notes.some((n) => n.includes("item uid 4 is not above uid 6")));
});

test("DD-10: a read that finds nothing new while items are in flight is not repeated until they are all through", () => {
  const { state } = start(groupSession({ lifecycle: "inactive" }));
  const r = run(state, [...connected, read(item(1), item(2)), read(), delivered(1)]);
  assert.deepEqual(kinds(r.actions), ["sendAck", "readDeferred", "deliverInOrder", "readDeferred"]);
  assert.equal(r.state.delivery.phase, "delivering");
  const d = run(r.state, [delivered(2), read()]);
  assert.deepEqual(kinds(d.actions), ["ackDeferred", "readDeferred"]);
  assert.equal(d.state.delivery.phase, "delivered");
});

test("DD-10: at most one batch is read ahead of what is in flight", () => {
  const { state } = start(groupSession({ lifecycle: "inactive" }));
  const batch = (from: number) => read(...Array.from({ length: READ_BATCH }, (_, i) => item(from + i)));
  const r = run(state, [...connected, batch(1), batch(READ_BATCH + 1)]);
  assert.deepEqual(kinds(r.actions), ["sendAck", "readDeferred", "deliverInOrder", "readDeferred", "deliverInOrder"]);
  // two batches in flight: the next read waits until one batch is through
  const almost = run(
    r.state,
    Array.from({ length: READ_BATCH - 1 }, (_, i) => delivered(i + 1)),
  );
  assert.deepEqual(only(almost.actions, "readDeferred"), []);
  const d = run(almost.state, [delivered(READ_BATCH)]);
  assert.deepEqual(
    only(d.actions, "readDeferred").map((a) => a.after?.afterUid),
    [2 * READ_BATCH],
  );
});

test("DD-8: 603 → discard the deferred data; active group session → BYE to the focus, release media, unsubscribe", () => {
  const { state } = start();
  const r = stepDeferredDelivery(state, { type: "inviteResponse", status: 603 }, policy);
  assert.deepEqual(r.actions, [
    {
      kind: "discardDeferred",
      queue: {
        sessionKey: "call-1@cf",
        servedUser: SERVED_USER,
        conversationId: "conv-7f3a",
        contributionId: "contrib-1",
        focus: "sip:focus-7f3a@cf.example.net",
        device: ANONYMOUS_KEYWORD,
      },
    },
    { kind: "sendByeToFocus", sessionKey: "call-1@cf", reason: 'SIP;cause=200;text="Call completed"' },
    { kind: "releaseMedia", sessionKey: "call-1@cf" },
    { kind: "unsubscribeConference", sessionKey: "call-1@cf", focusUri: "sip:focus-7f3a@cf.example.net" },
  ]);
  assert.equal(CALL_COMPLETED, 'SIP;cause=200;text="Call completed"');
  assert.equal(r.state.invitePhase, "ended");
  assert.equal(r.claim, undefined);
});

test("DD-8: 603 for an inactive group session only discards", () => {
  const { state } = start(groupSession({ lifecycle: "inactive" }));
  assert.deepEqual(kinds(stepDeferredDelivery(state, { type: "inviteResponse", status: 603 }, policy).actions), ["discardDeferred"]);
});

test("DD-9: other errors re-attempt with back-off (initial × factor^n, capped), then give up keeping the data", () => {
  const p = { ...policy, retryAttempts: 3, retryInitialMs: 1000, retryFactor: 3, retryMaxMs: 5000 };
  const { state } = start(groupSession(), p);
  const fresh = groupSession({ participants: [{ name: "Dan", commAddr: "tel:+16135551299" }] });
  const r = run(
    state,
    [
      { type: "inviteResponse", status: 480 },
      { type: "retryTimer", session: fresh },
      { type: "inviteResponse", status: 486 },
      { type: "retryTimer" },
      { type: "inviteResponse", status: 302 },
      { type: "retryTimer" },
      { type: "inviteResponse", status: 500 },
    ],
    p,
  );
  assert.deepEqual(
    only(r.actions, "scheduleRetry").map((a) => [a.attempt, a.delayMs]),
    [
      [1, 1000],
      [2, 3000],
      [3, 5000],
    ],
  );
  assert.equal(only(r.actions, "sendInvite").length, 3);
  const retried = only(r.actions, "sendInvite")[0]?.invite.body ?? "";
  assert.ok(retried.includes('<entry uri="tel:+16135551299"><display-name>Dan</display-name></entry>'));
  assert.ok(!kinds(r.actions).includes("discardDeferred"));
  assert.equal(r.state.invitePhase, "ended");
  assert.ok(r.notes.some((n) => n.startsWith("500: 3 retries done; data kept")));
  assert.equal(retryDelay(10, policy), 900_000);
});

test("DD-1 DD-9: the device registers again while a retry waits -> the attempt is made now, to the contact just registered, the re-attempts counted from there; once the delivery session is up a registration changes nothing", () => {
  const p = { ...policy, retryAttempts: 1, retryInitialMs: 60_000 };
  const { state } = start(groupSession(), p);
  const moved = { contact: "<sip:+16135551200@10.0.0.9:5060>" };
  const r = run(
    state,
    [
      { type: "inviteResponse", status: 480 },
      { type: "registeredAgain", client: moved },
    ],
    p,
  );
  const invites = only(r.actions, "sendInvite");
  assert.equal(invites.length, 1, "the second attempt did not wait for its timer");
  assert.equal(invites[0]?.invite.requestUri, "sip:+16135551200@10.0.0.9:5060");
  assert.equal(r.state.attempts, 1);
  assert.ok(r.notes.includes("registered again while a retry waited: re-attempted now"));
  // a failure of that attempt still has its DD-9 re-attempt (counted from the registration)
  assert.deepEqual(kinds(run(r.state, [{ type: "inviteResponse", status: 480 }], p).actions), ["scheduleRetry"]);
  const up = run(state, connected, p);
  assert.deepEqual(run(up.state, [{ type: "registeredAgain", client: moved }], p).actions, []);
});

test("DD-1: the device registers again at another contact while the delivery INVITE is under way (a crash's resumed delivery ringing a contact the device left) -> that INVITE is dropped and the attempt goes to the new contact at once", () => {
  const { state } = start();
  const moved = { contact: "<sip:+16135551200@10.0.0.9:5060>" };
  const r = run(state, [{ type: "registeredAgain", client: moved }]);
  assert.deepEqual(kinds(r.actions), ["abandonInvite", "sendInvite"], "the old INVITE dropped before the new one");
  assert.equal(only(r.actions, "sendInvite")[0]?.invite.requestUri, "sip:+16135551200@10.0.0.9:5060");
  assert.equal(r.state.invitePhase, "inviting");
  assert.equal(r.state.attempts, 1, "the re-attempts count from the registration");
  assert.equal(r.state.client, moved);
  assert.ok(r.notes.some((n) => n.startsWith("registered again at another contact during the delivery INVITE")));
  // the new INVITE's answer decides
  assert.equal(run(r.state, connected).state.invitePhase, "answered");
  // the registration of a claimed device tells the running delivery (startDeferredDelivery's `again`)
  const first = startDeferredDelivery(registered([groupSession()]), new Map(), policy);
  const again = startDeferredDelivery(registered([groupSession()], { client: moved }), first.claims, policy);
  assert.deepEqual(again.again, [{ key: KEY, client: moved }]);
});

test("DD-1: a refresh of the same contact (other parameters) while the delivery INVITE is under way -> that INVITE's answer decides; if it fails the next attempt goes at once", () => {
  const { state } = start();
  const refreshed = { contact: "<sip:+16135551200@10.0.0.5:5060;transport=tcp>;expires=600000" };
  const r = run(state, [{ type: "registeredAgain", client: refreshed }]);
  assert.deepEqual(r.actions, [], "no second INVITE beside the one under way");
  const failed = run(r.state, [{ type: "inviteResponse", status: 408 }]);
  assert.deepEqual(kinds(failed.actions), ["sendInvite"], "no retry wait");
  assert.equal(failed.state.reRegistered, undefined);
  const answered = run(r.state, connected);
  assert.equal(answered.state.invitePhase, "answered", "the INVITE under way answered: the delivery goes on there");
});

test("DD-9: a delivery INVITE that could not be sent (actionUnavailable) is a failed attempt: re-attempted, data kept", () => {
  const first = start();
  const invite = only(first.actions, "sendInvite")[0];
  assert.ok(invite);
  const r = run(first.state, [{ type: "actionUnavailable", action: invite, reason: "no media leg" }]);
  assert.deepEqual(kinds(r.actions), ["scheduleRetry"]);
  assert.equal(r.state.invitePhase, "retryWait");
  assert.ok(!kinds(r.actions).includes("discardDeferred"));
  // once answered, an unsendable INVITE is stale news
  const answered = run(first.state, connected);
  assert.deepEqual(run(answered.state, [{ type: "actionUnavailable", action: invite, reason: "late" }]).actions, []);
});

test("DD-9: retryAttempts 0 turns re-attempts off", () => {
  const p = { ...policy, retryAttempts: 0 };
  const { state } = start(groupSession(), p);
  const r = stepDeferredDelivery(state, { type: "inviteResponse", status: 480 }, p);
  assert.deepEqual(r.actions, []);
  assert.equal(r.state.invitePhase, "ended");
  assert.ok(r.notes.some((n) => n.includes("retries off")));
});

test("DD-7/DD-9: a 2xx without a usable MSRP answer -> ACK, BYE 488 to the client, and a failed attempt (re-attempted, or the end with the data kept)", () => {
  const { state } = start();
  const r = stepDeferredDelivery(state, { type: "inviteResponse", status: 200, answerUnusable: "no a=path" }, policy);
  assert.deepEqual(kinds(r.actions), ["sendAck", "byeToClient", "scheduleRetry"]);
  assert.deepEqual(only(r.actions, "byeToClient")[0]?.reason, 'SIP;cause=488;text="Not Acceptable Here"');
  assert.equal(r.state.invitePhase, "retryWait");
  assert.ok(r.notes.includes("2xx without a usable MSRP answer (no a=path)"));
  const p = { ...policy, retryAttempts: 0 };
  const off = stepDeferredDelivery(start(groupSession(), p).state, { type: "inviteResponse", status: 200, answerUnusable: "x" }, p);
  assert.deepEqual(kinds(off.actions), ["sendAck", "byeToClient"]);
  assert.equal(off.state.invitePhase, "ended");
  assert.equal(off.claim, undefined);
  assert.ok(!kinds(off.actions).includes("discardDeferred"), "the data stays queued");
});

test("DD-11 (MAY, on): interim GSOs delivered in place, then a GSO with the latest participants", () => {
  const p = { ...policy, sendInterimGsos: true };
  const { state } = start(groupSession({ lifecycle: "inactive" }), p);
  const r = run(state, [...connected, read(item(1), item(2, "gso"), item(3)), delivered(1), delivered(2), delivered(3), read()], p);
  assert.deepEqual(
    only(r.actions, "deliverInOrder")[0]?.items.map((i) => [i.handle.uid, i.kind]),
    [
      [1, "message"],
      [2, "gso"],
      [3, "message"],
    ],
  );
  const [gso] = only(r.actions, "sendGso");
  assert.ok(gso);
  assert.equal(gso.contentType, "application/group-state-object+xml");
  const parsed = parseGso(gso.body);
  assert.equal(parsed.lastFocusSessionId, "sip:focus-7f3a@cf.example.net");
  assert.equal(parsed.contributionId, "contrib-1");
  assert.deepEqual(
    parsed.participants.map((x) => x.commAddr),
    ["tel:+16135551210", "tel:+16135551211"],
  );
  assert.deepEqual(parsed.timestamp, AT);
});

test("DD-11 (MAY, off): interim GSOs are acked without being delivered, no GSO sent", () => {
  const { state } = start(groupSession({ lifecycle: "inactive" }));
  const r = run(state, [...connected, read(item(1, "gso"), item(2)), delivered(2), read()]);
  assert.deepEqual(uidsOf(r.actions, "deliverInOrder"), [[2]]);
  assert.deepEqual(only(r.actions, "ackDeferred")[0]?.handles, [item(1, "gso").handle]);
  assert.equal(only(r.actions, "sendGso").length, 0);
});

test("DD-12: active group session → re-join with the conference once the queue is drained; MAY unsubscribe", () => {
  const { state } = start();
  const r = run(state, [...connected, read(item(1)), delivered(1), read()]);
  assert.deepEqual(r.actions.slice(-3), [
    { kind: "readDeferred", queue: only(r.actions, "readDeferred")[0]?.queue, limit: READ_BATCH, after: { afterUid: 1, uidValidity: "7" } },
    { kind: "ackDeferred", handles: [item(1).handle] },
    { kind: "rejoinConference", sessionKey: "call-1@cf" },
  ]);
  const p = { ...policy, unsubscribeOnRejoin: true };
  const u = run(start(groupSession(), p).state, [...connected, read()], p);
  assert.deepEqual(u.actions.slice(-2), [
    { kind: "rejoinConference", sessionKey: "call-1@cf" },
    { kind: "unsubscribeConference", sessionKey: "call-1@cf", focusUri: "sip:focus-7f3a@cf.example.net" },
  ]);
  // SENDs the client made during the delivery go to the focus once joined, in order
  const held = run(start().state, [
    ...connected,
    read(item(1)),
    { type: "clientSentMedia", media: { msrpMessageId: "c0", kind: "imdn", failureReport: "yes" } },
    delivered(1),
    read(),
  ]);
  assert.deepEqual(held.actions.slice(-2), [
    { kind: "rejoinConference", sessionKey: "call-1@cf" },
    { kind: "forwardToFocus", msrpMessageIds: ["c0"] },
  ]);
  assert.ok(!kinds(held.actions).includes("restartGroupSession"));
  // joined: each SEND of the client goes on to the focus as it comes (no restart, no hold)
  const after = run(u.state, [{ type: "clientSentMedia", media: { msrpMessageId: "c1", kind: "message", failureReport: "yes" } }], p);
  assert.deepEqual(after.actions, [{ kind: "forwardToFocus", msrpMessageIds: ["c1"] }]);
});

test("BYE-B7 DD-12: the CF ends the group while the delivery session is joined with it -> that session ends too, with the PF's Reason; before the join, the record is taken and no join follows", () => {
  const joined = run(start().state, [...connected, read()]);
  assert.ok(joined.state.delivery.joined);
  const ended = groupSession({ lifecycle: "inactive", endCause: 480 });
  const r = run(joined.state, [{ type: "groupEnded", session: ended, reason: "SIP;cause=480" }]);
  assert.deepEqual(only(r.actions, "byeToClient"), [{ kind: "byeToClient", reason: "SIP;cause=480" }]);
  assert.equal(r.state.delivery.phase, "ended");
  // still delivering: nothing goes out, and the drain finds the group inactive (no join, DD-13 instead)
  const early = run(start().state, [...connected, { type: "groupEnded", session: ended, reason: "SIP;cause=480" }, read()]);
  assert.equal(only(early.actions, "byeToClient").length, 0);
  assert.equal(only(early.actions, "rejoinConference").length, 0);
  assert.equal(early.state.delivery.session.lifecycle, "inactive");
});

test("RJ-4: a held message that asked for negative-delivery gets the 'failed' IMDN after its failure REPORT when the restart fails", () => {
  const { state } = start(groupSession({ lifecycle: "inactive" }));
  const before = run(state, [
    ...connected,
    read(),
    { type: "clientSentMedia", media: { msrpMessageId: "c1", kind: "message", failureReport: "yes", negativeDelivery: true } },
  ]);
  const r = run(before.state, [{ type: "restartResponse", via: "focus", status: 404, reasonPhrase: "Not Found" }]);
  const kinds = r.actions.map((a) => a.kind);
  assert.deepEqual(kinds.slice(-3), ["msrpFailureReport", "negativeDeliveryImdn", "byeToClient"]);
  assert.deepEqual(r.actions.at(-2), { kind: "negativeDeliveryImdn", msrpMessageId: "c1" });
});

test("DD-13: inactive group session → the client's first IMDN / isComposing / message re-starts it (once), joined after", () => {
  const session = groupSession({ lifecycle: "inactive" });
  const { state } = start(session);
  const media = (id: string, kind: "message" | "imdn" | "isComposing") =>
    ({ type: "clientSentMedia", media: { msrpMessageId: id, kind, failureReport: "yes" } }) as const;
  const r = run(state, [
    ...connected,
    read(),
    media("c1", "isComposing"),
    media("c2", "message"),
    { type: "restartResponse", via: "focus", status: 200 },
  ]);
  assert.deepEqual(kinds(r.actions), ["sendAck", "readDeferred", "restartGroupSession", "joinGroupDialog", "forwardToFocus"]);
  assert.deepEqual(only(r.actions, "restartGroupSession")[0]?.restart, {
    sessionKey: "call-1@cf",
    via: "focus",
    focusUri: "sip:focus-7f3a@cf.example.net",
    factoryUri: "",
    conversationId: "conv-7f3a",
    contributionId: "contrib-1",
    subject: "Trip",
    participants: [
      { uri: "tel:+16135551210", displayName: "Bob" },
      { uri: "tel:+16135551211", displayName: "" },
    ],
  });
  assert.deepEqual(only(r.actions, "forwardToFocus")[0]?.msrpMessageIds, ["c1", "c2"]);
});

test("DD-13: the re-start fails → failure REPORTs for the client's SENDs, BYE with the CF's cause (as RJ-3/RJ-4)", () => {
  const { state } = start(groupSession({ lifecycle: "inactive" }));
  const r = run(state, [
    ...connected,
    read(),
    { type: "clientSentMedia", media: { msrpMessageId: "c1", kind: "message", failureReport: "yes" } },
    { type: "restartResponse", via: "focus", status: 404, reasonPhrase: "Not Found" },
  ]);
  assert.deepEqual(r.actions.slice(-2), [
    { kind: "msrpFailureReport", msrpMessageId: "c1", status: 403 },
    { kind: "byeToClient", reason: 'SIP;cause=404;text="Not Found"' },
  ]);
  assert.equal(r.state.invitePhase, "ended");
});

test("DD-13: a re-start nothing can send (actionUnavailable) is a failed re-start: failure REPORTs, BYE cause=503", () => {
  const { state } = start(groupSession({ lifecycle: "inactive" }));
  const before = run(state, [
    ...connected,
    read(),
    { type: "clientSentMedia", media: { msrpMessageId: "c1", kind: "message", failureReport: "yes" } },
    { type: "clientSentMedia", media: { msrpMessageId: "c2", kind: "isComposing", failureReport: "no" } },
  ]);
  const restart = only(before.actions, "restartGroupSession")[0];
  assert.ok(restart);
  const r = run(before.state, [{ type: "actionUnavailable", action: restart, reason: "no executor" }]);
  assert.deepEqual(r.actions, [
    { kind: "msrpFailureReport", msrpMessageId: "c1", status: 408 },
    { kind: "byeToClient", reason: 'SIP;cause=503;text="Service Unavailable"' },
  ]);
  assert.equal(r.state.invitePhase, "ended");
  assert.ok(r.notes.some((n) => n.startsWith("restartGroupSession not executed")));
});

test("DD-12: a join nothing can make (actionUnavailable) ends the delivery after the deferred items with cause 200; held SENDs get failure REPORTs", () => {
  const { state } = start();
  const drained = run(state, [
    ...connected,
    read(item(1)),
    { type: "clientSentMedia", media: { msrpMessageId: "c0", kind: "message", failureReport: "yes" } },
    delivered(1),
    read(),
  ]);
  const rejoin = only(drained.actions, "rejoinConference")[0];
  const forward = only(drained.actions, "forwardToFocus")[0];
  assert.ok(rejoin && forward);
  const r = run(drained.state, [
    { type: "actionUnavailable", action: rejoin, reason: "no executor" },
    { type: "actionUnavailable", action: forward, reason: "no executor" },
  ]);
  assert.deepEqual(r.actions, [
    { kind: "msrpFailureReport", msrpMessageId: "c0", status: 408 },
    { kind: "byeToClient", reason: CALL_COMPLETED },
  ]);
  assert.equal(r.state.invitePhase, "ended");
  assert.equal(r.claim, undefined, "the delivery is over: claim released");
});

test("DD-12: held SENDs a forward cannot take (actionUnavailable) get failure REPORTs; the joined delivery goes on", () => {
  const { state } = start();
  const drained = run(state, [
    ...connected,
    read(item(1)),
    { type: "clientSentMedia", media: { msrpMessageId: "c0", kind: "imdn", failureReport: "yes" } },
    delivered(1),
    read(),
  ]);
  const forward = only(drained.actions, "forwardToFocus")[0];
  assert.ok(forward);
  const r = run(drained.state, [{ type: "actionUnavailable", action: forward, reason: "focus unreachable" }]);
  assert.deepEqual(r.actions, [{ kind: "msrpFailureReport", msrpMessageId: "c0", status: 408 }]);
  assert.notEqual(r.state.invitePhase, "ended");
  assert.deepEqual(r.state.delivery.held, []);
});

test("DD-14: client BYE cause=200 during delivery → handled as a BYE, the remaining deferred data discarded", () => {
  const { state } = start();
  const r = run(state, [...connected, read(item(1), item(2)), delivered(1), { type: "clientBye", reasons: ['SIP;cause=200;text="bye"'] }]);
  assert.deepEqual(r.actions.slice(-2), [
    { kind: "handleAsBye", reason: 'SIP;cause=200;text="bye"', towardsFocus: false },
    { kind: "discardDeferred", queue: only(r.actions, "readDeferred")[0]?.queue },
  ]);
  assert.equal(r.state.invitePhase, "ended");
  assert.equal(r.claim, undefined);
  // anything after the BYE is ignored
  const late = stepDeferredDelivery(r.state, delivered(2), policy);
  assert.deepEqual(late.actions, []);
});

test("DD-14: a client BYE with another cause keeps the undelivered data; after the re-join it goes to the focus too", () => {
  const { state } = start();
  const r = run(state, [...connected, read(), { type: "clientBye", reasons: ["SIP;cause=503"] }]);
  assert.deepEqual(r.actions.slice(-1), [{ kind: "handleAsBye", reason: "SIP;cause=503", towardsFocus: true }]);
  assert.ok(r.notes.includes("client BYE cause 503: undelivered items kept"));
});

test("item failures: a refusal (415) drops the item, a broken MSRP session (481) stops and keeps the rest", () => {
  const { state } = start();
  const failed = (uid: number, status: number): DeferredDeliveryEvent => ({ type: "itemFailed", handle: item(uid).handle, status });
  const r = run(state, [...connected, read(item(1), item(2), item(3)), failed(1, 415), delivered(2), failed(3, 481)]);
  assert.deepEqual(
    only(r.actions, "ackDeferred").map((a) => a.handles.map((h) => h.uid)),
    [[1, 2]],
    "the refused and the confirmed item leave the queue (before the BYE), the one the broken session did not deliver stays",
  );
  assert.deepEqual(r.actions.at(-1), { kind: "byeToClient", reason: 'SIP;cause=503;text="Service Unavailable"' });
  assert.equal(r.state.invitePhase, "ended");
});

test("bad input: unknown status codes are typed errors that leave the state unchanged", () => {
  const { state } = start();
  for (const status of [99, 700, 2.5, Number.NaN]) {
    const r = stepDeferredDelivery(state, { type: "inviteResponse", status }, policy);
    assert.equal(r.error?.code, "CPM_ERR_BAD_REQUEST");
    assert.equal(r.state, state);
    assert.deepEqual(r.actions, []);
  }
  const up = run(state, [...connected, read(item(1))]).state;
  const r = stepDeferredDelivery(up, { type: "itemFailed", handle: item(1).handle, status: 200 }, policy);
  assert.equal(r.error?.code, "CPM_ERR_BAD_REQUEST");
});

test("bad input: events in the wrong state are ignored with a note", () => {
  const { state } = start();
  const cases: DeferredDeliveryEvent[] = [
    { type: "msrpUp" },
    read(item(1)),
    { type: "retryTimer" },
    { type: "clientBye", reasons: [] },
    { type: "restartResponse", via: "focus", status: 200 },
  ];
  for (const ev of cases) {
    const r = stepDeferredDelivery(state, ev, policy);
    assert.deepEqual(r.actions, [], ev.type);
    assert.equal(r.notes.length, 1, ev.type);
  }
  const up = run(state, [...connected, read(item(1)), read()]).state;
  assert.match(stepDeferredDelivery(up, read(item(2)), policy).notes[0] ?? "", /itemsRead ignored/); // no read outstanding
  assert.match(stepDeferredDelivery(up, delivered(9), policy).notes[0] ?? "", /not in flight/);
  assert.match(stepDeferredDelivery(up, { type: "inviteResponse", status: 200 }, policy).notes[0] ?? "", /ignored in answered/);
});

test("RJ-1: a re-join supersedes the registration delivery: INVITE cancelled, a crossing 2xx is ACKed and closed", () => {
  const { state, claims } = start();
  const r = run(state, [{ type: "superseded" }, { type: "inviteResponse", status: 200 }]);
  assert.deepEqual(kinds(r.actions), ["cancelInvite", "sendAck", "byeToClient"]);
  // the re-join's claim survives the registration machine's release
  const taken: DeliveryClaims = new Map([[KEY, { owner: "rejoin", status: "delivering" }]]);
  assert.deepEqual(applyClaim(taken, KEY, "registration", r.claim), taken);
  assert.equal(applyClaim(claims, KEY, "registration", r.claim).size, 0);
  // superseded after the queue was being delivered: BYE, rest stays queued
  const up = run(start().state, [...connected, read(item(1)), { type: "superseded" }]);
  assert.deepEqual(up.actions.at(-1), { kind: "byeToClient", reason: CALL_COMPLETED });
  assert.ok(!kinds(up.actions).includes("discardDeferred"));
});

// Any sequence of events: each item is sent at most once, in UID order, and
// nothing escapes as an exception.
test("property (DD-10 DD-13): no event sequence delivers out of order or twice, or re-starts other than focus then factory once", () => {
  const uid = fc.integer({ min: 1, max: 12 });
  const ev: fc.Arbitrary<DeferredDeliveryEvent> = fc.oneof(
    fc.constant<DeferredDeliveryEvent>({ type: "msrpUp" }),
    fc
      .array(fc.tuple(uid, fc.constantFrom("message", "imdn", "gso") as fc.Arbitrary<"message" | "imdn" | "gso">), { maxLength: 6 })
      .map((xs): DeferredDeliveryEvent => read(...xs.map(([u, k]) => item(u, k)))),
    uid.map(delivered),
    fc
      .tuple(uid, fc.constantFrom(408, 413, 415, 481, 500))
      .map(([u, status]): DeferredDeliveryEvent => ({ type: "itemFailed", handle: item(u).handle, status })),
    fc.constantFrom(100, 180, 200, 480, 603, 99).map((status): DeferredDeliveryEvent => ({ type: "inviteResponse", status })),
    fc.constant<DeferredDeliveryEvent>({ type: "retryTimer" }),
    fc.constant<DeferredDeliveryEvent>({ type: "registeredAgain", client: { contact: "<sip:+16135551200@10.0.0.9>" } }),
    fc.constant<DeferredDeliveryEvent>({ type: "clientSentMedia", media: { msrpMessageId: "c", kind: "imdn", failureReport: "yes" } }),
    fc
      .tuple(fc.constantFrom("focus" as const, "factory" as const), fc.constantFrom(200, 403, 404, 410, 486))
      .map(([via, status]): DeferredDeliveryEvent => ({ type: "restartResponse", via, status, focusUri: "sip:focus-new@cf", at: AT })),
    fc.constant<DeferredDeliveryEvent>({ type: "clientBye", reasons: ["SIP;cause=503"] }),
  );
  let runsThatDelivered = 0;
  fc.assert(
    fc.property(fc.boolean(), fc.boolean(), fc.boolean(), fc.array(ev, { maxLength: 40 }), (active, gsos, up, events) => {
      const p = { ...policy, sendInterimGsos: gsos, conferenceFactoryUri: gsos ? "sip:factory@cf.example.net" : "" };
      let state = start(groupSession({ lifecycle: active ? "active" : "inactive" }), p).state;
      const sent: number[] = [];
      const restarts: string[] = [];
      for (const e of up ? [...connected, ...events] : events) {
        const r = stepDeferredDelivery(state, e, p);
        state = r.state;
        for (const a of only(r.actions, "deliverInOrder")) sent.push(...a.items.map((i) => i.handle.uid));
        for (const a of only(r.actions, "restartGroupSession")) restarts.push(a.restart.via);
      }
      for (let i = 1; i < sent.length; i++) assert.ok((sent[i] as number) > (sent[i - 1] as number), `order: ${sent}`);
      // DD-13: one re-start at most, to the focus first, then the factory at most once (and only with a factory URI)
      assert.ok(["", "focus", "focus,factory"].includes(restarts.join(",")), `re-starts: ${restarts}`);
      if (!p.conferenceFactoryUri) assert.ok(!restarts.includes("factory"));
      if (sent.length > 1) runsThatDelivered++;
    }),
    { numRuns: 500 },
  );
  assert.ok(runsThatDelivered > 20, `only ${runsThatDelivered} runs delivered more than one item`);
});

test("DD-10: the queue cannot be read (store down) -> the confirmed items are retired, the delivery session ends with BYE cause=503, the rest stays queued", () => {
  const { state } = start(groupSession({ lifecycle: "inactive" }));
  const r = run(state, [...connected, read(item(1), item(2)), delivered(1), delivered(2), { type: "readFailed", reason: "IMAP timeout" }]);
  assert.deepEqual(kinds(r.actions).slice(-3), ["readDeferred", "ackDeferred", "byeToClient"]);
  assert.deepEqual(uidsOf(r.actions, "ackDeferred"), [[1, 2]]);
  assert.deepEqual(r.actions.at(-1), { kind: "byeToClient", reason: 'SIP;cause=503;text="Service Unavailable"' });
  assert.equal(r.state.invitePhase, "ended");
  assert.ok(r.notes.some((n) => n.includes("data kept")));
});

// DD-13 / RJ-3: the focus is gone (404 / 410 / 403) -> the long-lived group session is re-started via the conference factory.
const FACTORY = "sip:factory@cf.example.net";
const NEW_FOCUS = "sip:focus-new@cf.example.net";
const withFactory: DeliveryPolicy = { ...policy, conferenceFactoryUri: FACTORY };
/** The served user is one of the participants the PF knows (the CF's resource list names everyone). */
const inactiveGroup = (extra: Partial<GroupSession> = {}) =>
  groupSession({
    lifecycle: "inactive",
    participants: [
      { name: "Bob", commAddr: "tel:+16135551210" },
      { name: "Me", commAddr: SERVED_USER },
      { name: "", commAddr: "tel:+16135551211" },
    ],
    ...extra,
  });
const clientSent = (id: string, extra: { negativeDelivery?: boolean; failureReport?: "yes" | "no" } = {}): DeferredDeliveryEvent => ({
  type: "clientSentMedia",
  media: {
    msrpMessageId: id,
    kind: "message",
    failureReport: extra.failureReport ?? "yes",
    ...(extra.negativeDelivery ? { negativeDelivery: true } : {}),
  },
});
/** Drained (the GSO sent), then the client sent `c1`: the re-start INVITE to the focus is out. */
function restartingAtFocus(p: DeliveryPolicy = withFactory, session = inactiveGroup()) {
  const r = run(start(session, p).state, [...connected, read(), clientSent("c1", { negativeDelivery: true })], p);
  assert.equal(only(r.actions, "restartGroupSession")[0]?.restart.via, "focus");
  return r;
}

for (const status of [404, 410, 403]) {
  test(`DD-13 RJ-3: the focus answers ${status} (gone) -> the PF re-starts the group via the conference factory: same Conversation-ID and Contribution-ID, the CPM feature tag, the participants (not the served user) in an RFC 5366 recipient-list part`, () => {
    const before = restartingAtFocus();
    const r = run(before.state, [{ type: "restartResponse", via: "focus", status }], withFactory);
    assert.deepEqual(kinds(r.actions), ["restartGroupSession"], "no REPORT, no BYE: the client's SEND stays held");
    const restart = only(r.actions, "restartGroupSession")[0]?.restart;
    assert.ok(restart);
    assert.equal(restart.via, "factory");
    assert.equal(restart.factoryUri, FACTORY);
    assert.equal(r.state.delivery.restart, "pending");
    assert.deepEqual(
      r.state.delivery.held.map((m) => m.msrpMessageId),
      ["c1"],
    );
    assert.ok(r.notes.some((n) => n.includes(`focus answered ${status}: re-start via the conference factory`)));
    const inv = buildRestartInvite(SERVED_USER, restart, "sip:10.0.0.5:5097", "v=0\r\nm=message 9 TCP/MSRP *\r\n");
    assert.equal(inv.requestUri, FACTORY);
    const h = new Map(inv.headers.map(([n, v]) => [n.toLowerCase(), v]));
    assert.equal(h.get("to"), `<${FACTORY}>`);
    assert.equal(h.get("conversation-id"), "conv-7f3a");
    assert.equal(h.get("contribution-id"), "contrib-1");
    assert.equal(h.get("accept-contact"), `*;${ICSI_TAG}`);
    assert.equal(h.get("contact"), `<sip:10.0.0.5:5097>;${ICSI_TAG}`);
    assert.equal(h.get("p-asserted-service"), "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session");
    assert.equal(h.get("require"), "recipient-list-invite");
    const parts = bodyParts(h.get("content-type"), Buffer.from(inv.body));
    assert.deepEqual(
      parts.map((p) => p.contentType),
      ["application/sdp", "application/resource-lists+xml"],
    );
    assert.equal(parts[0]?.body.toString(), "v=0\r\nm=message 9 TCP/MSRP *");
    assert.equal(parts[1]?.headers.get("content-disposition"), "recipient-list");
    assert.deepEqual(parseResourceLists(parts[1]?.body ?? ""), [
      { uri: "tel:+16135551210", displayName: "Bob" },
      { uri: "tel:+16135551211", displayName: "" },
    ]);
  });
}

test("DD-13 RJ-3: the factory the client created the group through (the record's conferenceFactoryUri) comes before the configured one", () => {
  const before = restartingAtFocus(withFactory, inactiveGroup({ conferenceFactoryUri: "sip:own-factory@cf.example.net" }));
  const r = run(before.state, [{ type: "restartResponse", via: "focus", status: 404 }], withFactory);
  assert.equal(only(r.actions, "restartGroupSession")[0]?.restart.factoryUri, "sip:own-factory@cf.example.net");
});

test("DD-13 RJ-3 RJ-5: the factory answers 2xx naming a new focus -> the delivery session is joined, the held SEND goes on, the client gets a GSO whose lastfocussessionid is the new focus", () => {
  const before = restartingAtFocus();
  const r = run(
    before.state,
    [
      { type: "restartResponse", via: "focus", status: 404, reasonPhrase: "Not Found" },
      { type: "restartResponse", via: "factory", status: 200, focusUri: NEW_FOCUS, at: AT },
    ],
    withFactory,
  );
  assert.deepEqual(kinds(r.actions), ["restartGroupSession", "sendGso", "joinGroupDialog", "forwardToFocus"]);
  assert.deepEqual(only(r.actions, "forwardToFocus")[0]?.msrpMessageIds, ["c1"]);
  const gso = only(r.actions, "sendGso")[0];
  assert.equal(gso?.gso.lastFocusSessionId, NEW_FOCUS);
  assert.equal(parseGso(gso?.body ?? "").lastFocusSessionId, NEW_FOCUS);
  assert.equal(r.state.delivery.session.focusUri, NEW_FOCUS);
  assert.equal(r.state.delivery.restart, "done");
  assert.ok(r.state.delivery.joined);
  assert.equal(r.state.invitePhase, "answered");
  // live chat both ways from now on: the next SEND goes straight on
  const next = run(r.state, [clientSent("c2")], withFactory);
  assert.deepEqual(next.actions, [{ kind: "forwardToFocus", msrpMessageIds: ["c2"] }]);
});

test("DD-13 RJ-3: the factory's 2xx before the queue is drained -> no GSO yet (the drain's GSO names the new focus), joined after the deferred items", () => {
  const s0 = run(start(inactiveGroup(), withFactory).state, [...connected, read(item(1)), clientSent("c1")], withFactory);
  const r = run(
    s0.state,
    [
      { type: "restartResponse", via: "focus", status: 410, reasonPhrase: "Gone" },
      { type: "restartResponse", via: "factory", status: 200, focusUri: NEW_FOCUS, at: AT },
    ],
    withFactory,
  );
  assert.deepEqual(kinds(r.actions), ["restartGroupSession"]);
  const drained = run(r.state, [delivered(1), read()], { ...withFactory, sendInterimGsos: true });
  assert.deepEqual(kinds(drained.actions).slice(-3), ["sendGso", "joinGroupDialog", "forwardToFocus"]);
  assert.equal(only(drained.actions, "sendGso")[0]?.gso.lastFocusSessionId, NEW_FOCUS);
});

test("DD-13 RJ-3 RJ-4: the factory refuses too (403) -> failure REPORT and negative IMDN for the held SEND, then BYE with the factory's code", () => {
  const before = restartingAtFocus();
  const r = run(
    before.state,
    [
      { type: "restartResponse", via: "focus", status: 404, reasonPhrase: "Not Found" },
      { type: "restartResponse", via: "factory", status: 403, reasonPhrase: "Forbidden" },
    ],
    withFactory,
  );
  assert.deepEqual(r.actions.slice(1), [
    { kind: "msrpFailureReport", msrpMessageId: "c1", status: 403 },
    { kind: "negativeDeliveryImdn", msrpMessageId: "c1" },
    { kind: "byeToClient", reason: 'SIP;cause=403;text="Forbidden"' },
  ]);
  assert.equal(r.state.invitePhase, "ended");
  assert.equal(r.state.delivery.restart, "failed");
  assert.ok(r.notes.some((n) => n === "group session restart failed: 403 from the factory"));
});

test("DD-13 RJ-3 RJ-4: the factory answers 500 -> RJ-3 with 500, the REPORT says 408 (not taken in time downstream); no third attempt", () => {
  const before = restartingAtFocus();
  const r = run(
    before.state,
    [
      { type: "restartResponse", via: "focus", status: 410 },
      { type: "restartResponse", via: "factory", status: 500, reasonPhrase: "Server Internal Error" },
    ],
    withFactory,
  );
  assert.equal(only(r.actions, "restartGroupSession").length, 1);
  assert.deepEqual(only(r.actions, "msrpFailureReport"), [{ kind: "msrpFailureReport", msrpMessageId: "c1", status: 408 }]);
  assert.deepEqual(only(r.actions, "byeToClient"), [{ kind: "byeToClient", reason: 'SIP;cause=500;text="Server Internal Error"' }]);
});

for (const [status, phrase] of [
  [486, "Busy Here"],
  [500, "Server Internal Error"],
  [408, "Request Timeout"],
] as const) {
  test(`DD-13 RJ-3 RJ-4: the focus answers ${status} (not gone) -> no factory step, RJ-3 at once with ${status}`, () => {
    const before = restartingAtFocus();
    const r = run(before.state, [{ type: "restartResponse", via: "focus", status, reasonPhrase: phrase }], withFactory);
    assert.equal(only(r.actions, "restartGroupSession").length, 0);
    assert.deepEqual(only(r.actions, "byeToClient"), [{ kind: "byeToClient", reason: `SIP;cause=${status};text="${phrase}"` }]);
    assert.equal(only(r.actions, "msrpFailureReport").length, 1);
    assert.equal(r.state.invitePhase, "ended");
  });
}

test("DD-13 RJ-3 RJ-4: no conference factory URI (none configured, the CF created the group) -> RJ-3 with the focus's code", () => {
  const before = restartingAtFocus(policy);
  assert.equal(only(before.actions, "restartGroupSession")[0]?.restart.factoryUri, "");
  const r = run(before.state, [{ type: "restartResponse", via: "focus", status: 404, reasonPhrase: "Not Found" }], policy);
  assert.deepEqual(kinds(r.actions), ["msrpFailureReport", "negativeDeliveryImdn", "byeToClient"]);
  assert.deepEqual(only(r.actions, "byeToClient"), [{ kind: "byeToClient", reason: 'SIP;cause=404;text="Not Found"' }]);
  assert.ok(r.notes.some((n) => n.includes("no conference factory URI known")));
});

test("DD-13 bad input: the focus's (stale) answer once the factory is asked is ignored; a factory INVITE nothing can send is RJ-3 with 503; a 2xx naming no focus keeps the old one", () => {
  const atFactory = run(restartingAtFocus().state, [{ type: "restartResponse", via: "focus", status: 404 }], withFactory);
  const stale = run(atFactory.state, [{ type: "restartResponse", via: "focus", status: 200 }], withFactory);
  assert.deepEqual(stale.actions, []);
  assert.match(stale.notes[0] ?? "", /restartResponse \(focus\) ignored/);
  assert.equal(stale.state.delivery.restart, "pending");
  const factory = only(atFactory.actions, "restartGroupSession")[0];
  assert.ok(factory);
  const gone = run(atFactory.state, [{ type: "actionUnavailable", action: factory, reason: "no executor" }], withFactory);
  assert.deepEqual(only(gone.actions, "byeToClient"), [{ kind: "byeToClient", reason: 'SIP;cause=503;text="Service Unavailable"' }]);
  assert.equal(only(gone.actions, "restartGroupSession").length, 0, "503 says nothing of the factory being gone: no loop");
  const same = run(restartingAtFocus().state, [{ type: "restartResponse", via: "focus", status: 200, at: AT }], withFactory);
  assert.equal(same.state.delivery.session.focusUri, "sip:focus-7f3a@cf.example.net");
  assert.equal(only(same.actions, "sendGso").length, 0);
});

test("DD-12 DD-14 BYE-B7: a joined device's BYE while another device of the user is joined: only this device leaves the conference; nothing goes to the focus", () => {
  const { state } = start();
  const r = run(state, [...connected, read(), { type: "clientBye", reasons: ['SIP;cause=200;text="bye"'], othersJoined: true }]);
  const bye = r.actions.find((a) => a.kind === "handleAsBye");
  assert.deepEqual(bye, { kind: "handleAsBye", reason: 'SIP;cause=200;text="bye"', towardsFocus: false });
  assert.ok(r.actions.some((a) => a.kind === "leaveConference" && a.sessionKey === state.delivery.session.key));
  assert.ok(!r.actions.some((a) => a.kind === "sendByeToFocus"));
  assert.ok(r.notes.includes("another device of the served user is joined: only this device leaves the group session"));
  // the last joined device's BYE goes on to the focus (the DD-14 test above)
});
