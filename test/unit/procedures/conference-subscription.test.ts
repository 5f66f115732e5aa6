// The PF's own conference event subscription (RFC 4575, RFC 6665) as a pure
// state machine: what each SUBSCRIBE answer, NOTIFY and timer leads to.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  newSubscription,
  REFRESH_MARGIN_MS,
  refreshDelayMs,
  retryDelayMs,
  type SubscriptionEvent,
  type SubscriptionPolicy,
  type SubscriptionState,
  type SubscriptionStep,
  stepSubscription,
} from "../../../src/procedures/conference-subscription.js";

const policy: SubscriptionPolicy = { expiresS: 3600, retryInitialMs: 30_000, retryAttempts: 3, lingerMs: 32_000 };
const T0 = 1_000_000;

/** Runs `events` from a fresh subscription; returns every step. */
function run(events: SubscriptionEvent[], now = T0, p = policy): SubscriptionStep[] {
  let s: SubscriptionState = newSubscription();
  return events.map((ev) => {
    const step = stepSubscription(s, ev, now, p);
    s = step.state;
    return step;
  });
}
const kinds = (step: SubscriptionStep | undefined) => (step?.actions ?? []).map((a) => a.kind);
const active = (version: number | undefined = 1, expiresS?: number): SubscriptionEvent => ({
  type: "notify",
  state: "active",
  version,
  ...(expiresS === undefined ? {} : { expiresS }),
});

test("DD-11 RFC 6665 4.1.2.1: start sends the initial SUBSCRIBE with the configured Expires; the 2xx makes it active and sets the refresh REFRESH_MARGIN_MS before expiry", () => {
  const [start, ok] = run([{ type: "start" }, { type: "response", n: 1, status: 200, expiresS: 600 }]);
  assert.deepEqual(start?.actions, [{ kind: "sendSubscribe", n: 1, subscribe: "initial", expiresS: 3600 }]);
  assert.equal(start?.state.phase, "subscribing");
  assert.equal(ok?.state.phase, "active");
  assert.equal(ok?.state.expiresAt, T0 + 600_000, "the 2xx's Expires (shorter than asked) counts");
  assert.deepEqual(ok?.actions, [{ kind: "setTimer", delayMs: 600_000 - REFRESH_MARGIN_MS }]);
  assert.equal(refreshDelayMs(3600), 3600_000 - REFRESH_MARGIN_MS);
  assert.equal(refreshDelayMs(10), 5000, "a short subscription: at half of it");
});

test("DD-11 RFC 6665 4.1.2.4: a NOTIFY before the 2xx makes the subscription active and is applied; the 2xx that follows sets the refresh", () => {
  const [, notify, ok] = run([{ type: "start" }, active(1, 600), { type: "response", n: 1, status: 200, expiresS: 600 }]);
  assert.equal(notify?.state.phase, "active");
  assert.deepEqual(kinds(notify), ["applyNotify"], "no refresh timer while the SUBSCRIBE is still awaited");
  assert.equal(notify?.state.version, 1);
  assert.deepEqual(kinds(ok), ["setTimer"]);
});

test("DD-11 RFC 6665 4.1.2.4: the NOTIFY came but the 2xx never did (408): the subscription stands as the NOTIFY granted it", () => {
  const [, , lost] = run([{ type: "start" }, active(1, 600), { type: "response", n: 1, status: 408 }]);
  assert.equal(lost?.state.phase, "active");
  assert.equal(lost?.failure, undefined);
  assert.deepEqual(kinds(lost), ["setTimer"]);
});

test("DD-11 RFC 6665 4.1.2.2: the refresh timer sends an in-dialog SUBSCRIBE; its 2xx re-arms it; a 481 subscribes anew; another error keeps it until it expires", () => {
  const base: SubscriptionEvent[] = [{ type: "start" }, { type: "response", n: 1, status: 200, expiresS: 3600 }, { type: "timer" }];
  const refresh = run(base)[2];
  assert.deepEqual(refresh?.actions, [{ kind: "sendSubscribe", n: 2, subscribe: "refresh", expiresS: 3600 }]);
  assert.deepEqual(kinds(run([...base, { type: "response", n: 2, status: 200 }])[3]), ["setTimer"]);
  const gone = run([...base, { type: "response", n: 2, status: 481 }])[3];
  assert.deepEqual(
    gone?.actions.find((a) => a.kind === "sendSubscribe"),
    { kind: "sendSubscribe", n: 3, subscribe: "initial", expiresS: 3600 },
  );
  assert.equal(gone?.state.version, -1, "a new dialog: its versions start again (RFC 4575 4.1)");
  const busy = run([...base, { type: "response", n: 2, status: 500 }])[3];
  assert.equal(busy?.state.phase, "active", "still valid until it expires");
  assert.deepEqual(busy?.actions, [{ kind: "setTimer", delayMs: 30_000 }]);
  assert.deepEqual(busy?.failure, { status: 500, retry: true });
});

test("DD-11 RFC 6665 4.1.2.2: a refresh due after the subscription expired is a new initial SUBSCRIBE", () => {
  let s = run([{ type: "start" }, { type: "response", n: 1, status: 200, expiresS: 60 }]).at(-1)?.state as SubscriptionState;
  const late = stepSubscription(s, { type: "timer" }, T0 + 61_000, policy);
  s = late.state;
  assert.deepEqual(
    late.actions.find((a) => a.kind === "sendSubscribe"),
    { kind: "sendSubscribe", n: 2, subscribe: "initial", expiresS: 3600 },
  );
  assert.equal(s.phase, "subscribing");
});

test("DD-11 bad input: 489 Bad Event (and 403, 404, 6xx) are not retried; 408 / 5xx back off doubling up to the Expires, then the PF gives up", () => {
  for (const status of [489, 403, 404, 603]) {
    const failed = run([{ type: "start" }, { type: "response", n: 1, status }])[1];
    assert.equal(failed?.state.phase, "ended", String(status));
    assert.deepEqual(kinds(failed), ["clearTimer", "forget"]);
    assert.deepEqual(failed?.failure, { status, retry: false });
  }
  const steps = run([
    { type: "start" },
    { type: "response", n: 1, status: 408 },
    { type: "timer" },
    { type: "response", n: 2, status: 503 },
    { type: "timer" },
    { type: "response", n: 3, status: 408 },
    { type: "timer" },
    { type: "response", n: 4, status: 408 },
  ]);
  assert.deepEqual(steps[1]?.actions, [{ kind: "setTimer", delayMs: 30_000 }]);
  assert.equal(steps[1]?.state.phase, "retryWait");
  assert.deepEqual(steps[2]?.actions, [{ kind: "sendSubscribe", n: 2, subscribe: "initial", expiresS: 3600 }]);
  assert.deepEqual(steps[3]?.actions, [{ kind: "setTimer", delayMs: 60_000 }], "doubling");
  assert.deepEqual(steps[5]?.actions, [{ kind: "setTimer", delayMs: 120_000 }]);
  assert.equal(steps[7]?.state.phase, "ended", "retryAttempts (3) used up");
  assert.deepEqual(steps[7]?.failure, { status: 408, retry: false });
  assert.equal(retryDelayMs(20, policy), 3600_000, "never above the subscription's own Expires");
  const after = run([{ type: "start" }, { type: "response", n: 1, status: 503, retryAfterS: 7 }])[1];
  assert.deepEqual(after?.actions, [{ kind: "setTimer", delayMs: 7000 }], "Retry-After wins");
});

test("DD-11 RFC 4575 4.1: a NOTIFY whose version is not newer than the last of this subscription is not applied; one without a usable document neither", () => {
  const steps = run([
    { type: "start" },
    { type: "response", n: 1, status: 200 },
    active(3),
    active(3),
    active(2),
    active(undefined),
    active(4),
  ]);
  assert.deepEqual(kinds(steps[2]), ["applyNotify"]);
  assert.deepEqual(kinds(steps[3]), []);
  assert.match(steps[3]?.notes[0] ?? "", /version 3 not newer than 3/);
  assert.deepEqual(kinds(steps[4]), []);
  assert.deepEqual(kinds(steps[5]), [], "garbage body: nothing applied, the subscription goes on");
  assert.equal(steps[5]?.state.phase, "active");
  assert.deepEqual(kinds(steps[6]), ["applyNotify"]);
});

test("DD-11 RFC 6665 4.1.3: the focus terminates it: deactivated/timeout -> subscribe again at once; probation -> after retry-after; rejected/noresource -> ended", () => {
  const up: SubscriptionEvent[] = [{ type: "start" }, { type: "response", n: 1, status: 200 }];
  const term = (reason: string | undefined, retryAfterS?: number): SubscriptionEvent => ({
    type: "notify",
    state: "terminated",
    version: 5,
    ...(reason ? { reason } : {}),
    ...(retryAfterS === undefined ? {} : { retryAfterS }),
  });
  const deactivated = run([...up, term("deactivated")])[2];
  assert.deepEqual(kinds(deactivated), ["applyNotify", "clearTimer", "sendSubscribe"], "its final document is applied first");
  const probation = run([...up, term("probation", 90)])[2];
  assert.deepEqual(probation?.actions.at(-1), { kind: "setTimer", delayMs: 90_000 });
  assert.equal(probation?.state.phase, "retryWait");
  for (const reason of ["rejected", "noresource", undefined]) {
    const done = run([...up, term(reason)])[2];
    assert.equal(done?.state.phase, "ended", String(reason));
    assert.deepEqual(kinds(done), ["applyNotify", "clearTimer", "forget"]);
  }
});

test("DD-8 ii b RFC 6665 4.1.2.3: unsubscribe sends the in-dialog SUBSCRIBE Expires: 0; the terminating NOTIFY ends it (not applied); without one, the linger timer does", () => {
  const up: SubscriptionEvent[] = [{ type: "start" }, { type: "response", n: 1, status: 200 }, { type: "unsubscribe" }];
  const unsub = run(up)[2];
  assert.deepEqual(unsub?.actions, [{ kind: "clearTimer" }, { kind: "sendSubscribe", n: 2, subscribe: "unsubscribe", expiresS: 0 }]);
  assert.equal(unsub?.state.phase, "unsubscribing");
  const answered = run([...up, { type: "response", n: 2, status: 200 }])[3];
  assert.deepEqual(answered?.actions, [{ kind: "setTimer", delayMs: 32_000 }]);
  const notified = run([...up, { type: "response", n: 2, status: 200 }, { type: "notify", state: "terminated", version: 9 }])[4];
  assert.deepEqual(kinds(notified), ["clearTimer", "forget"], "ended, its document not applied: the user left");
  const lingered = run([...up, { type: "response", n: 2, status: 200 }, { type: "timer" }])[4];
  assert.deepEqual(kinds(lingered), ["clearTimer", "forget"]);
  const refused = run([...up, { type: "response", n: 2, status: 481 }])[3];
  assert.deepEqual(kinds(refused), ["clearTimer", "forget"], "481: nothing left to end");
  // the refresh in flight when the unsubscribe goes: its late answer changes nothing
  const stale = run([
    { type: "start" },
    { type: "response", n: 1, status: 200 },
    { type: "timer" },
    { type: "unsubscribe" },
    { type: "response", n: 2, status: 200 },
  ])[4];
  assert.equal(stale?.state.phase, "unsubscribing");
  assert.deepEqual(kinds(stale), []);
  assert.match(stale?.notes[0] ?? "", /no longer awaited/);
});

test("DD-8 ii b / DD-12: an unsubscribe before the subscription is up waits for it (2xx or first NOTIFY), then sends Expires: 0; one while waiting for a retry just ends it", () => {
  const viaOk = run([{ type: "start" }, { type: "unsubscribe" }, { type: "response", n: 1, status: 200 }]);
  assert.deepEqual(kinds(viaOk[1]), []);
  assert.equal(viaOk[1]?.state.endWanted, true);
  assert.deepEqual(viaOk[2]?.actions.at(-1), { kind: "sendSubscribe", n: 2, subscribe: "unsubscribe", expiresS: 0 });
  const viaNotify = run([{ type: "start" }, { type: "unsubscribe" }, active(1)]);
  assert.deepEqual(viaNotify[2]?.actions.at(-1), { kind: "sendSubscribe", n: 2, subscribe: "unsubscribe", expiresS: 0 });
  assert.ok(!kinds(viaNotify[2]).includes("applyNotify"), "not applied: the PF is ending it");
  const refused = run([{ type: "start" }, { type: "unsubscribe" }, { type: "response", n: 1, status: 408 }]);
  assert.equal(refused[2]?.state.phase, "ended", "nothing to end");
  const waiting = run([{ type: "start" }, { type: "response", n: 1, status: 500 }, { type: "unsubscribe" }]);
  assert.deepEqual(kinds(waiting[2]), ["clearTimer", "forget"]);
  const twice = run([{ type: "start" }, { type: "response", n: 1, status: 200 }, { type: "unsubscribe" }, { type: "unsubscribe" }]);
  assert.deepEqual(kinds(twice[3]), [], "idempotent");
});

test("8.3.2.3: the CF ended the group session: no more refreshes, the focus's terminating NOTIFY is awaited (not applied), then forgotten", () => {
  const steps = run([
    { type: "start" },
    { type: "response", n: 1, status: 200 },
    { type: "groupEnded" },
    active(2),
    { type: "notify", state: "terminated", reason: "noresource", version: 3 },
  ]);
  assert.equal(steps[2]?.state.phase, "ending");
  assert.deepEqual(steps[2]?.actions, [{ kind: "clearTimer" }, { kind: "setTimer", delayMs: 32_000 }]);
  assert.deepEqual(kinds(steps[3]), [], "the record ended: nothing applied");
  assert.deepEqual(kinds(steps[4]), ["clearTimer", "forget"]);
  const silent = run([{ type: "start" }, { type: "response", n: 1, status: 200 }, { type: "groupEnded" }, { type: "timer" }])[3];
  assert.deepEqual(kinds(silent), ["clearTimer", "forget"], "no NOTIFY: forgotten after the linger");
});
