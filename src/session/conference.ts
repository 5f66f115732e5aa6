// Pure: a conference-info document (RFC 4575) folded into a group session
// record. One set of rules for every NOTIFY of the conference event package
// the PF sees: the client's own subscription passing through Kamailio
// (observe.ts) and the PF's own subscription to the focus
// (src/delivery/conference-subscriptions.ts).
import { CpmError } from "../errors/catalogue.js";
import { header, type SipMessage } from "../sip/message.js";
import { bodyParts } from "../sip/multipart.js";
import { sameUser } from "../sip/public-identity.js";
import { type ConferenceInfo, parseConferenceInfo } from "../xml/conference-info.js";
import type { Participant } from "../xml/gso.js";
import type { GroupSession } from "./group-session.js";

export const CONFERENCE_INFO_TYPE = "application/conference-info+xml";

/** The conference-info of a NOTIFY's body (alone or in a multipart body), or why there is none usable. */
export function conferenceInfoOf(msg: SipMessage): { info: ConferenceInfo } | { note: string } {
  try {
    const part = bodyParts(header(msg, "content-type"), msg.body).find((p) => p.contentType === CONFERENCE_INFO_TYPE);
    if (!part) return { note: "NOTIFY without conference-info body" };
    return { info: parseConferenceInfo(part.body) };
  } catch (err) {
    return { note: `conference-info skipped: ${err instanceof CpmError ? err.detail : String(err)}` };
  }
}

export interface ConferenceFold {
  session: GroupSession;
  updated: boolean;
  notes: string[];
  /** The document removed the served user himself (state deleted, or every endpoint disconnected); `keepServedUser` kept him. */
  servedUserRemoved?: boolean;
}

/**
 * RFC 4575 4.1: a document whose version is not above the last one applied
 * is discarded; "full" replaces the participant list, "partial" updates it
 * user by user; a user whose state is "deleted" or whose every endpoint is
 * disconnected leaves the list. With `keepServedUser`, the served user's own
 * removal is not applied (reported in servedUserRemoved): on the PF's own
 * subscription the group session ends for him with the CF's BYE (8.3.2.3),
 * not with a NOTIFY. `lastVersion`: the version to compare with, when the
 * record's (the last applied from any subscription) is not the one: RFC
 * 4575 versions count per subscription.
 */
export function foldConferenceInfo(
  s: GroupSession,
  info: ConferenceInfo,
  now: number,
  opts: { keepServedUser?: boolean; lastVersion?: number } = {},
): ConferenceFold {
  const last = opts.lastVersion ?? s.conferenceVersion;
  if (info.version <= last) {
    return { session: s, updated: false, notes: [`conference-info version ${info.version} not newer than ${last}`] };
  }
  const notes: string[] = [];
  let servedUserRemoved = false;
  const isServedUser = (entity: string): boolean => s.servedUser !== "" && sameUser(entity, s.servedUser);
  // RFC 4575 4.1: "full" replaces, "partial" updates per user.
  const before = new Map<string, Participant>(s.participants.map((p) => [p.commAddr, p]));
  const byAddr = new Map<string, Participant>(info.state === "full" ? [] : before);
  for (const u of info.users) {
    if (u.state === "deleted" || u.disconnected) {
      if (isServedUser(u.entity)) {
        servedUserRemoved = true;
        if (opts.keepServedUser) continue;
      }
      byAddr.delete(u.entity);
      continue;
    }
    const old = byAddr.get(u.entity);
    byAddr.set(u.entity, { name: u.displayText || old?.name || "", commAddr: u.entity, role: u.role ?? old?.role });
  }
  if (opts.keepServedUser && servedUserRemoved) {
    // a full document without him: he stays as the record knew him
    const known = [...before.values()].find((p) => isServedUser(p.commAddr));
    if (known && ![...byAddr.keys()].some(isServedUser)) byAddr.set(known.commAddr, known);
    notes.push("conference-info removes the served user; kept until the CF's BYE (8.3.2.3)");
  }
  return {
    session: {
      ...s,
      participants: [...byAddr.values()],
      subject: info.subject ?? s.subject,
      icon: info.icon ?? s.icon,
      conferenceVersion: info.version,
      updatedAt: now,
    },
    updated: true,
    notes,
    ...(servedUserRemoved ? { servedUserRemoved } : {}),
  };
}
