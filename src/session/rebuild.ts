// A group session record rebuilt from the served user's Message Store when
// the local state is gone: the session descriptor the PF wrote next to the
// deferred queue (src/store/session-descriptor.ts: the original SDP offer,
// group type, focus, IDs, participants) and the latest GSO in the group
// session's folder (focus and participants at the end, <status>removed</status>
// for a group terminated for good, 8.3.2.3 2.b.ii). Pure.
import type { GroupStateObject } from "../xml/gso.js";
import type { GroupSession } from "./group-session.js";

/** What the descriptor keeps of a record (src/store/session-descriptor.ts). */
export interface SessionDescriptor {
  version: 1;
  servedUser: string;
  conversationId: string;
  contributionId: string;
  focusUri: string;
  conferenceFactoryUri: string;
  groupType: "Open" | "Closed";
  subject: string | undefined;
  /** The invitation's Referred-By (DD-3), when it had one. */
  referredBy?: string;
  sdpOffer: string;
  participants: GroupSession["participants"];
  /** When it was written (ms). */
  writtenAt: number;
}

export function descriptorOf(s: GroupSession, now: number): SessionDescriptor {
  return {
    version: 1,
    servedUser: s.servedUser,
    conversationId: s.conversationId,
    contributionId: s.contributionId,
    focusUri: s.focusUri,
    conferenceFactoryUri: s.conferenceFactoryUri,
    groupType: s.groupType,
    subject: s.subject,
    ...(s.referredBy ? { referredBy: s.referredBy } : {}),
    sdpOffer: s.sdpOffer,
    participants: s.participants,
    writtenAt: now,
  };
}

/**
 * The record: deferred data pending (it was found in the queue), no dialog
 * (the PF's dialog state is gone with the local state: a client that sends
 * in the delivery session gets the group re-started, DD-13). Inactive unless
 * the latest GSO says the CF terminated the group.
 */
export function rebuildRecord(d: SessionDescriptor, latestGso: GroupStateObject | undefined, now: number): GroupSession {
  const newer = latestGso !== undefined && latestGso.timestamp.getTime() >= d.writtenAt;
  return {
    key: `rebuilt.${d.conversationId}.${d.contributionId}`,
    conversationId: d.conversationId,
    contributionId: d.contributionId,
    focusUri: (newer && latestGso.lastFocusSessionId) || d.focusUri,
    conferenceFactoryUri: d.conferenceFactoryUri,
    networkTag: "",
    servedUser: d.servedUser,
    groupType: d.groupType,
    subject: (newer ? latestGso.subject : undefined) ?? d.subject,
    ...(d.referredBy ? { referredBy: d.referredBy } : {}),
    icon: newer ? latestGso.icon : undefined,
    participants: newer && latestGso.participants.length > 0 ? latestGso.participants : d.participants,
    conferenceVersion: -1,
    sdpOffer: d.sdpOffer,
    lifecycle: newer && latestGso.status === "removed" ? "terminated" : "inactive",
    lifecycleAt: now,
    endCause: undefined,
    pendingDeferred: true,
    dialogs: [],
    createdAt: d.writtenAt,
    updatedAt: now,
  };
}
