// Who delivers a group session's deferred data to a served user: the guard
// that 8.3.2.9.1.2 (after registration, deferred-delivery.ts) and 8.3.2.9.1.3
// (client re-join, rejoin-delivery.ts) share, so that the data is delivered
// once (RJ-1: the re-join may come before, or instead of, the register
// notification). Pure: a claims map in, a claims map out; the adapter keeps
// the map per served user and hands it to both procedures.
//
// Rules (the spec is silent on the coordination; decisions):
//   - one claim per (served user, group session, device): each of the
//     user's devices (its +sip.instance, device-view.ts) gets the data it
//     missed in a delivery of its own (DD-1 "for a CPM Client"); two devices
//     are delivered in parallel, each in order;
//   - a register notification (or its refresh) starts nothing for a session
//     the same device holds a claim on: delivery runs, or that device is
//     connected to the session and cannot have missed anything since;
//   - a re-join takes over a registration delivery of the same device (the
//     re-join INVITE's Contact +sip.instance; the client itself asked
//     for the session: 8.3.2.9.1.3 "SHALL proceed with the handling of the
//     re-join request"); the registration machine gets a `superseded` event
//     and stands down (CANCEL or BYE of its delivery session); what it had
//     not delivered is still in the queue and the re-join delivers it;
//   - a second re-join while one runs is handled as a plain re-join
//     (8.2.2.7) without delivery;
//   - a claim is released when its delivery session ends.

export type DeliveryOwner = "registration" | "rejoin";

export interface DeliveryClaim {
  owner: DeliveryOwner;
  /** delivering: INVITE/MSRP delivery under way; connected: queue drained, the client is in the session. */
  status: "delivering" | "connected";
}

export type DeliveryClaims = ReadonlyMap<string, DeliveryClaim>;

export interface ClaimResult {
  granted: boolean;
  claims: DeliveryClaims;
  /** The claim that was there before (taken over when granted, blocking when not). */
  previous: DeliveryClaim | undefined;
}

/** Key of one (served user, group session, device) claim; `device` is the device's keyword (device-view.ts deviceOf). */
export function deliveryKey(servedUser: string, sessionKey: string, device: string): string {
  return `${servedUser}\n${sessionKey}\n${device}`;
}

export function claimDelivery(claims: DeliveryClaims, key: string, owner: DeliveryOwner): ClaimResult {
  const previous = claims.get(key);
  const granted = previous === undefined || (owner === "rejoin" && previous.owner === "registration");
  if (!granted) return { granted, claims, previous };
  return { granted, claims: withClaim(claims, key, { owner, status: "delivering" }), previous };
}

/** The claims with `key` set to `claim` (removed when undefined). */
export function withClaim(claims: DeliveryClaims, key: string, claim: DeliveryClaim | undefined): DeliveryClaims {
  const next = new Map(claims);
  if (claim) next.set(key, claim);
  else next.delete(key);
  return next;
}

/**
 * What a machine's step says its claim is now (`Step.claim`), applied only
 * while `owner` holds the key (or nobody does): a machine that was taken over
 * must not release the claim of the one that took over.
 */
export function applyClaim(claims: DeliveryClaims, key: string, owner: DeliveryOwner, claim: DeliveryClaim | undefined): DeliveryClaims {
  const held = claims.get(key);
  if (held && held.owner !== owner) return claims;
  if (!held && !claim) return claims;
  return withClaim(claims, key, claim);
}
