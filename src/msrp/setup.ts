// Who opens the MSRP connection (RFC 6135, using RFC 4145 `a=setup`). The
// active endpoint connects and sends the first (possibly empty) SEND; the
// passive one listens. Without `a=setup` RFC 4975 applies: the offerer is
// active. `holdconn` does not exist for MSRP, and two actives or two passives
// cannot meet: those throw CPM_ERR_MSRP_SETUP.
import { CpmError } from "../errors/catalogue.js";

export type SetupAttribute = "active" | "passive" | "actpass" | "holdconn";
export type ConnectionRole = "active" | "passive";

function opposite(role: ConnectionRole): ConnectionRole {
  return role === "active" ? "passive" : "active";
}

/** The role implied by one side's a=setup alone, or undefined when it leaves the choice open. */
function fixedRole(setup: SetupAttribute | undefined): ConnectionRole | undefined {
  if (setup === "holdconn") throw new CpmError("CPM_ERR_MSRP_SETUP", "a=setup:holdconn is not usable for MSRP");
  return setup === "active" || setup === "passive" ? setup : undefined;
}

/**
 * Our role on the connection. `localSetup` / `remoteSetup` are the a=setup
 * values of our and the peer's SDP (undefined when absent); `isOfferer` says
 * whether we sent the offer.
 */
export function connectionRole(
  localSetup: SetupAttribute | undefined,
  remoteSetup: SetupAttribute | undefined,
  isOfferer: boolean,
): ConnectionRole {
  const local = fixedRole(localSetup);
  const remote = fixedRole(remoteSetup);
  if (local !== undefined && remote !== undefined) {
    if (local === remote) throw new CpmError("CPM_ERR_MSRP_SETUP", `both ends say a=setup:${local}`);
    return local;
  }
  if (local !== undefined) return local;
  if (remote !== undefined) return opposite(remote);
  // Both open (actpass/absent): RFC 4975 default, the offerer connects.
  return isOfferer ? "active" : "passive";
}

/**
 * The a=setup an answerer puts in its answer (RFC 6135 4.1: an offer of
 * actpass, or no a=setup, lets the answerer choose; `prefer` says how).
 */
export function answerSetup(offerSetup: SetupAttribute | undefined, prefer: ConnectionRole = "active"): ConnectionRole {
  const fixed = fixedRole(offerSetup);
  if (fixed !== undefined) return opposite(fixed);
  // No a=setup in the offer: the offerer follows RFC 4975 and connects.
  if (offerSetup === undefined) return "passive";
  return prefer;
}
