// The executor of the PF's own subscriptions to the focus's conference event
// package (RFC 4575, RFC 6665), one per group session record: the
// SUBSCRIBEs go from the PF's SIP UA through Kamailio for the served user
// (From), the focus's NOTIFYs come back to the UA through Kamailio (its
// route[CPM_PF_UA] sends them there by the ;cpmpfdd Record-Route) and their
// conference-info goes into the record through the PF. Which SUBSCRIBE goes
// when is decided by src/procedures/conference-subscription.ts; this file
// sends, times and dispatches. Started when the served user's client leaves
// an on-going group session (lifecycle active -> client-absent); ended by
// the PF (DD-8 ii b, DD-12 MAY, the user's own BYE) with Expires: 0, or by
// the focus when the group session ends (8.3.2.3).
import { asCpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import {
  newSubscription,
  type SubscriptionAction,
  type SubscriptionEvent,
  type SubscriptionPolicy,
  type SubscriptionState,
  stepSubscription,
} from "../procedures/conference-subscription.js";
import type { LifecycleEvent } from "../procedures/lifecycle.js";
import { conferenceInfoOf } from "../session/conference.js";
import { type GroupSession, type Lifecycle, recordIdOf } from "../session/group-session.js";
import { header, type SipMessage } from "../sip/message.js";
import { tagOf } from "../sip/name-addr.js";
import { parseParams } from "../sip/params.js";
import { preloadedRoute } from "../sip/preloaded-route.js";
import type { SipHeaderLine } from "../sip/serialize.js";
import { type Dialog, dialogFromNotify, type NonInviteOutcome, type SubscribeHandle, type SubscribeRequest, uaUriOf } from "../sip/ua.js";
import type { ConferenceInfo } from "../xml/conference-info.js";

/** The PF's SIP UA, as far as subscriptions use it (src/sip/ua.ts). */
export interface SubscriptionUa {
  readonly address: { host: string; port: number };
  readonly outboundRoute: string;
  subscribe(req: SubscribeRequest): SubscribeHandle;
  inDialog(dialog: Dialog, method: string, headers?: SipHeaderLine[], body?: string): Promise<NonInviteOutcome>;
}

/**
 * Several sidecars (session.store "redis", src/session/redis/ownership.ts):
 * a subscription is live work (its refreshes run on timers), so only the
 * holder of the served user's slot keeps one; a sidecar that loses the slot
 * lets its subscriptions go, and the new holder subscribes anew.
 */
export interface SubscriptionOwnership {
  slotOf(servedUser: string): number;
  holds(servedUser: string): boolean;
  /** Whether this sidecar holds the served user's slot now (taken when nobody held it). */
  owner(servedUser: string): Promise<{ self: boolean }>;
  onLost(fn: (slot: number) => void): void;
}

export interface ConferenceSubscriptionsDeps {
  ua: SubscriptionUa;
  ownership?: SubscriptionOwnership;
  policy: SubscriptionPolicy;
  /** config delivery.unsubscribeOnRejoin (DD-12 MAY): the subscription ends once the client is back. */
  unsubscribeOnRejoin: boolean;
  /** delivery.originatingRoute: the S-CSCF the PF's SUBSCRIBE for the served user goes through ("" = none). */
  originatingRoute?: string;
  /** The group session records (src/session/registry.ts). */
  sessions: { get(key: string): GroupSession | undefined };
  /** ParticipatingFunction.applyConferenceNotify. */
  apply(recordId: string, info: ConferenceInfo): Promise<{ applied: boolean; notes: string[]; participants?: number }>;
  log: Logger;
}

export const CONFERENCE_EVENT = "conference";

interface Subscription {
  recordId: string;
  focusUri: string;
  servedUser: string;
  state: SubscriptionState;
  timer?: NodeJS.Timeout;
  /** The current dialog's initial SUBSCRIBE (its Call-ID and tag match the NOTIFYs, RFC 6665 4.1.2.4). */
  initial?: SubscribeHandle;
  /** The subscription's dialog, from the 2xx or the first NOTIFY. */
  dialog?: Dialog;
  /** Events are handled one after another. */
  chain: Promise<void>;
  fields: Record<string, string>;
}

export class ConferenceSubscriptions {
  private readonly byRecord = new Map<string, Subscription>();
  /** Call-ID of a subscription's dialog -> the subscription (the NOTIFYs' dispatch). */
  private readonly byCallId = new Map<string, Subscription>();
  private closed = false;
  /** SUBSCRIBEs answered with an error or not at all. */
  failures = 0;
  /** NOTIFYs answered 481: no subscription of the PF's. */
  unknownNotifies = 0;
  /** NOTIFYs whose body was no usable conference-info (answered 200, nothing applied). */
  unusableNotifies = 0;

  constructor(private readonly deps: ConferenceSubscriptionsDeps) {
    deps.ownership?.onLost((slot) => this.letGo(slot));
  }

  /** Subscriptions held (any phase but ended). */
  get size(): number {
    return this.byRecord.size;
  }

  /** The lifecycle listener (ParticipatingFunction lifecycleListener): what each transition means for the subscription. */
  onLifecycle(record: GroupSession, ev: LifecycleEvent, transition: { from: Lifecycle; to: Lifecycle }): void {
    const id = recordIdOf(record);
    const sub = this.byRecord.get(id);
    if (transition.to === "client-absent") {
      if (!sub) void this.startOwned([record], "client absent");
      return;
    }
    if (!sub) return;
    if (transition.to === "active") {
      // DD-12 (MAY): the client is back (joined by the PF, or its own re-join INVITE)
      if (this.deps.unsubscribeOnRejoin) this.feed(sub, { type: "unsubscribe" }, "client back (delivery.unsubscribeOnRejoin)");
      return;
    }
    if (ev.type === "userLeft") return; // DD-8 ii: the executor unsubscribes after its BYE to the focus (a, then b)
    // the user's own BYE: the PF ends it; the CF's BYE: the focus ends it (8.3.2.3), the PF stops refreshing
    if (ev.type === "clientBye") this.feed(sub, { type: "unsubscribe" }, "the served user left");
    else this.feed(sub, { type: "groupEnded" }, `group session ${transition.to}`);
  }

  /**
   * A subscription for each group session whose client is away
   * (client-absent) and that this sidecar holds none for, as at the
   * transition: after a restart (the subscriptions were the process's
   * memory), and with several sidecars on each scan (those of a slot this
   * one took over). The focus's NOTIFYs on a dialog nobody holds any more get
   * 481, which ends it at the focus (RFC 6665 4.1.3). Resolves with how many
   * were started.
   */
  async resume(records: Iterable<GroupSession>): Promise<number> {
    const away: GroupSession[] = [];
    for (const record of records) {
      if (record.lifecycle === "client-absent" && !this.byRecord.has(recordIdOf(record))) away.push(record);
    }
    const before = this.byRecord.size;
    await this.startOwned(away, "client still absent, no subscription held");
    return this.byRecord.size - before;
  }

  /** Starts a subscription for each of `records` whose served user's slot this sidecar holds (taken if free; one ownership check per slot). */
  private async startOwned(records: GroupSession[], why: string): Promise<void> {
    // off (delivery.conferenceSubscriptionExpires 0): no slot is taken for it
    if (this.closed || this.deps.policy.expiresS === 0 || records.length === 0) return;
    const own = this.deps.ownership;
    if (!own) {
      for (const r of records) this.start(r, why);
      return;
    }
    const bySlot = new Map<number, GroupSession[]>();
    for (const r of records) {
      const slot = own.slotOf(r.servedUser);
      bySlot.set(slot, [...(bySlot.get(slot) ?? []), r]);
    }
    for (const [slot, rs] of bySlot) {
      const user = (rs[0] as GroupSession).servedUser;
      let mine = own.holds(user);
      if (!mine) {
        try {
          mine = (await own.owner(user)).self;
        } catch (err) {
          this.deps.log.warn("conference subscription: the owner of the served user's slot is unknown, none made", {
            slot,
            reason: asCpmError(err).detail,
          });
          continue;
        }
      }
      // another sidecar holds the slot: its own scan subscribes
      if (!mine) continue;
      for (const r of rs) if (!this.byRecord.has(recordIdOf(r))) this.start(r, why);
    }
  }

  /** The slot went to another sidecar: its users' subscriptions stop here (timers cleared; the new holder subscribes). */
  private letGo(slot: number): void {
    const own = this.deps.ownership;
    if (!own) return;
    for (const sub of [...this.byRecord.values()]) {
      if (own.slotOf(sub.servedUser) !== slot) continue;
      clearTimeout(sub.timer);
      this.byRecord.delete(sub.recordId);
      for (const [callId, s] of this.byCallId) if (s === sub) this.byCallId.delete(callId);
      this.deps.log.info("conference subscription left to the new holder of the served user's slot", { ...sub.fields, slot });
    }
  }

  /**
   * DD-8 ii b (and DD-12's MAY): ends the PF's subscription of the group
   * session with an in-dialog SUBSCRIBE, Expires: 0. Resolves with false
   * when the PF holds none for it; true once the unsubscribe is under way
   * (its answer and the terminating NOTIFY come later).
   */
  unsubscribe(sessionKey: string): Promise<boolean> {
    const record = this.deps.sessions.get(sessionKey);
    const sub = record ? this.byRecord.get(recordIdOf(record)) : undefined;
    if (!sub || sub.state.phase === "ended") return Promise.resolve(false);
    this.feed(sub, { type: "unsubscribe" }, "asked");
    return Promise.resolve(true);
  }

  /**
   * A NOTIFY that reached the PF's UA: on a subscription of the PF's, 200
   * and its document goes to the record (RFC 6665 4.1.3); one that matches
   * no subscription of the PF's gets 481 (RFC 6665 4.1.3). Never throws.
   */
  onNotify(req: SipMessage, reply: (status: number, reason: string) => void): void {
    const callId = header(req, "call-id") ?? "";
    const sub = this.byCallId.get(callId);
    const event = (header(req, "event") ?? "").split(";")[0]?.trim().toLowerCase();
    const fields = { callId, event };
    if (!sub || event !== CONFERENCE_EVENT || !this.ownTag(sub, callId, tagOf(header(req, "to")))) {
      this.unknownNotifies++;
      this.deps.log.info("NOTIFY for no conference subscription of the PF's: 481", { ...fields, refused: this.unknownNotifies });
      reply(481, "Subscription Does Not Exist");
      return;
    }
    if (!sub.dialog && sub.initial?.callId === callId) {
      // RFC 6665 4.1.2.4: the NOTIFY came before the 2xx: it makes the dialog
      try {
        const { localTag, localUri, remoteUri } = sub.initial;
        sub.dialog = this.throughProxy(dialogFromNotify(req, { callId, localTag, localUri, remoteUri, localCSeq: 1 }));
      } catch (err) {
        this.deps.log.warn("NOTIFY before the 2xx is no usable dialog: 400", { ...sub.fields, ...fields, reason: asCpmError(err).detail });
        reply(400, "Bad Request");
        return;
      }
    }
    reply(200, "OK");
    const state = subscriptionState(header(req, "subscription-state"));
    const body = conferenceInfoOf(req);
    if ("note" in body) {
      this.unusableNotifies++;
      this.deps.log.warn("NOTIFY of the PF's conference subscription without usable conference-info: answered 200, nothing applied", {
        ...sub.fields,
        ...fields,
        reason: body.note,
        unusable: this.unusableNotifies,
      });
    }
    const info = "info" in body ? body.info : undefined;
    this.deps.log.info("conference NOTIFY on the PF's subscription", {
      ...sub.fields,
      ...fields,
      subscriptionState: state.state,
      version: info?.version,
      users: info?.users.length,
    });
    this.feed(sub, { type: "notify", ...state, version: info?.version }, "NOTIFY", info);
  }

  /** Ends every subscription's timers (shutdown); nothing is sent: the focus lets them expire. */
  close(): void {
    this.closed = true;
    for (const sub of this.byRecord.values()) clearTimeout(sub.timer);
    this.byRecord.clear();
    this.byCallId.clear();
  }

  private start(record: GroupSession, why = "client absent"): void {
    if (this.closed || this.deps.policy.expiresS === 0) return;
    const id = recordIdOf(record);
    const fields = {
      groupCallId: record.key,
      conversationId: record.conversationId,
      contributionId: record.contributionId,
      focus: record.focusUri,
    };
    if (!record.focusUri || !record.servedUser) {
      this.deps.log.info("no conference subscription of the PF's: the record knows no focus or served user", fields);
      return;
    }
    const sub: Subscription = {
      recordId: id,
      focusUri: record.focusUri,
      servedUser: record.servedUser,
      state: newSubscription(),
      chain: Promise.resolve(),
      fields,
    };
    this.byRecord.set(id, sub);
    this.feed(sub, { type: "start" }, why);
  }

  private ownTag(sub: Subscription, callId: string, toTag: string): boolean {
    if (sub.dialog?.callId === callId) return sub.dialog.localTag === toTag;
    return sub.initial?.callId === callId && sub.initial.localTag === toTag;
  }

  /** The dialog's requests pass Kamailio: a route set without its entry (a NOTIFY that came first, not record-routed) gets the UA's outbound Route. */
  private throughProxy(dialog: Dialog): Dialog {
    if (dialog.routeSet.length === 0) dialog.routeSet = [this.deps.ua.outboundRoute];
    return dialog;
  }

  private feed(sub: Subscription, ev: SubscriptionEvent, why: string, info?: ConferenceInfo): void {
    sub.chain = sub.chain
      .then(async () => {
        if (this.closed || this.byRecord.get(sub.recordId) !== sub) return;
        const step = stepSubscription(sub.state, ev, Date.now(), this.deps.policy);
        sub.state = step.state;
        for (const note of step.notes) this.deps.log.info(note, { ...sub.fields, event: ev.type, why });
        if (step.failure) {
          this.failures++;
          this.deps.log.warn("conference SUBSCRIBE failed", {
            ...sub.fields,
            status: step.failure.status,
            retry: step.failure.retry,
            failures: this.failures,
          });
        }
        for (const a of step.actions) await this.execute(sub, a, info);
      })
      .catch((err: unknown) => {
        this.deps.log.error("conference subscription step failed", { ...sub.fields, reason: asCpmError(err).message });
      });
  }

  private async execute(sub: Subscription, a: SubscriptionAction, info: ConferenceInfo | undefined): Promise<void> {
    switch (a.kind) {
      case "sendSubscribe":
        return this.send(sub, a);
      case "setTimer":
        clearTimeout(sub.timer);
        sub.timer = setTimeout(() => this.feed(sub, { type: "timer" }, "timer"), a.delayMs);
        sub.timer.unref();
        return;
      case "clearTimer":
        clearTimeout(sub.timer);
        sub.timer = undefined;
        return;
      case "applyNotify": {
        if (!info) return;
        // the record's write failing must not cost the step's other actions (the refresh timer)
        const r = await this.deps.apply(sub.recordId, info).catch((err: unknown) => ({
          applied: false,
          notes: [`conference-info not applied: ${asCpmError(err).detail}`],
          participants: undefined,
        }));
        for (const note of r.notes) this.deps.log.warn(note, { ...sub.fields, version: info.version });
        if (r.applied) {
          this.deps.log.info("participants from the PF's conference subscription applied", {
            ...sub.fields,
            version: info.version,
            participants: r.participants,
          });
        }
        return;
      }
      case "forget":
        clearTimeout(sub.timer);
        if (this.byRecord.get(sub.recordId) === sub) this.byRecord.delete(sub.recordId);
        for (const [callId, s] of this.byCallId) if (s === sub) this.byCallId.delete(callId);
        this.deps.log.info("conference subscription of the PF's ended", {
          ...sub.fields,
          callId: sub.dialog?.callId ?? sub.initial?.callId,
        });
        return;
    }
  }

  private send(sub: Subscription, a: Extract<SubscriptionAction, { kind: "sendSubscribe" }>): void {
    const headers: SipHeaderLine[] = [
      ["Event", CONFERENCE_EVENT],
      ["Accept", "application/conference-info+xml"],
      ["Expires", String(a.expiresS)],
    ];
    const answered = (o: NonInviteOutcome): void =>
      this.feed(sub, { type: "response", n: a.n, status: o.status, ...numbers(o.response) }, `answer to ${a.subscribe}`);
    if (a.subscribe === "initial") {
      // a new dialog: the old one's NOTIFYs are no longer this subscription's
      for (const [callId, s] of this.byCallId) if (s === sub) this.byCallId.delete(callId);
      sub.dialog = undefined;
      let handle: SubscribeHandle;
      try {
        handle = this.deps.ua.subscribe({
          requestUri: sub.focusUri,
          // TS 24.229 5.7.3: the PF acts for the served user: the S-CSCF's originating processing first
          ...(this.deps.originatingRoute ? { route: [preloadedRoute(this.deps.originatingRoute, { orig: true })] } : {}),
          headers: [
            // the PF subscribes for the served user (8.3.2.9.1.2 c.1.ii.b speaks of the PF's subscription)
            ["From", `<${sub.servedUser}>`],
            ["To", `<${sub.focusUri}>`],
            ["P-Asserted-Identity", `<${sub.servedUser}>`],
            ["Contact", `<${uaUriOf(this.deps.ua.address)}>`],
            ...headers,
          ],
        });
      } catch (err) {
        this.deps.log.warn("conference SUBSCRIBE not sent", { ...sub.fields, reason: asCpmError(err).detail });
        answered({ status: 503, reason: "Service Unavailable" });
        return;
      }
      sub.initial = handle;
      this.byCallId.set(handle.callId, sub);
      this.deps.log.info("conference SUBSCRIBE to the focus for the served user", {
        ...sub.fields,
        callId: handle.callId,
        expires: a.expiresS,
      });
      void handle.outcome.then((o) => {
        if (o.dialog && sub.initial === handle) {
          // the 2xx's route set (through Kamailio's ;cpmpfdd entry); a NOTIFY's dialog keeps its CSeq
          const cseq = sub.dialog?.localCSeq ?? o.dialog.localCSeq;
          sub.dialog = this.throughProxy({ ...o.dialog, localCSeq: Math.max(cseq, o.dialog.localCSeq) });
        }
        answered(o);
      });
      return;
    }
    const dialog = sub.dialog;
    if (!dialog) {
      answered({ status: 481, reason: "Subscription Does Not Exist" });
      return;
    }
    this.deps.log.info(a.expiresS === 0 ? "conference unsubscribe (Expires: 0)" : "conference subscription refresh", {
      ...sub.fields,
      callId: dialog.callId,
    });
    this.deps.ua.inDialog(dialog, "SUBSCRIBE", headers).then(answered, (err: unknown) => {
      this.deps.log.warn("in-dialog SUBSCRIBE not sent", { ...sub.fields, reason: asCpmError(err).detail });
      answered({ status: 503, reason: "Service Unavailable" });
    });
  }
}

/** RFC 6665 4.1.3 Subscription-State: state, expires, reason, retry-after. A missing or unknown one is taken as active. */
export function subscriptionState(value: string | undefined): {
  state: "active" | "pending" | "terminated";
  expiresS?: number;
  reason?: string;
  retryAfterS?: number;
} {
  const semi = (value ?? "").indexOf(";");
  const name = (semi < 0 ? (value ?? "") : (value ?? "").slice(0, semi)).trim().toLowerCase();
  let params = new Map<string, string>();
  try {
    params = semi < 0 ? params : parseParams((value ?? "").slice(semi));
  } catch {
    // unreadable parameters: the state alone
  }
  const state = name === "pending" || name === "terminated" ? name : "active";
  const expires = seconds(params.get("expires"));
  const retryAfter = seconds(params.get("retry-after"));
  const reason = params.get("reason");
  return {
    state,
    ...(expires === undefined ? {} : { expiresS: expires }),
    ...(reason ? { reason } : {}),
    ...(retryAfter === undefined ? {} : { retryAfterS: retryAfter }),
  };
}

/** Expires and Retry-After (RFC 3261 20.19, 20.33) of a response. */
function numbers(res: SipMessage | undefined): { expiresS?: number; retryAfterS?: number } {
  if (!res) return {};
  const expires = seconds(header(res, "expires"));
  const retryAfter = seconds(header(res, "retry-after")?.split(/[\s;(]/)[0]);
  return { ...(expires === undefined ? {} : { expiresS: expires }), ...(retryAfter === undefined ? {} : { retryAfterS: retryAfter }) };
}

function seconds(v: string | undefined): number | undefined {
  if (v === undefined || !/^\s*\d+\s*$/.test(v)) return undefined;
  return Number(v);
}
