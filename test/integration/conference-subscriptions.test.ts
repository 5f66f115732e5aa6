// The executor of the PF's own conference subscriptions with the real SIP UA
// against a scripted peer on UDP playing Kamailio and the focus: what the
// lifecycle starts and ends, NOTIFY dispatch (200 / 481), NOTIFY before the
// 2xx, garbage bodies, a SUBSCRIBE never answered (back-off) or refused.
import assert from "node:assert/strict";
import { type TestContext, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ConferenceSubscriptions, subscriptionState } from "../../src/delivery/conference-subscriptions.js";
import type { SubscriptionPolicy } from "../../src/procedures/conference-subscription.js";
import type { GroupSession } from "../../src/session/group-session.js";
import { header, type SipMessage } from "../../src/sip/message.js";
import { tagOf } from "../../src/sip/name-addr.js";
import { SipUa } from "../../src/sip/ua.js";
import type { ConferenceInfo } from "../../src/xml/conference-info.js";
import { groupSession } from "../fixtures/delivery.js";
import { capturedLog, HOST, Peer, type Received, response } from "../fixtures/sip-ua.js";

const LIMIT = { timeout: 5000 };
const policy: SubscriptionPolicy = { expiresS: 600, retryInitialMs: 50, retryAttempts: 2, lingerMs: 200 };
const INFO = (version: number) =>
  `<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" entity="sip:focus" state="full" version="${version}"><users><user entity="tel:+16135551213"><display-text>Dave</display-text></user></users></conference-info>`;

interface Rig {
  peer: Peer;
  ua: SipUa;
  subs: ConferenceSubscriptions;
  applied: ConferenceInfo[];
  lines: Record<string, unknown>[];
  record: GroupSession;
  /** The lifecycle moves the record to client-absent: the subscription starts. */
  goAbsent(): void;
}

async function rig(t: TestContext, opts: { unsubscribeOnRejoin?: boolean } = {}): Promise<Rig> {
  const peer = await Peer.open(t);
  const { log, lines } = capturedLog();
  const ua = await SipUa.start({
    host: HOST,
    port: 0,
    outboundProxy: { host: HOST, port: peer.port },
    routeParams: ";cpmpfuac",
    log,
    t1Ms: 10,
  });
  t.after(() => ua.close());
  const record = groupSession({ lifecycle: "client-absent" });
  const applied: ConferenceInfo[] = [];
  const subs = new ConferenceSubscriptions({
    ua,
    policy,
    unsubscribeOnRejoin: opts.unsubscribeOnRejoin ?? false,
    sessions: { get: (key) => (key === record.key ? record : undefined) },
    apply: async (_id, info) => {
      applied.push(info);
      return { applied: true, notes: [], participants: info.users.length };
    },
    log,
  });
  t.after(() => subs.close());
  ua.onRequest((req, reply) => (req.method === "NOTIFY" ? subs.onNotify(req, reply) : reply(501, "Not Implemented")));
  return {
    peer,
    ua,
    subs,
    applied,
    lines,
    record,
    goAbsent: () => subs.onLifecycle(record, { type: "deferred" }, { from: "active", to: "client-absent" }),
  };
}

/** A NOTIFY from the focus on the subscription SUBSCRIBE `sub` opened, through "Kamailio". */
function notify(
  r: Rig,
  sub: SipMessage,
  opts: { state?: string; body?: string; cseq?: number; toTag?: string; callId?: string } = {},
): void {
  const body = opts.body ?? INFO(1);
  r.peer.send(
    [
      `NOTIFY sip:${HOST}:${r.ua.address.port} SIP/2.0`,
      `Via: SIP/2.0/UDP ${HOST}:${r.peer.port};branch=z9hG4bK-n${opts.cseq ?? 1}${Math.random().toString(16).slice(2)}`,
      "From: <sip:focus-7f3a@cf.example.net>;tag=focus-tag",
      `To: <tel:+16135551200>;tag=${opts.toTag ?? tagOf(header(sub, "from"))}`,
      `Call-ID: ${opts.callId ?? header(sub, "call-id")}`,
      `CSeq: ${opts.cseq ?? 1} NOTIFY`,
      "Contact: <sip:focus@127.0.0.1:5070>",
      "Event: conference",
      `Subscription-State: ${opts.state ?? "active;expires=600"}`,
      "Content-Type: application/conference-info+xml",
      `Content-Length: ${Buffer.byteLength(body)}`,
      "",
      body,
    ].join("\r\n"),
    { host: HOST, port: r.ua.address.port },
  );
}

const to = (r: Rig) => ({ host: HOST, port: r.ua.address.port });
async function nextRequest(r: Rig, method: string): Promise<Received> {
  for (;;) {
    const got = await r.peer.next(method);
    if (got.msg.kind === "request" && got.msg.method === method) return got;
  }
}
async function nextResponse(r: Rig, cseq: string): Promise<Received> {
  for (;;) {
    const got = await r.peer.next(`answer to ${cseq}`);
    if (got.msg.kind === "response" && header(got.msg, "cseq") === cseq) return got;
  }
}

test(
  "DD-11 RFC 6665 4.1.2.4: client absent -> SUBSCRIBE for the served user; the NOTIFY before the 200 is answered 200 and applied; a NOTIFY of no subscription of the PF's gets 481",
  LIMIT,
  async (t) => {
    const r = await rig(t);
    r.goAbsent();
    const sub = await nextRequest(r, "SUBSCRIBE");
    assert.equal(sub.raw.split("\r\n")[0], "SUBSCRIBE sip:focus-7f3a@cf.example.net SIP/2.0");
    assert.match(header(sub.msg, "from") ?? "", /^<tel:\+16135551200>;tag=/);
    assert.equal(header(sub.msg, "p-asserted-identity"), "<tel:+16135551200>");
    assert.equal(header(sub.msg, "accept"), "application/conference-info+xml");
    assert.equal(header(sub.msg, "expires"), "600");
    notify(r, sub.msg);
    assert.equal((await nextResponse(r, "1 NOTIFY")).msg.statusCode, 200);
    r.peer.send(response(sub.msg, "200 OK", ["Contact: <sip:focus@127.0.0.1:5070>", "Expires: 600"], "focus-tag"), to(r));
    await sleep(50);
    assert.equal(r.applied.length, 1);
    assert.equal(r.applied[0]?.users[0]?.entity, "tel:+16135551213");
    // unknown: another Call-ID, or the right one with a To tag that is not the PF's
    notify(r, sub.msg, { callId: "other@x", cseq: 2 });
    assert.equal((await nextResponse(r, "2 NOTIFY")).msg.statusCode, 481);
    notify(r, sub.msg, { toTag: "not-mine", cseq: 3 });
    assert.equal((await nextResponse(r, "3 NOTIFY")).msg.statusCode, 481);
    assert.equal(r.subs.unknownNotifies, 2);
    assert.ok(r.lines.some((l) => l.message === "NOTIFY for no conference subscription of the PF's: 481"));
    // the version rule per subscription: version 1 again is not applied
    notify(r, sub.msg, { cseq: 4 });
    assert.equal((await nextResponse(r, "4 NOTIFY")).msg.statusCode, 200);
    await sleep(20);
    assert.equal(r.applied.length, 1);
  },
);

test(
  "DD-11 bad input: a NOTIFY whose body is garbage is answered 200, logged, counted, nothing applied; the next one is",
  LIMIT,
  async (t) => {
    const r = await rig(t);
    r.goAbsent();
    const sub = await nextRequest(r, "SUBSCRIBE");
    r.peer.send(response(sub.msg, "200 OK", ["Contact: <sip:focus@127.0.0.1:5070>"], "focus-tag"), to(r));
    notify(r, sub.msg, { body: "<conference-info version=" });
    assert.equal((await nextResponse(r, "1 NOTIFY")).msg.statusCode, 200);
    notify(r, sub.msg, { body: INFO(2), cseq: 2 });
    assert.equal((await nextResponse(r, "2 NOTIFY")).msg.statusCode, 200);
    await sleep(30);
    assert.equal(r.subs.unusableNotifies, 1);
    assert.deepEqual(
      r.applied.map((i) => i.version),
      [2],
    );
  },
);

test(
  "DD-11 bad input: a SUBSCRIBE never answered (Timer F, 408) is logged and counted, retried after the back-off; a 489 then ends it for good",
  LIMIT,
  async (t) => {
    const r = await rig(t);
    r.goAbsent();
    const first = await nextRequest(r, "SUBSCRIBE");
    // no answer: the UA's Timer F (64*T1 = 640 ms), then the back-off (50 ms): a new initial SUBSCRIBE (a new Call-ID)
    let again: Received;
    do again = await nextRequest(r, "SUBSCRIBE");
    while (header(again.msg, "call-id") === header(first.msg, "call-id"));
    assert.equal(r.subs.failures, 1);
    assert.ok(r.lines.some((l) => l.message === "conference SUBSCRIBE failed" && l.status === 408 && l.retry === true));
    r.peer.send(response(again.msg, "489 Bad Event"), to(r));
    await sleep(50);
    assert.equal(r.subs.failures, 2);
    assert.equal(r.subs.size, 0, "given up: no subscription held");
    const later = await r.peer.drain(200);
    assert.equal(
      later.filter((m) => m.msg.kind === "request" && header(m.msg, "call-id") !== header(again.msg, "call-id")).length,
      0,
      "no retry",
    );
  },
);

test(
  "DD-8 ii b RFC 6665 4.1.2.3: unsubscribe(sessionKey) sends Expires: 0 on the dialog; the terminating NOTIFY gets 200 and the subscription is forgotten (a later NOTIFY: 481); none held -> false",
  LIMIT,
  async (t) => {
    const r = await rig(t);
    assert.equal(await r.subs.unsubscribe(r.record.key), false);
    r.goAbsent();
    const sub = await nextRequest(r, "SUBSCRIBE");
    r.peer.send(
      response(
        sub.msg,
        "200 OK",
        [`Record-Route: <sip:127.0.0.1:${r.peer.port};lr;cpmpfdd=ab>`, "Contact: <sip:focus@127.0.0.1:5070>"],
        "focus-tag",
      ),
      to(r),
    );
    await sleep(30);
    assert.equal(await r.subs.unsubscribe(r.record.key), true);
    const unsub = await nextRequest(r, "SUBSCRIBE");
    assert.equal(header(unsub.msg, "expires"), "0");
    assert.equal(header(unsub.msg, "cseq"), "2 SUBSCRIBE");
    assert.equal(header(unsub.msg, "route"), `<sip:127.0.0.1:${r.peer.port};lr;cpmpfdd=ab>`);
    assert.equal(tagOf(header(unsub.msg, "to")), "focus-tag");
    r.peer.send(response(unsub.msg, "200 OK"), to(r));
    notify(r, sub.msg, { state: "terminated;reason=timeout", body: "", cseq: 2 });
    assert.equal((await nextResponse(r, "2 NOTIFY")).msg.statusCode, 200);
    await sleep(30);
    assert.equal(r.subs.size, 0);
    notify(r, sub.msg, { cseq: 3 });
    assert.equal((await nextResponse(r, "3 NOTIFY")).msg.statusCode, 481);
    assert.equal(r.applied.length, 0);
  },
);

test(
  "DD-12 (MAY) delivery.unsubscribeOnRejoin: the client is back (client-absent -> active) -> Expires: 0; without it the subscription stays",
  LIMIT,
  async (t) => {
    for (const on of [true, false]) {
      const r = await rig(t, { unsubscribeOnRejoin: on });
      r.goAbsent();
      const sub = await nextRequest(r, "SUBSCRIBE");
      r.peer.send(response(sub.msg, "200 OK", ["Contact: <sip:focus@127.0.0.1:5070>"], "focus-tag"), to(r));
      await sleep(30);
      r.subs.onLifecycle({ ...r.record, lifecycle: "active" }, { type: "clientJoined" }, { from: "client-absent", to: "active" });
      const after = await r.peer.drain(100);
      const unsub = new Set(
        after.filter((m) => m.msg.kind === "request" && header(m.msg, "expires") === "0").map((m) => header(m.msg, "cseq")),
      );
      assert.deepEqual([...unsub], on ? ["2 SUBSCRIBE"] : [], `unsubscribeOnRejoin ${on} (retransmissions aside)`);
      assert.equal(r.subs.size, 1, "held until the focus's answer / NOTIFY (or for good)");
    }
  },
);

test("RFC 6665 4.1.3: Subscription-State values are read with their parameters; a missing one is active", () => {
  assert.deepEqual(subscriptionState("active;expires=600"), { state: "active", expiresS: 600 });
  assert.deepEqual(subscriptionState("terminated;reason=probation;retry-after=30"), {
    state: "terminated",
    reason: "probation",
    retryAfterS: 30,
  });
  assert.deepEqual(subscriptionState(undefined), { state: "active" });
  assert.deepEqual(subscriptionState('pending;expires=x;"'), { state: "pending" });
});
