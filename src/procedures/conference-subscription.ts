// The PF's own subscription to the focus's conference event package
// (RFC 4575, RFC 6665) while the served user's client is away from an
// on-going group session (8.3.2.9.1.2: the participants the deferred
// delivery and the GSOs carry stay fresh; DD-8 ii b and DD-12 end it).
// Pure: state + event in, the new state and the actions out; the executor
// (src/delivery/conference-subscriptions.ts) sends the SUBSCRIBEs, keeps the
// one timer and applies the NOTIFYs' documents to the record.

export type SubscriptionPhase =
  /** The initial SUBSCRIBE is out, no dialog yet (no 2xx, no NOTIFY). */
  | "subscribing"
  /** The dialog exists (2xx, or a NOTIFY before it: RFC 6665 4.1.2.4); refreshed before it expires. */
  | "active"
  /** The PF ends it (Expires: 0, RFC 6665 4.1.2.3): waiting for the answer and the terminating NOTIFY. */
  | "unsubscribing"
  /** The CF ended the group session: no more refreshes, the focus's terminating NOTIFY is awaited a while. */
  | "ending"
  /** A SUBSCRIBE failed: the next one after a back-off. */
  | "retryWait"
  | "ended";

export interface SubscriptionPolicy {
  /** Expires of the PF's SUBSCRIBEs (s); delivery.conferenceSubscriptionExpires. */
  expiresS: number;
  /** First back-off after a failed SUBSCRIBE (ms), doubling up to expiresS; delivery.conferenceSubscriptionRetryMs. */
  retryInitialMs: number;
  /** Failed SUBSCRIBEs in a row before the PF gives up; delivery.conferenceSubscriptionRetryAttempts. */
  retryAttempts: number;
  /** How long the terminating NOTIFY is awaited after an unsubscribe or the group's end (ms). */
  lingerMs: number;
}

export type SubscribeKind = "initial" | "refresh" | "unsubscribe";

export interface SubscriptionState {
  phase: SubscriptionPhase;
  /** SUBSCRIBEs sent so far: the number of the latest, which alone is awaited. */
  sent: number;
  /** The SUBSCRIBE awaited, if any. */
  inFlight: { n: number; kind: SubscribeKind } | undefined;
  /** When the subscription expires unless refreshed (ms), once known. */
  expiresAt: number | undefined;
  /** Failed SUBSCRIBEs in a row (and re-subscriptions the focus forced). */
  failures: number;
  /** The PF wants it ended while the initial SUBSCRIBE is out: the Expires: 0 goes once the dialog exists. */
  endWanted: boolean;
  /** The last conference-info version applied from this subscription's dialog (RFC 4575 4.1: versions count per subscription); -1: none yet. */
  version: number;
}

export type SubscriptionEvent =
  | { type: "start" }
  /** The final response to SUBSCRIBE number `n` (408 on Timer F, 503 on a transport error); its Expires and Retry-After. */
  | { type: "response"; n: number; status: number; expiresS?: number; retryAfterS?: number }
  /**
   * A NOTIFY on the subscription (RFC 6665 4.1.3 Subscription-State) and
   * the version of its conference-info (undefined: no usable document).
   */
  | {
      type: "notify";
      state: "active" | "pending" | "terminated";
      expiresS?: number;
      reason?: string;
      retryAfterS?: number;
      version: number | undefined;
    }
  /** The one timer went off (refresh, retry or linger, by the phase). */
  | { type: "timer" }
  /** DD-8 ii b, DD-12 (MAY), the served user left: the PF ends the subscription. */
  | { type: "unsubscribe" }
  /** 8.3.2.3: the CF ended the group session: the focus ends the subscription itself. */
  | { type: "groupEnded" };

export type SubscriptionAction =
  /** SUBSCRIBE number `n`: the initial one (a new dialog) or an in-dialog one (a refresh; Expires: 0 to end it). */
  | { kind: "sendSubscribe"; n: number; subscribe: SubscribeKind; expiresS: number }
  /** Replaces the one timer. */
  | { kind: "setTimer"; delayMs: number }
  | { kind: "clearTimer" }
  /** Apply the NOTIFY's conference-info to the record. */
  | { kind: "applyNotify" }
  /** The subscription is over: drop it (a later NOTIFY on it gets 481). */
  | { kind: "forget" };

export interface SubscriptionStep {
  state: SubscriptionState;
  actions: SubscriptionAction[];
  notes: string[];
  /** A SUBSCRIBE failed (for the log and the count), and whether another follows. */
  failure?: { status: number; retry: boolean };
}

/** A refresh goes this long before the subscription expires (and never before half of it). */
export const REFRESH_MARGIN_MS = 32_000;

/** Failures no later SUBSCRIBE would mend: the focus does not have the package (489, RFC 6665 7.2.2), refuses the user, or is gone. */
const FINAL_FAILURES = new Set([403, 404, 405, 410, 489, 501, 603, 604, 606]);

/** RFC 6665 4.1.3: after a terminated NOTIFY with these reasons the subscriber may subscribe again (at once, or after retry-after). */
const RESUBSCRIBE_NOW = new Set(["deactivated", "timeout"]);
const RESUBSCRIBE_LATER = new Set(["probation", "giveup"]);

export function newSubscription(): SubscriptionState {
  return { phase: "subscribing", sent: 0, inFlight: undefined, expiresAt: undefined, failures: 0, endWanted: false, version: -1 };
}

/** When to refresh a subscription granted for `grantedS`: REFRESH_MARGIN_MS before it ends, at half of it for short ones. */
export function refreshDelayMs(grantedS: number): number {
  return Math.max(grantedS * 500, grantedS * 1000 - REFRESH_MARGIN_MS);
}

/** The back-off before the next initial SUBSCRIBE after `failures` failed ones: doubling, at most the subscription's own Expires. */
export function retryDelayMs(failures: number, policy: SubscriptionPolicy): number {
  return Math.min(policy.retryInitialMs * 2 ** Math.max(0, failures - 1), policy.expiresS * 1000);
}

function send(s: SubscriptionState, kind: SubscribeKind, expiresS: number): { state: SubscriptionState; action: SubscriptionAction } {
  const n = s.sent + 1;
  return { state: { ...s, sent: n, inFlight: { n, kind } }, action: { kind: "sendSubscribe", n, subscribe: kind, expiresS } };
}

function ended(s: SubscriptionState, notes: string[], extra: SubscriptionAction[] = []): SubscriptionStep {
  return {
    state: { ...s, phase: "ended", inFlight: undefined },
    actions: [...extra, { kind: "clearTimer" }, { kind: "forget" }],
    notes,
  };
}

/** A new initial SUBSCRIBE (a new dialog), unless the failures ran out. */
function resubscribe(s: SubscriptionState, policy: SubscriptionPolicy, notes: string[], delayMs = 0): SubscriptionStep {
  const failures = s.failures + 1;
  if (failures > policy.retryAttempts) return ended(s, [...notes, `${policy.retryAttempts} attempts failed: the PF gives up`]);
  const next: SubscriptionState = { ...s, failures, expiresAt: undefined, version: -1 };
  if (delayMs > 0) return { state: { ...next, phase: "retryWait", inFlight: undefined }, actions: [{ kind: "setTimer", delayMs }], notes };
  const out = send({ ...next, phase: "subscribing" }, "initial", policy.expiresS);
  return { state: out.state, actions: [{ kind: "clearTimer" }, out.action], notes };
}

/** The dialog exists and the PF wants it ended: the in-dialog SUBSCRIBE with Expires: 0 (RFC 6665 4.1.2.3). */
function unsubscribe(s: SubscriptionState, notes: string[]): SubscriptionStep {
  const out = send({ ...s, phase: "unsubscribing", endWanted: false }, "unsubscribe", 0);
  return { state: out.state, actions: [{ kind: "clearTimer" }, out.action], notes };
}

/** The subscription is granted until now + `expiresS`: the refresh is set (unless a SUBSCRIBE is awaited). */
function granted(s: SubscriptionState, expiresS: number, now: number, policy: SubscriptionPolicy): SubscriptionStep {
  const grantedS = Math.min(expiresS, policy.expiresS);
  const state: SubscriptionState = { ...s, phase: "active", expiresAt: now + grantedS * 1000 };
  if (state.inFlight) return { state, actions: [], notes: [] };
  return { state, actions: [{ kind: "setTimer", delayMs: refreshDelayMs(grantedS) }], notes: [] };
}

export function stepSubscription(s: SubscriptionState, ev: SubscriptionEvent, now: number, policy: SubscriptionPolicy): SubscriptionStep {
  switch (ev.type) {
    case "start": {
      if (s.sent > 0) return { state: s, actions: [], notes: ["already subscribing"] };
      const out = send(s, "initial", policy.expiresS);
      return { state: out.state, actions: [out.action], notes: [] };
    }
    case "response":
      return onResponse(s, ev, now, policy);
    case "notify":
      return onNotify(s, ev, now, policy);
    case "timer":
      switch (s.phase) {
        case "retryWait": {
          const out = send({ ...s, phase: "subscribing" }, "initial", policy.expiresS);
          return { state: out.state, actions: [out.action], notes: [] };
        }
        case "active":
          if (s.inFlight) return { state: s, actions: [], notes: ["refresh due while a SUBSCRIBE is awaited"] };
          // RFC 6665 4.1.2.2: a subscription not refreshed in time is gone; a new one is a new dialog
          if (s.expiresAt !== undefined && now >= s.expiresAt) return resubscribe(s, policy, ["subscription expired unrefreshed"]);
          {
            const out = send(s, "refresh", policy.expiresS);
            return { state: out.state, actions: [out.action], notes: [] };
          }
        case "unsubscribing":
        case "ending":
          return ended(s, ["no terminating NOTIFY came: subscription forgotten"]);
        default:
          return { state: s, actions: [], notes: [] };
      }
    case "unsubscribe":
    case "groupEnded": {
      const why = ev.type === "unsubscribe" ? "unsubscribe" : "group ended";
      switch (s.phase) {
        case "subscribing":
          // the dialog is not there yet: the Expires: 0 follows the 2xx or the first NOTIFY
          return { state: { ...s, endWanted: true }, actions: [], notes: [`${why} before the subscription is up: ended once it is`] };
        case "active":
          if (ev.type === "unsubscribe") return unsubscribe(s, []);
          // 8.3.2.3: the focus ends its subscriptions of the group; the PF stops refreshing and awaits its NOTIFY
          return {
            state: { ...s, phase: "ending" },
            actions: [{ kind: "clearTimer" }, { kind: "setTimer", delayMs: policy.lingerMs }],
            notes: [],
          };
        case "retryWait":
          return ended(s, [`${why}: no SUBSCRIBE retried`]);
        default:
          return { state: s, actions: [], notes: [`${why}: already ${s.phase}`] };
      }
    }
  }
}

function onResponse(
  s: SubscriptionState,
  ev: Extract<SubscriptionEvent, { type: "response" }>,
  now: number,
  policy: SubscriptionPolicy,
): SubscriptionStep {
  if (s.inFlight?.n !== ev.n) return { state: s, actions: [], notes: [`answer ${ev.status} to a SUBSCRIBE no longer awaited`] };
  const kind = s.inFlight.kind;
  const done: SubscriptionState = { ...s, inFlight: undefined };
  const ok = ev.status >= 200 && ev.status < 300;
  if (kind === "unsubscribe") {
    // RFC 6665 4.1.2.3: the terminating NOTIFY follows the 2xx; any other answer ends it here
    if (!ok) return ended(done, [`unsubscribe answered ${ev.status}`]);
    return { state: done, actions: [{ kind: "setTimer", delayMs: policy.lingerMs }], notes: [] };
  }
  if (ok) {
    const up: SubscriptionState = { ...done, failures: 0 };
    if (up.endWanted || up.phase === "ending") return unsubscribe(up, []);
    if (up.phase === "unsubscribing") return { state: up, actions: [], notes: [] };
    return granted(up, ev.expiresS ?? policy.expiresS, now, policy);
  }
  if (s.phase === "unsubscribing" || s.phase === "ending") return ended(done, [`SUBSCRIBE answered ${ev.status} while ending`]);
  if (kind === "initial" && s.phase === "active" && ev.status === 408 && s.expiresAt !== undefined && now < s.expiresAt) {
    // RFC 6665 4.1.2.4: a NOTIFY made the subscription; its answer was lost: it stands as the NOTIFY granted it
    return {
      state: done,
      actions: [{ kind: "setTimer", delayMs: Math.max(0, s.expiresAt - now - REFRESH_MARGIN_MS) }],
      notes: ["no answer to the SUBSCRIBE, but its NOTIFY came: subscription kept"],
    };
  }
  if (kind === "refresh" && ev.status === 481) {
    // RFC 6665 4.1.2.2: the subscription is gone; a new one is a new dialog
    return withFailure(resubscribe(done, policy, ["refresh answered 481: subscribing anew"]), ev.status);
  }
  if (done.endWanted) return ended(done, [`SUBSCRIBE answered ${ev.status}: nothing to end`]);
  if (FINAL_FAILURES.has(ev.status) || (ev.status >= 600 && ev.status < 700)) {
    return { ...ended(done, [`SUBSCRIBE answered ${ev.status}: not retried`]), failure: { status: ev.status, retry: false } };
  }
  const failures = done.failures + 1;
  const delayMs = ev.retryAfterS !== undefined ? ev.retryAfterS * 1000 : retryDelayMs(failures, policy);
  if (kind === "refresh" && done.expiresAt !== undefined && now + delayMs < done.expiresAt) {
    // RFC 6665 4.1.2.2: a failed refresh leaves the subscription as it was until it expires: refreshed again later
    if (failures > policy.retryAttempts) {
      return {
        ...ended(done, [`${policy.retryAttempts} refreshes failed: the PF gives up`]),
        failure: { status: ev.status, retry: false },
      };
    }
    return {
      state: { ...done, failures },
      actions: [{ kind: "setTimer", delayMs }],
      notes: [`refresh answered ${ev.status}: again in ${delayMs} ms`],
      failure: { status: ev.status, retry: true },
    };
  }
  return withFailure(resubscribe(done, policy, [`SUBSCRIBE answered ${ev.status}`], delayMs), ev.status);
}

function withFailure(step: SubscriptionStep, status: number): SubscriptionStep {
  return { ...step, failure: { status, retry: step.state.phase !== "ended" } };
}

function onNotify(
  before: SubscriptionState,
  ev: Extract<SubscriptionEvent, { type: "notify" }>,
  now: number,
  policy: SubscriptionPolicy,
): SubscriptionStep {
  if (before.phase === "unsubscribing" || before.phase === "ending") {
    // the user left or the group ended: the record takes no more from this subscription
    if (ev.state === "terminated") return ended(before, []);
    return { state: before, actions: [], notes: [`NOTIFY (${ev.state}) while ${before.phase}: not applied`] };
  }
  if (before.phase === "ended" || before.phase === "retryWait") {
    return { state: before, actions: [], notes: [`NOTIFY (${ev.state}) while ${before.phase}: not applied`] };
  }
  // subscribing (RFC 6665 4.1.2.4: the NOTIFY may come before the 2xx) or active
  const doc = document(before, ev.version);
  const s = doc.state;
  if (ev.state === "terminated") {
    const reason = (ev.reason ?? "").toLowerCase();
    const notes = [...doc.notes, `the focus terminated the subscription (reason ${reason || "none"})`];
    const applied = doc.actions;
    const done: SubscriptionState = { ...s, inFlight: undefined };
    if (s.endWanted) return ended(done, notes, applied);
    if (RESUBSCRIBE_NOW.has(reason)) {
      const step = resubscribe(done, policy, notes);
      return { ...step, actions: [...applied, ...step.actions] };
    }
    if (RESUBSCRIBE_LATER.has(reason)) {
      const delay = ev.retryAfterS !== undefined ? ev.retryAfterS * 1000 : retryDelayMs(s.failures + 1, policy);
      const step = resubscribe(done, policy, notes, Math.max(1, delay));
      return { ...step, actions: [...applied, ...step.actions] };
    }
    // rejected, noresource, invariant, none: RFC 6665 4.1.3 says not to subscribe again
    return ended(done, notes, applied);
  }
  const up: SubscriptionState = { ...s, phase: "active" };
  // the initial SUBSCRIBE's answer is no longer awaited; the Expires: 0 goes on the dialog the NOTIFY made
  if (s.endWanted) return unsubscribe(up, ["the subscription is up: ended as asked"]);
  if (ev.expiresS === undefined) return { state: up, actions: doc.actions, notes: doc.notes };
  const step = granted(up, ev.expiresS, now, policy);
  return { ...step, actions: [...doc.actions, ...step.actions], notes: [...doc.notes, ...step.notes] };
}

/** RFC 4575 4.1: a document is applied when its version is above the last one of this subscription. */
function document(
  s: SubscriptionState,
  version: number | undefined,
): { state: SubscriptionState; actions: SubscriptionAction[]; notes: string[] } {
  if (version === undefined) return { state: s, actions: [], notes: [] };
  if (version <= s.version)
    return { state: s, actions: [], notes: [`conference-info version ${version} not newer than ${s.version}: discarded`] };
  return { state: { ...s, version }, actions: [{ kind: "applyNotify" }], notes: [] };
}
