// OMA CPM Conversation Functions 8.3.2.9.1.2 "CPM Group Session delivery"
// (deferred delivery of group session data after registration, DD-1..DD-14),
// as changed by the CR in shared/spec. Pure: one state machine per (served
// user, group session), driven by events, returning actions.
//
// Executed by src/delivery/service.ts: `registered` comes from the S-CSCF's
// third-party REGISTER joined with the user's queues (DeferredQueue
// .listSessions) and records; the PF's SIP UA (through Kamailio) sends
// `sendInvite` / `sendAck` / `cancelInvite` / `byeToClient` and reports
// `inviteResponse` / `clientBye`; the delivery endpoint (src/media) executes
// `deliverInOrder` / `sendGso` / `msrpFailureReport` and reports `msrpUp`,
// `itemDelivered` / `itemFailed`, `clientSentMedia`; the deferred queue
// executes `readDeferred` (answered by `itemsRead` / `readFailed`),
// `ackDeferred`, `discardDeferred`; a timer executes `scheduleRetry` as
// `retryTimer`. The guard (delivery-guard.ts) is kept per served user next to
// the machines. The actions on the group session's dialog towards the CF
// (`sendByeToFocus`, `releaseMedia`, `unsubscribeConference`,
// `rejoinConference`, `joinGroupDialog`, `forwardToFocus`,
// `restartGroupSession`) are listed in the README's status with what
// executes them.
export type { DeliveryInvite } from "./delivery-session.js";
export { CALL_COMPLETED } from "./delivery-session.js";

import { CpmError } from "../errors/catalogue.js";
import { withDirection } from "../sdp/direction.js";
import type { GroupSession } from "../session/group-session.js";
import { acceptContactFor, CPM_SESSION_ICSI, icsiRefParam } from "../sip/feature-tags.js";
import { parseNameAddr } from "../sip/name-addr.js";
import { preloadedRoute } from "../sip/preloaded-route.js";
import { formatReason } from "../sip/reason.js";
import { sdpWithRecipientList } from "../sip/recipient-list.js";
import { applyClaim, claimDelivery, type DeliveryClaim, type DeliveryClaims, deliveryKey } from "./delivery-guard.js";
import {
  CALL_COMPLETED,
  checkStatus,
  type DeliveryAction,
  type DeliveryInvite,
  type DeliveryPolicy,
  type DeliverySession,
  gsoAction,
  isActive,
  newDeliverySession,
  type OnDrained,
  participantEntries,
  queueRef,
  type SessionEvent,
  type Step,
  stepSession,
} from "./delivery-session.js";
import { deviceOf } from "./device-view.js";

/** The client whose registration the 3rd-party register event announced (DD-1). */
export interface RegisteredClient {
  /** The registered contact (URI or name-addr): the delivery INVITE's Request-URI. */
  contact: string;
  /** +sip.instance of the contact, when the notification carried it: the device (device-view.ts; none: the anonymous device). */
  instanceId?: string;
}

/** A group session with deferred data (DeferredQueue.listSessions) and what the PF knows of it. */
export interface PendingGroupSession {
  conversationId: string | undefined;
  contributionId: string | undefined;
  /** Objects waiting in the queue. */
  count: number;
  /** The session registry's snapshot; undefined when the PF no longer knows the session. */
  session: GroupSession | undefined;
}

export interface RegisteredEvent {
  type: "registered";
  servedUser: string;
  client: RegisteredClient;
  pending: PendingGroupSession[];
}

export type DeferredDeliveryEvent =
  /**
   * Final or provisional response of the client to the delivery INVITE (DD-7);
   * `answerUnusable`: a 2xx whose SDP gives the PF no MSRP path (the reason).
   */
  | { type: "inviteResponse"; status: number; answerUnusable?: string }
  /** The scheduleRetry delay passed (DD-9); `session`: a fresher snapshot, if any. */
  | { type: "retryTimer"; session?: GroupSession }
  /** A re-join of the client took over this session's delivery (RJ-1, delivery-guard.ts). */
  | { type: "superseded" }
  /** DD-1: the device registered again while this delivery was not up yet (its INVITE under way, or a retry waiting). */
  | { type: "registeredAgain"; client: RegisteredClient }
  | SessionEvent;

export type InvitePhase = "inviting" | "retryWait" | "answered" | "ended";

export interface DeferredDeliveryState {
  invitePhase: InvitePhase;
  client: RegisteredClient;
  /** Delivery INVITEs sent so far (1 = the first, DD-9 retries after it). */
  attempts: number;
  /** The delivery session (phase "connecting" until the client's 200 OK). */
  delivery: DeliverySession;
  superseded: boolean;
  /** DD-1: the device registered again (same contact) while the INVITE was under way: a failed attempt goes on there at once. */
  reRegistered?: RegisteredClient;
}

export interface StartResult {
  /** One machine per group session delivered, each with its first actions. */
  deliveries: Step<DeferredDeliveryState>[];
  /** DD-1: the deliveries of this device already claimed by a registration: each is told `registeredAgain` (by delivery key). */
  again: { key: string; client: RegisteredClient }[];
  claims: DeliveryClaims;
  notes: string[];
}

/**
 * DD-2..DD-6: the delivery INVITE for `session` towards `client`. Throws
 * CpmError for what cannot make a valid INVITE: no CPMDeferredMsgMgmtURI,
 * no focus URI, an unusable SDP offer.
 */
export function buildDeliveryInvite(
  servedUser: string,
  client: RegisteredClient,
  session: GroupSession,
  policy: DeliveryPolicy,
): DeliveryInvite {
  if (!policy.deferredMsgMgmtUri) throw new CpmError("CPM_ERR_CONFIG", "delivery.deferredMsgMgmtUri is not configured (DD-4)");
  if (!session.focusUri) throw new CpmError("CPM_ERR_BAD_REQUEST", `session ${session.key}: no focus URI known`);
  // DD-6: the original offer, direction set to sendrecv (added when absent)
  const sdp = withDirection(session.sdpOffer, "sendrecv");
  // DD-2: the latest participants known, RFC 5366 recipient-list part
  const body = sdpWithRecipientList(sdp, participantEntries(session));
  const headers: [string, string][] = [
    ["To", `<${servedUser}>`],
    // DD-3 "all the original CPM Group Session information": From names the
    // focus as in the original invitation; the PF stays in the path by
    // record-routing, so in-dialog requests reach it (docs/adr/0002)
    ["From", `<${session.focusUri}>`],
    ["Contact", deliveryContact(session.focusUri, policy)],
    ["Accept-Contact", acceptContactFor(CPM_SESSION_ICSI)], // DD-3
    ...instanceContact(policy, client),
    ["P-Asserted-Identity", `<${policy.deferredMsgMgmtUri}>`], // DD-4
    ["P-Asserted-Service", CPM_SESSION_ICSI], // DD-5
    ["Conversation-ID", session.conversationId], // DD-2
    ["Contribution-ID", session.contributionId],
  ];
  if (session.subject) headers.push(["Subject", session.subject]);
  // DD-3: who invited the user, as the original invitation said (RFC 3892)
  if (session.referredBy) headers.push(["Referred-By", session.referredBy]);
  headers.push(["Content-Type", body.contentType]);
  const viaScscf = policy.terminatingRoute !== "";
  return {
    // TS 24.229 5.7.3: through the S-CSCF, addressed to the public identity
    requestUri: viaScscf ? servedUser : requestUriOf(servedUser, client),
    route: viaScscf ? [preloadedRoute(policy.terminatingRoute)] : [],
    headers,
    body: body.body,
    sdp,
  };
}

/**
 * DD-3: the delivery INVITE's Contact (delivery.contact): the focus with
 * ;isfocus (RFC 4579 3.4: clients recognise a group session by it), or the
 * PF's own UA; the CPM ICSI in either.
 */
function deliveryContact(focusUri: string, policy: DeliveryPolicy): string {
  const icsi = icsiRefParam(CPM_SESSION_ICSI);
  if (policy.contact !== "pf") return `<${focusUri}>;isfocus;${icsi}`;
  if (!policy.uaUri)
    throw new CpmError("CPM_ERR_CONFIG", 'delivery.contact "pf" needs the SIP UA\'s address (sip.host, sip.advertisedAddress)');
  return `<${policy.uaUri}>;${icsi}`;
}

/** RFC 3841 9.2: through the S-CSCF, only the device that registered (its +sip.instance, RFC 5626) gets the INVITE. */
function instanceContact(policy: DeliveryPolicy, client: RegisteredClient): [string, string][] {
  if (policy.terminatingRoute === "" || !client.instanceId) return [];
  return [["Accept-Contact", `*;+sip.instance="${client.instanceId.replace(/^"|"$/g, "")}";require;explicit`]];
}

/** Whether two registrations of the device name one contact (its URI; the parameters change with each refresh). */
function sameBinding(a: RegisteredClient, b: RegisteredClient): boolean {
  const uri = (c: RegisteredClient): string => {
    try {
      return parseNameAddr(c.contact).uri;
    } catch {
      return c.contact;
    }
  };
  return uri(a) === uri(b);
}

/** Decision: the registered contact, so the client that registered gets it; the served user when the contact is no SIP URI. */
function requestUriOf(servedUser: string, client: RegisteredClient): string {
  try {
    const uri = parseNameAddr(client.contact).uri;
    if (/^sips?:/i.test(uri)) return uri;
  } catch {
    // below
  }
  return servedUser;
}

/** DD-9: min(max, initial × factor^(retry-1)); retry is 1-based. */
export function retryDelay(retry: number, policy: Pick<DeliveryPolicy, "retryInitialMs" | "retryFactor" | "retryMaxMs">): number {
  return Math.min(policy.retryMaxMs, policy.retryInitialMs * policy.retryFactor ** (retry - 1));
}

/** DD-1: a client registered: one delivery per group session with pending data, none for a claimed one. */
export function startDeferredDelivery(ev: RegisteredEvent, claims: DeliveryClaims, policy: DeliveryPolicy): StartResult {
  const notes: string[] = [];
  const deliveries: Step<DeferredDeliveryState>[] = [];
  const again: StartResult["again"] = [];
  if (!policy.deferredMsgMgmtUri) {
    notes.push("deferred delivery off: delivery.deferredMsgMgmtUri is not configured (DD-4)");
    return { deliveries, again, claims, notes };
  }
  for (const p of ev.pending) {
    const label = `${p.conversationId ?? "?"}/${p.contributionId ?? "?"}`;
    if (p.count <= 0) continue;
    if (!p.session) {
      notes.push(`${label}: group session unknown to the PF (no SDP offer, no participants): data kept`);
      continue;
    }
    // DD-1 per device: the claim is this device's; another device of the user has its own
    const device = deviceOf(ev.client.instanceId).keyword;
    const key = deliveryKey(ev.servedUser, p.session.key, device);
    const claim = claimDelivery(claims, key, "registration");
    if (!claim.granted) {
      notes.push(`${label}: ${claim.previous?.owner} ${claim.previous?.status}: not delivered again to this device`);
      if (claim.previous?.owner === "registration") again.push({ key, client: ev.client });
      continue;
    }
    const state: DeferredDeliveryState = {
      invitePhase: "inviting",
      client: ev.client,
      attempts: 0,
      delivery: newDeliverySession(key, "registration", ev.servedUser, p.session, device),
      superseded: false,
    };
    const first = invite(state, policy);
    deliveries.push(first);
    claims = applyClaim(claim.claims, key, "registration", first.claim);
    if (first.error) notes.push(`${label}: ${first.error.detail}`);
  }
  return { deliveries, again, claims, notes };
}

function dstep(s: DeferredDeliveryState, actions: DeliveryAction[], notes: string[], error?: CpmError): Step<DeferredDeliveryState> {
  const out: Step<DeferredDeliveryState> = { state: s, actions, notes, claim: claimOf(s) };
  if (error) out.error = error;
  return out;
}

function claimOf(s: DeferredDeliveryState): DeliveryClaim | undefined {
  if (s.invitePhase === "ended" || s.delivery.phase === "ended") return undefined;
  return { owner: "registration", status: s.delivery.phase === "delivered" ? "connected" : "delivering" };
}

function ended(s: DeferredDeliveryState): DeferredDeliveryState {
  return { ...s, invitePhase: "ended", delivery: { ...s.delivery, phase: "ended" } };
}

/** A (re-)attempt: the INVITE, or the end when it cannot be built. */
function invite(s: DeferredDeliveryState, policy: DeliveryPolicy): Step<DeferredDeliveryState> {
  const notes: string[] = [];
  const session = s.delivery.session;
  if (session.participants.length === 0) {
    // Decision: an empty list is a valid RFC 4826 document; the deferred data still goes
    notes.push("no participants known: resource-list sent empty");
  }
  try {
    const inv = buildDeliveryInvite(s.delivery.servedUser, s.client, session, policy);
    return dstep({ ...s, invitePhase: "inviting", attempts: s.attempts + 1 }, [{ kind: "sendInvite", invite: inv }], notes);
  } catch (err) {
    const e = err instanceof CpmError ? err : new CpmError("CPM_ERR_INTERNAL", String(err), { cause: err });
    return dstep(ended(s), [], [...notes, `no delivery INVITE: ${e.detail}; data kept`], e);
  }
}

/** What 8.3.2.9.1.2 d) does once the queue is drained (DD-11, DD-12; DD-13 waits for the client's media). */
const afterDrain: OnDrained = (s, policy, at) => {
  const actions: DeliveryAction[] = [];
  // DD-11 (MAY): the latest participants as a GSO, after the deferred items
  if (policy.sendInterimGsos) {
    const gso = gsoAction(s.session, at, policy);
    if (gso) actions.push(gso);
  }
  if (isActive(s.session)) {
    // DD-12: re-join with the on-going conference; MAY unsubscribe
    actions.push({ kind: "rejoinConference", sessionKey: s.session.key });
    if (policy.unsubscribeOnRejoin) {
      actions.push({ kind: "unsubscribeConference", sessionKey: s.session.key, focusUri: s.session.focusUri });
    }
    // client SENDs held during the delivery go on once joined (held until forwarded)
    if (s.held.length) actions.push({ kind: "forwardToFocus", msrpMessageIds: s.held.map((m) => m.msrpMessageId) });
    return { session: { ...s, joined: true }, actions };
  }
  return { session: s, actions };
};

export function stepDeferredDelivery(
  s: DeferredDeliveryState,
  ev: DeferredDeliveryEvent,
  policy: DeliveryPolicy,
): Step<DeferredDeliveryState> {
  switch (ev.type) {
    case "inviteResponse":
      return inviteResponse(s, ev.status, policy, ev.answerUnusable);
    case "retryTimer": {
      if (s.invitePhase !== "retryWait") return dstep(s, [], [`retryTimer ignored in ${s.invitePhase}`]);
      const delivery = ev.session ? { ...s.delivery, session: ev.session } : s.delivery;
      return invite({ ...s, delivery }, policy);
    }
    case "superseded": {
      const next = { ...ended(s), superseded: true };
      if (s.invitePhase === "inviting") return dstep(next, [{ kind: "cancelInvite" }], ["re-join took over: INVITE cancelled"]);
      if (s.invitePhase === "retryWait") return dstep(next, [], ["re-join took over: retry dropped"]);
      if (s.invitePhase === "answered" && s.delivery.phase !== "ended") {
        // undelivered items stay in the queue: the re-join delivers them
        return dstep(next, [{ kind: "byeToClient", reason: CALL_COMPLETED }], ["re-join took over: delivery session closed"]);
      }
      return dstep(s, [], ["superseded ignored: delivery already over"]);
    }
    case "registeredAgain":
      return registeredAgain(s, ev.client, policy);
    case "actionUnavailable":
      if (ev.action.kind === "sendInvite" && s.invitePhase === "inviting") {
        // no INVITE went out (no media leg, unusable offer): a failed attempt, DD-9 decides
        const failed = failedAttempt(s, 500, policy);
        return { ...failed, notes: [`delivery INVITE not sent (${ev.reason})`, ...failed.notes] };
      }
      return stepAnswered(s, ev, policy);
    default:
      return stepAnswered(s, ev, policy);
  }
}

/** The delivery session's events, once the client answered the INVITE. */
function stepAnswered(s: DeferredDeliveryState, ev: SessionEvent, policy: DeliveryPolicy): Step<DeferredDeliveryState> {
  if (s.invitePhase !== "answered") return dstep(s, [], [`${ev.type} ignored in ${s.invitePhase}`]);
  const r = stepSession(s.delivery, ev, policy, afterDrain);
  const next: DeferredDeliveryState = { ...s, delivery: r.state, invitePhase: r.state.phase === "ended" ? "ended" : s.invitePhase };
  return { ...r, state: next };
}

function inviteResponse(
  s: DeferredDeliveryState,
  status: number,
  policy: DeliveryPolicy,
  answerUnusable?: string,
): Step<DeferredDeliveryState> {
  const bad = checkStatus(status);
  if (bad) return dstep(s, [], [], bad);
  if (s.invitePhase !== "inviting") {
    if (s.superseded && status >= 200 && status < 300) {
      // a 2xx that crossed our CANCEL: the dialog exists, close it (RFC 3261 9.1)
      return dstep(s, [{ kind: "sendAck" }, { kind: "byeToClient", reason: CALL_COMPLETED }], ["2xx after CANCEL: ACK + BYE"]);
    }
    return dstep(s, [], [`response ${status} ignored in ${s.invitePhase}`]);
  }
  if (status < 200) return dstep(s, [], [`provisional ${status}`]);
  if (status < 300 && answerUnusable !== undefined) {
    // Decision (spec silent): the dialog exists (ACK, then BYE, RFC 3261 13.2.2.4);
    // without a media path it is a failed attempt, DD-9 decides on a retry
    const failed = failedAttempt(s, 488, policy);
    const reason = formatReason({ protocol: "SIP", cause: 488, text: "Not Acceptable Here" });
    return {
      ...failed,
      actions: [{ kind: "sendAck" }, { kind: "byeToClient", reason }, ...failed.actions],
      notes: [`2xx without a usable MSRP answer (${answerUnusable})`, ...failed.notes],
    };
  }
  if (status < 300) {
    // DD-10: ACK; delivery starts once MSRP is up (event msrpUp)
    return dstep({ ...s, invitePhase: "answered" }, [{ kind: "sendAck" }], []);
  }
  const session = s.delivery.session;
  if (status === 603) {
    // DD-8: the user declined: discard; tear the group session down when still active.
    // Decision: "discard all deferred CPM Messages ... for that CPM Group Session" answers the
    // INVITE "towards the CPM Client" (8.3.2.9.1.2 c) 1) i): this device's view only; the user's
    // other devices still get what they missed.
    const actions: DeliveryAction[] = [{ kind: "discardDeferred", queue: queueRef(s.delivery.servedUser, session, s.delivery.device) }];
    if (isActive(session)) {
      actions.push(
        { kind: "sendByeToFocus", sessionKey: session.key, reason: CALL_COMPLETED },
        { kind: "releaseMedia", sessionKey: session.key },
        { kind: "unsubscribeConference", sessionKey: session.key, focusUri: session.focusUri },
      );
    }
    return dstep(ended(s), actions, ["603 Decline: deferred data discarded"]);
  }
  return failedAttempt(s, status, policy);
}

/**
 * DD-1: a registration of the device is the trigger of the delivery: one
 * waiting for a DD-9 retry makes its attempt now, to the contact just
 * registered (the re-attempts count from there); one whose INVITE is under
 * way to another contact drops that INVITE and invites the new contact now
 * (a crash's resumed delivery may ring a contact the device left); to the
 * same contact (a refresh) that INVITE's answer decides, and a failed attempt
 * goes on at once. Once the delivery session is up, nothing changes.
 */
function registeredAgain(s: DeferredDeliveryState, client: RegisteredClient, policy: DeliveryPolicy): Step<DeferredDeliveryState> {
  if (s.invitePhase === "retryWait") {
    const r = invite({ ...s, client, attempts: 0 }, policy);
    return { ...r, notes: ["registered again while a retry waited: re-attempted now", ...r.notes] };
  }
  if (s.invitePhase === "inviting" && !sameBinding(s.client, client)) {
    // the device's binding moved (RFC 3261 10.3, RFC 5627: one device, its new contact): ringing the
    // contact it left would hold the delivery until that INVITE times out
    const { reRegistered: _, ...rest } = s;
    const r = invite({ ...rest, client, attempts: 0 }, policy);
    return {
      ...r,
      actions: [{ kind: "abandonInvite" }, ...r.actions],
      notes: ["registered again at another contact during the delivery INVITE: that INVITE dropped, re-attempted there now", ...r.notes],
    };
  }
  if (s.invitePhase === "inviting") {
    return dstep(
      { ...s, reRegistered: client },
      [],
      ["registered again during the delivery INVITE: a failure goes on to this registration"],
    );
  }
  return dstep(s, [], [`registered again in ${s.invitePhase}: nothing changes`]);
}

/** DD-9 (MAY): any other error (3xx included: the PF follows no redirect towards a client). */
function failedAttempt(s: DeferredDeliveryState, status: number, policy: DeliveryPolicy): Step<DeferredDeliveryState> {
  if (s.reRegistered) {
    const { reRegistered: client, ...rest } = s;
    const r = invite({ ...rest, client, attempts: 0 }, policy);
    return { ...r, notes: [`${status}: the device registered again meanwhile: re-attempted there now`, ...r.notes] };
  }
  const retry = s.attempts; // retries done so far + 1
  if (retry > policy.retryAttempts) {
    const why = policy.retryAttempts === 0 ? "retries off" : `${policy.retryAttempts} retries done`;
    return dstep(ended(s), [], [`${status}: ${why}; data kept for the next registration or re-join`]);
  }
  return dstep(
    { ...s, invitePhase: "retryWait" },
    [{ kind: "scheduleRetry", attempt: retry, delayMs: retryDelay(retry, policy) }],
    [`${status}: retry ${retry} of ${policy.retryAttempts}`],
  );
}
