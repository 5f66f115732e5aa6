// Pure: the PF's own in-dialog request on a dialog it only proxies — the
// group session's dialog between the Controlling Function and the served
// user's client, which Kamailio record-routes with the ";cpmpf" marker. The
// PF speaks for one side towards the other (DD-8 ii: the served user's BYE to
// the focus), so the request carries that side's tags and URIs and the part
// of the route set beyond the PF (RFC 3261 12.1.1, 12.1.2, 16.6 step 4).
import { CpmError } from "../errors/catalogue.js";
import { splitCommaList } from "../sip/message.js";
import { parseNameAddr, uriParams } from "../sip/name-addr.js";
import type { Dialog } from "../sip/ua.js";
import type { GroupSession, SessionDialog } from "./group-session.js";

/**
 * What the UA needs to send a request in a dialog (src/sip/ua.ts Dialog);
 * `routeSet` is the route beyond the PF, nearest first. Its localCSeq: RFC
 * 3261 8.1.1.5 allows CSeq numbers below 2^31. The PF does not see every
 * in-dialog request of the side it speaks for, so it cannot know that side's
 * last CSeq; a BYE is the dialog's last request, so the highest number is
 * strictly above any the side used and none needs to follow it.
 */
export type ProxiedDialog = Dialog;

/** `d` sent through Kamailio first: the UA's outbound Route (its ";cpmpfuac" marker) before the dialog's route set. */
export function throughProxy(d: ProxiedDialog, outboundRoute: string): ProxiedDialog {
  return { ...d, routeSet: [outboundRoute, ...d.routeSet] };
}

/** The CSeq of the BYE is localCSeq + 1 (the UA increments first). */
const LAST_CSEQ = 2 ** 31 - 1;

/** Kamailio's own Record-Route entries carry this parameter (kamailio/cpm-pf.cfg route[CPM_PF_OBSERVE]). */
function isPfEntry(rr: string): boolean {
  try {
    const { uri, params } = parseNameAddr(rr);
    return uriParams(uri).has("cpmpf") || params.has("cpmpf");
  } catch {
    return false;
  }
}

/**
 * The Record-Route values beyond the PF towards the dialog's caller (after the
 * PF's entries in header order) or its callee (before them, nearest first).
 * Record-Route values may be comma-joined in one header line.
 */
export function routeBeyondPf(recordRoute: readonly string[], towards: "caller" | "callee"): string[] {
  const entries = recordRoute.flatMap(splitCommaList);
  const first = entries.findIndex(isPfEntry);
  if (first < 0) throw new CpmError("CPM_ERR_BAD_SIP", "the dialog's Record-Route has no entry of the PF");
  let last = first;
  while (last + 1 < entries.length && isPfEntry(entries[last + 1] as string)) last++;
  return towards === "caller" ? entries.slice(last + 1) : entries.slice(0, first).reverse();
}

/**
 * The served user's side speaking to the focus on `dialog` (DD-8 ii).
 * Throws CpmError when the dialog is not confirmed (`ending`: the record
 * already has it ended, by the BYE this request is) or lacks what a request needs.
 */
export function towardsFocus(session: GroupSession, dialog: SessionDialog, opts: { ending?: boolean } = {}): ProxiedDialog {
  if (dialog.state !== "confirmed" && !(opts.ending && dialog.state === "terminated")) {
    throw new CpmError("CPM_ERR_NOT_FOUND", `dialog ${dialog.callId} is ${dialog.state}`);
  }
  if (!dialog.cfTag || !dialog.clientTag || !dialog.remoteTarget) {
    throw new CpmError("CPM_ERR_BAD_SIP", `dialog ${dialog.callId}: tags or the focus's Contact unknown`);
  }
  return {
    callId: dialog.callId,
    localTag: dialog.clientTag,
    remoteTag: dialog.cfTag,
    localUri: `<${session.servedUser}>`,
    remoteUri: `<${session.focusUri || dialog.remoteTarget}>`,
    remoteTarget: dialog.remoteTarget,
    routeSet: routeBeyondPf(dialog.routeSet, (dialog.initiator ?? "cf") === "cf" ? "caller" : "callee"),
    localCSeq: LAST_CSEQ - 1,
  };
}

/** The focus's side speaking to the served user's client on `dialog`; undefined when the client's Contact is unknown (an older record). */
export function towardsClient(session: GroupSession, dialog: SessionDialog): ProxiedDialog | undefined {
  if (dialog.state !== "confirmed" || !dialog.clientTarget || !dialog.cfTag || !dialog.clientTag) return undefined;
  return towardsDevice(session, dialog, dialog.clientTag);
}

/**
 * BYE-B7: the focus's side speaking to one device of the served user in
 * `dialog`, by its To tag: the first device (the CF's dialog), or a further
 * one of a forked INVITE (the UA's dialog, its own 2xx's route), whatever the
 * record's state of the dialog. Undefined for a tag of no device or with no
 * Contact known.
 */
export function towardsDevice(session: GroupSession, dialog: SessionDialog, clientTag: string): ProxiedDialog | undefined {
  const fork = dialog.forks?.find((f) => f.clientTag === clientTag);
  const target = fork ? fork.clientTarget : clientTag === dialog.clientTag ? dialog.clientTarget : undefined;
  if (!target || !dialog.cfTag || !clientTag) return undefined;
  const towards = (dialog.initiator ?? "cf") === "cf" ? "callee" : "caller";
  return {
    callId: dialog.callId,
    localTag: dialog.cfTag,
    remoteTag: clientTag,
    localUri: `<${session.focusUri || dialog.remoteTarget}>`,
    remoteUri: `<${session.servedUser}>`,
    remoteTarget: target,
    routeSet: routeBeyondPf(fork ? fork.routeSet : dialog.routeSet, towards),
    localCSeq: fork ? dialog.inviteCseq : LAST_CSEQ - 1,
  };
}
