// OMA CPM Conversation Functions 8.3.2.9.1.3 "Deferred delivery performed
// upon CPM Client re-join" (RJ-1..RJ-5), as changed by the CR in
// shared/spec. Pure: one machine per (served user, group session), started
// by the client's re-join INVITE, then driven by the delivery-session events
// (delivery-session.ts) it shares with 8.3.2.9.1.2.
//
// Coordination with deferred-delivery.ts (RJ-1): both claim the session for
// the device (the re-join INVITE's Contact +sip.instance) in the guard
// (delivery-guard.ts). A re-join takes over a registration
// delivery (`supersedeRegistrationDelivery`: the adapter feeds `superseded`
// to that machine); a later register notification starts nothing while the
// re-join holds the claim. So the data is delivered by one of them, once.
//
// Adapters: the SIP side recognises the re-join INVITE (8.2.2.7: to the
// lastfocussessionid, same Contribution-ID) of a session whose client leg was
// lost and feeds `rejoinInvite`; it executes `acceptRejoin` (200 OK with the
// SDP answer the media plane anchors), `relayRejoin` (plain 8.2.2.7
// handling), `restartGroupSession` (INVITE to the CF, answered by
// `restartResponse`) and `byeToClient`, and reports `clientBye`; the media
// plane reports `msrpUp` / `itemDelivered` / `itemFailed` / `clientSentMedia`
// and executes `deliverInOrder` / `sendGso` / `joinGroupDialog` /
// `forwardToFocus` / `msrpFailureReport`; the deferred queue executes
// `readDeferred` / `ackDeferred` / `discardDeferred`. Which of them run today
// is in the README's status.
import type { GroupSession } from "../session/group-session.js";
import { applyClaim, claimDelivery, type DeliveryClaims, deliveryKey } from "./delivery-guard.js";
import {
  type DeliveryAction,
  type DeliveryPolicy,
  type DeliverySession,
  gsoAction,
  isActive,
  newDeliverySession,
  type OnDrained,
  restartRequest,
  type SessionEvent,
  type Step,
  stepSession,
} from "./delivery-session.js";
import { deviceOf } from "./device-view.js";

export interface RejoinInviteEvent {
  type: "rejoinInvite";
  servedUser: string;
  /** Call-ID of the client's re-join INVITE (the delivery dialog). */
  clientCallId: string;
  /** +sip.instance of the re-join INVITE's Contact: the device (none: the anonymous device, device-view.ts). */
  instanceId?: string;
  /** The registry's snapshot of the group session re-joined; undefined when unknown. */
  session: GroupSession | undefined;
}

export interface RejoinState {
  clientCallId: string;
  delivery: DeliverySession;
}

export interface RejoinStart {
  /** undefined: no delivery for this re-join (see actions / notes). */
  state: RejoinState | undefined;
  actions: DeliveryAction[];
  notes: string[];
  claims: DeliveryClaims;
}

/**
 * RJ-1: whether the PF answers the client's re-join of `session` itself
 * (ObserveSession's answer_by_pf). Decision (the spec leaves the test to the
 * PF): data is pending for the served user, or the group was ended by the CF
 * re-startably (RJ-3), or its client leg is gone while the PF still holds the
 * CF side (`cfLegLive`: RJ-5 can join it); the PF knows the focus; no
 * re-join of it is being delivered. Anything else goes to the focus as a
 * plain 8.2.2.7 re-join: a second re-join, a client-absent group with nothing
 * pending whose CF leg the PF lost (a restart: the PF could not join it, and
 * the client would be sent back to re-join again), a terminated or left group
 * (its data waits for the next registration, 8.3.2.9.1.2).
 */
export function answersRejoin(
  servedUser: string,
  session: GroupSession,
  claims: DeliveryClaims,
  cfLegLive: boolean,
  instanceId?: string,
): boolean {
  if (!session.focusUri || session.lifecycle === "terminated" || session.lifecycle === "left") return false;
  const interrupted = session.pendingDeferred || session.lifecycle === "inactive" || (session.lifecycle === "client-absent" && cfLegLive);
  // per device: another device's re-join delivery does not stop this one's
  return interrupted && claims.get(deliveryKey(servedUser, session.key, deviceOf(instanceId).keyword))?.owner !== "rejoin";
}

/** RJ-1: the client re-joins an interrupted group session; deliver what it missed. */
export function startRejoinDelivery(
  ev: RejoinInviteEvent,
  claims: DeliveryClaims,
  policy: Pick<DeliveryPolicy, "conferenceFactoryUri">,
): RejoinStart {
  const relay: DeliveryAction = { kind: "relayRejoin", clientCallId: ev.clientCallId };
  if (!ev.session) {
    return { state: undefined, actions: [relay], notes: ["group session unknown to the PF: plain re-join (8.2.2.7)"], claims };
  }
  // the re-joining device's claim only: a registration delivery to another device of the user goes on
  const device = deviceOf(ev.instanceId).keyword;
  const key = deliveryKey(ev.servedUser, ev.session.key, device);
  const claim = claimDelivery(claims, key, "rejoin");
  if (!claim.granted) {
    const notes = [`delivery already held by ${claim.previous?.owner} (${claim.previous?.status}): plain re-join (8.2.2.7)`];
    return { state: undefined, actions: [relay], notes, claims };
  }
  const actions: DeliveryAction[] = [];
  const notes: string[] = [];
  if (claim.previous?.owner === "registration") {
    actions.push({ kind: "supersedeRegistrationDelivery", key });
    notes.push("re-join came first: the registration delivery stands down (RJ-1)");
  }
  actions.push({ kind: "acceptRejoin", clientCallId: ev.clientCallId });
  let delivery = newDeliverySession(key, "rejoin", ev.servedUser, ev.session, device);
  if (!isActive(ev.session)) {
    // RJ-3: re-start the long-lived group session with the CF (8.2.2.7), at once
    const restart = restartRequest(ev.session, policy);
    actions.push({ kind: "restartGroupSession", restart });
    delivery = { ...delivery, restart: "pending", restarting: restart };
  }
  return { state: { clientCallId: ev.clientCallId, delivery }, actions, notes, claims: claim.claims };
}

/**
 * Once the queue is drained. Inactive: RJ-3 the last participant information
 * as a GSO. Decision: it comes after the deferred items (and the interim
 * GSOs among them), so the newest state is the one the client keeps.
 * Active: RJ-5's join follows from joinIfReady (after the deferred items:
 * live messages must not overtake them).
 */
const afterDrain: OnDrained = (s, policy, at) => {
  if (isActive(s.session)) return { session: s, actions: [] };
  const gso = gsoAction(s.session, at, policy);
  return { session: s, actions: gso ? [gso] : [] };
};

export function stepRejoinDelivery(s: RejoinState, ev: SessionEvent, policy: DeliveryPolicy): Step<RejoinState> {
  if (ev.type === "actionUnavailable" && ev.action.kind === "acceptRejoin") {
    // the re-join could not be answered (e.g. no MSRP endpoint for its offer): nothing was taken from the queue
    const delivery: DeliverySession = { ...s.delivery, phase: "ended" };
    return { state: { ...s, delivery }, actions: [], notes: [`re-join not accepted (${ev.reason}): data kept`], claim: undefined };
  }
  const r = stepSession(s.delivery, ev, policy, afterDrain);
  return { ...r, state: { ...s, delivery: r.state } };
}

/** The claims after a step of this machine (the guard keeps the claim of the one that took over). */
export function rejoinClaims(claims: DeliveryClaims, s: RejoinState, claim: Step<RejoinState>["claim"]): DeliveryClaims {
  return applyClaim(claims, s.delivery.key, "rejoin", claim);
}
