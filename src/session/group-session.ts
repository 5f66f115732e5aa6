// The group session record: what the PF knows of one CPM group session of one
// served user, for as long as the group session can come back (a long-lived
// group chat is re-joined or re-started months later). One record per
// (served user, Conversation-ID, Contribution-ID); its SIP dialogs are
// children, indexed by Call-ID (src/session/registry.ts). Built from the
// INVITE (RFC 5366 resource-list, Conversation-ID, Contribution-ID, Subject,
// the focus Contact with `isfocus`, RFC 4579 3.4), its 2xx, and the focus's
// conference-event NOTIFYs (RFC 4575); its lifecycle is written by
// src/procedures/lifecycle.ts.
import { normaliseIdentity } from "../sip/public-identity.js";
import type { Participant } from "../xml/gso.js";

/**
 * active: a dialog towards the CF is up and the client is there;
 * client-absent: the CF dialog is up, the client leg is gone (deferred data);
 * inactive: the CF ended it with 480 (inactivity) or a SIP/IP core cause: re-startable (8.3.2.3 2.b.iii / other);
 * terminated: the CF ended it for good (410, 8.3.2.3 2.b.ii);
 * left: ended with 200 / no Reason (2.a, 2.b.i), or the client ended it.
 */
export type Lifecycle = "active" | "client-absent" | "inactive" | "terminated" | "left";

/** A device of the served user seen while the group session had data pending. */
export interface SeenDevice {
  /** Its IMAP keyword in the deferred queue (a hash of its +sip.instance). */
  keyword: string;
  /** When it was last seen (ms). */
  at: number;
  /**
   * DD-10: every queued item up to this UID (of this UIDVALIDITY) was
   * confirmed by the device (MSRP 200) in a delivery, though its mark in the
   * store may not be there yet: a delivery that takes over after a crash
   * marks them first and starts behind them. Absent: nothing confirmed.
   */
  deliveredThrough?: DeliveredThrough;
  /**
   * A registration's deferred delivery of this group session to the device
   * was under way: set when it began, cleared when it ended. A PF that finds
   * it set did not see the end (its process was killed) and starts the
   * delivery again (delivery.resumeInterrupted). Absent: none.
   */
  delivering?: DeliveringTo;
}

/** Where an interrupted delivery goes again: the device's registered contact. */
export interface DeliveringTo {
  contact: string;
  /** Its +sip.instance, when it registered with one. */
  instanceId?: string;
  /** When the delivery began (ms). */
  since: number;
}

/** A position in a group session's deferred queue (RFC 9051 2.3.1.1: a UID means something with its UIDVALIDITY only). */
export interface DeliveredThrough {
  uidValidity: string;
  uid: number;
}

/**
 * BYE-B7: a further device of the served user that answered the CF's forked
 * INVITE too. Kamailio gave the CF only the first device's 2xx; the PF's UA
 * ACKed this one and holds its dialog (same Call-ID and CF tag, this To tag).
 */
export interface ForkedDevice {
  /** Its To tag. */
  clientTag: string;
  /** Its Contact URI: the target of the UA's requests towards it. */
  clientTarget: string;
  /** +sip.instance of that Contact, when given. */
  clientInstance: string;
  /** Record-Route of its 2xx, in order. */
  routeSet: string[];
  state: "confirmed" | "terminated";
}

/** One SIP dialog of the group session, as the PF (record-routing it) saw it. */
export interface SessionDialog {
  callId: string;
  /** Tag of the Controlling Function's side ("" until known). */
  cfTag: string;
  /** Tag of the served user's client side ("" until the 2xx). */
  clientTag: string;
  /** The CF's target for in-dialog requests (its Contact, RFC 3261 12.1). */
  remoteTarget: string;
  /** Record-Route values as seen on the INVITE (and its 2xx), in order. */
  routeSet: string[];
  /** CSeq number of the INVITE. */
  inviteCseq: number;
  /** The highest CSeq of the CF's in-dialog requests the PF answered for the client (RFC 3261 12.2.2: a lower one is out of order). Absent: the INVITE's. */
  cfCseq?: number;
  /** +sip.instance of the client's Contact in the 2xx, when given. */
  clientInstance: string;
  /** Who sent the dialog's INVITE: the CF (it invited the served user), the client, or the PF's UA for the user (a re-start, DD-13). Absent in older records: the CF. */
  initiator?: "cf" | "client" | "pf";
  /** The client's Contact URI (its 2xx, or its INVITE): the target of the PF's requests towards it. */
  clientTarget?: string;
  state: "early" | "confirmed" | "terminated";
  /** BYE-B7: the further devices of a forked INVITE, whose dialogs the PF's UA holds. Absent: none. */
  forks?: ForkedDevice[];
  /** BYE-B7: the first device (clientTag) left while further devices stayed; the CF's dialog goes on for them. */
  clientLeft?: boolean;
}

/** BYE-B7: the served user's devices still in `dialog` (the first one unless it left, and the further ones), by To tag. */
export function devicesIn(dialog: SessionDialog): string[] {
  const forks = (dialog.forks ?? []).filter((f) => f.state === "confirmed").map((f) => f.clientTag);
  return dialog.clientLeft || !dialog.clientTag ? forks : [dialog.clientTag, ...forks];
}

/** BYE-B7: whether the PF's UA holds dialogs of further devices in `dialog` (its BYEs go to the UA). */
export function holdsForks(dialog: SessionDialog | undefined): boolean {
  return dialog?.forks?.some((f) => f.state === "confirmed") === true;
}

export interface GroupSession {
  /** Call-ID of the group session's current dialog (the media plane's and HandleBye's session key). */
  key: string;
  conversationId: string;
  contributionId: string;
  /** The focus URI (Contact with `isfocus`): the GSO's lastfocussessionid. */
  focusUri: string;
  /** The conference factory URI, when the client created the group (Request-URI of its INVITE). */
  conferenceFactoryUri: string;
  /** Tag of the Controlling Function's side of the current dialog: a BYE with this From-tag comes from the network. */
  networkTag: string;
  /** The served user's address (mailbox owner; GSO `To`). */
  servedUser: string;
  groupType: "Open" | "Closed";
  subject: string | undefined;
  /** Referred-By of the CF's invitation (RFC 3892: who invited the served user), as received; DD-3 repeats it. */
  referredBy?: string;
  icon: string | undefined;
  /** Latest list of known Participants (8.3.2.3 2.b.ii). */
  participants: Participant[];
  /** Last conference-info version applied (RFC 4575 4.1). */
  conferenceVersion: number;
  /** The SDP offer of the original invitation (8.3.2.9.1.2 b). */
  sdpOffer: string;
  lifecycle: Lifecycle;
  /** When the lifecycle last changed (ms). */
  lifecycleAt: number;
  /** reason-cause of the BYE that ended the group session, when one did. */
  endCause: number | undefined;
  /** Deferred data may be waiting in the served user's queue: the record is never purged then. */
  pendingDeferred: boolean;
  dialogs: SessionDialog[];
  /**
   * DD-1 per device: the served user's devices seen registering (or
   * re-joining) while data was pending, by their queue keyword
   * (src/procedures/device-view.ts); cleared when the queue settles. Absent
   * in older records: none.
   */
  devices?: SeenDevice[];
  createdAt: number;
  updatedAt: number;
}

/** The group session is going on at the CF (DD-12 joins it, DD-13 re-starts it otherwise). */
export function isGroupActive(s: Pick<GroupSession, "lifecycle">): boolean {
  return s.lifecycle === "active" || s.lifecycle === "client-absent";
}

/** A served user's address as the record key compares it (src/sip/public-identity.ts: tel ≡ sip;user=phone, host case-insensitive). */
export function userKey(uri: string): string {
  return normaliseIdentity(uri) ?? uri.trim();
}

export const RECORD_ID_SEPARATOR = "\u001f";

/** The record's identity: (served user, Conversation-ID, Contribution-ID). */
export function recordId(servedUser: string, conversationId: string, contributionId: string): string {
  return [userKey(servedUser), conversationId, contributionId].join(RECORD_ID_SEPARATOR);
}

export function recordIdOf(s: Pick<GroupSession, "servedUser" | "conversationId" | "contributionId">): string {
  return recordId(s.servedUser, s.conversationId, s.contributionId);
}

/**
 * Ended dialogs a record keeps (the newest ones): enough to recognise a
 * retransmitted or replayed BYE of a recent dialog, while a group re-joined
 * for months does not grow its record (re-written whole on each event).
 */
export const MAX_ENDED_DIALOGS = 8;

/** The record's dialogs with `dialog` added (replacing one of the same Call-ID), the oldest ended ones beyond MAX_ENDED_DIALOGS dropped. */
export function withDialog(dialogs: readonly SessionDialog[], dialog: SessionDialog): SessionDialog[] {
  const out = [...dialogs.filter((d) => d.callId !== dialog.callId), dialog];
  let ended = out.filter((d) => d.state === "terminated").length;
  return out.filter((d) => d.state !== "terminated" || ended-- <= MAX_ENDED_DIALOGS);
}

/** The dialog of `callId`, if it is one of the record's. */
export function dialogOf(s: GroupSession, callId: string): SessionDialog | undefined {
  return s.dialogs.find((d) => d.callId === callId);
}
