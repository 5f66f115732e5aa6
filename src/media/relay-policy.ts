// What the PF does with one complete MSRP message on an anchored group session,
// given where it came from, what it carries and the state of the leg it
// should go out on. Pure: the relay queue (relay-queue.ts) carries it out.
//   other leg up       relay unchanged (REPORTs stay per hop)
//   other leg pending  wait until it is up or declared absent
//   client leg absent  from the CF: message / IMDN / GSO -> deferred storage,
//                      isComposing -> 200 and dropped (nothing to deliver later)
//   CF leg absent      from the client: 481, nobody to deliver to (RFC 4975 10)
import type { PayloadKind } from "./classify.js";
import type { DeferredKind } from "./ports.js";

export type Direction = "from-network" | "from-client";

/** pending: SDP done, connection not (yet) there; up: bound and its path known; gone: absent, closed or broken. */
export type LegState = "pending" | "up" | "gone";

export type RelayAction =
  | { do: "relay" }
  | { do: "wait" }
  | { do: "defer"; kind: DeferredKind }
  | { do: "drop"; code: 200 }
  | { do: "refuse"; code: 481 };

export function relayAction(direction: Direction, kind: PayloadKind, otherLeg: LegState): RelayAction {
  if (otherLeg === "up") return { do: "relay" };
  if (otherLeg === "pending") return { do: "wait" };
  if (direction === "from-client") return { do: "refuse", code: 481 };
  if (kind === "isComposing") return { do: "drop", code: 200 };
  return { do: "defer", kind };
}

/**
 * Whether the outcome of a relayed SEND means the leg itself is broken (the
 * message then goes the "absent" way): 481 the peer lost the session, 408 no
 * answer in time (RFC 4975 7.1.1). Other errors (400, 413, 415) refuse this
 * one message only and go back to its sender.
 */
export function legBroken(code: number): boolean {
  return code === 481 || code === 408;
}
