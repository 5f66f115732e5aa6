// Pure: folds one SIP message seen by Kamailio into the session it belongs to.
// Returns the new session (or undefined when the message is not about a CPM
// group session) and whether anything changed.
import { CpmError } from "../errors/catalogue.js";
import { header, headerValues, type SipMessage } from "../sip/message.js";
import { bodyParts } from "../sip/multipart.js";
import { parseNameAddr, tagOf, uriParams } from "../sip/name-addr.js";
import { parseConferenceInfo } from "../xml/conference-info.js";
import type { Participant } from "../xml/gso.js";
import { parseResourceLists } from "../xml/resource-lists.js";
import type { GroupSession } from "./group-session.js";

export interface Observation {
  session: GroupSession | undefined;
  updated: boolean;
  /** Problems worth a log line (malformed bodies that were skipped). */
  notes: string[];
}

function uriOf(value: string | undefined): string {
  if (!value) return "";
  try {
    return parseNameAddr(value).uri;
  } catch {
    return "";
  }
}

/** The focus URI when the Contact carries `isfocus` (RFC 4579 3.4), else "". */
function focusContact(msg: SipMessage): string {
  for (const value of headerValues(msg, "contact")) {
    try {
      const c = parseNameAddr(value);
      if (c.params.has("isfocus") || uriParams(c.uri).has("isfocus")) return c.uri;
    } catch {
      // a malformed Contact is not a focus
    }
  }
  return "";
}

/** Closed group chat when a closed-group feature tag is present (RCS), else Open. */
function groupTypeOf(msg: SipMessage): "Open" | "Closed" {
  const tags = [...headerValues(msg, "contact"), ...headerValues(msg, "accept-contact")].join(" ").toLowerCase();
  return tags.includes("closedgroupchat") ? "Closed" : "Open";
}

function cseqMethod(msg: SipMessage): string {
  return (header(msg, "cseq") ?? "").trim().split(/\s+/)[1]?.toUpperCase() ?? "";
}

export function observe(existing: GroupSession | undefined, msg: SipMessage, now: number): Observation {
  const notes: string[] = [];
  const callId = header(msg, "call-id") ?? "";
  if (!callId) return { session: existing, updated: false, notes: ["no Call-ID"] };

  if (msg.kind === "request" && msg.method === "INVITE" && !tagOf(header(msg, "to"))) {
    const conversationId = header(msg, "conversation-id") ?? "";
    const contributionId = header(msg, "contribution-id") ?? "";
    if (!conversationId && !contributionId) return { session: existing, updated: false, notes };
    const focus = focusContact(msg);
    let participants: Participant[] = existing?.participants ?? [];
    let sdpOffer = existing?.sdpOffer ?? "";
    try {
      for (const part of bodyParts(header(msg, "content-type"), msg.body)) {
        if (part.contentType === "application/resource-lists+xml") {
          participants = parseResourceLists(part.body).map((e) => ({ name: e.displayName, commAddr: e.uri }));
        } else if (part.contentType === "application/sdp") {
          sdpOffer = part.body.toString("utf8");
        }
      }
    } catch (err) {
      notes.push(`INVITE body skipped: ${err instanceof CpmError ? err.detail : String(err)}`);
    }
    const session: GroupSession = {
      key: callId,
      // Orange's CMS sets both IDs to the chat id when one is missing.
      conversationId: conversationId || contributionId,
      contributionId: contributionId || conversationId,
      focusUri: focus || existing?.focusUri || "",
      networkTag: focus ? tagOf(header(msg, "from")) : existing?.networkTag || "",
      servedUser: focus ? uriOf(header(msg, "to")) : uriOf(header(msg, "from")),
      groupType: groupTypeOf(msg),
      subject: header(msg, "subject") ?? existing?.subject,
      icon: existing?.icon,
      participants,
      conferenceVersion: existing?.conferenceVersion ?? -1,
      sdpOffer,
      state: "active",
      createdAt: existing?.createdAt ?? now,
      updatedAt: now,
    };
    return { session, updated: true, notes };
  }

  if (!existing) return { session: undefined, updated: false, notes };

  if (msg.kind === "response" && msg.statusCode >= 200 && msg.statusCode < 300 && cseqMethod(msg) === "INVITE") {
    const focus = focusContact(msg);
    if (!focus || existing.focusUri === focus) return { session: existing, updated: false, notes };
    // The callee is the focus: the CF's side is the To side of the dialog.
    return {
      session: { ...existing, focusUri: focus, networkTag: tagOf(header(msg, "to")), updatedAt: now },
      updated: true,
      notes,
    };
  }

  if (msg.kind === "request" && msg.method === "NOTIFY" && (header(msg, "event") ?? "").toLowerCase().startsWith("conference")) {
    let info: ReturnType<typeof parseConferenceInfo>;
    try {
      const part = bodyParts(header(msg, "content-type"), msg.body).find((p) => p.contentType === "application/conference-info+xml");
      if (!part) return { session: existing, updated: false, notes: ["NOTIFY without conference-info body"] };
      info = parseConferenceInfo(part.body);
    } catch (err) {
      return {
        session: existing,
        updated: false,
        notes: [`conference-info skipped: ${err instanceof CpmError ? err.detail : String(err)}`],
      };
    }
    if (info.version <= existing.conferenceVersion) {
      return {
        session: existing,
        updated: false,
        notes: [`conference-info version ${info.version} not newer than ${existing.conferenceVersion}`],
      };
    }
    return { session: applyConferenceInfo(existing, info, now), updated: true, notes };
  }

  return { session: existing, updated: false, notes };
}

function applyConferenceInfo(s: GroupSession, info: ReturnType<typeof parseConferenceInfo>, now: number): GroupSession {
  // RFC 4575 4.1: "full" replaces, "partial" updates per user.
  const byAddr = new Map<string, Participant>(info.state === "full" ? [] : s.participants.map((p) => [p.commAddr, p]));
  for (const u of info.users) {
    if (u.state === "deleted" || u.disconnected) {
      byAddr.delete(u.entity);
      continue;
    }
    const old = byAddr.get(u.entity);
    byAddr.set(u.entity, { name: u.displayText || old?.name || "", commAddr: u.entity, role: u.role ?? old?.role });
  }
  return {
    ...s,
    participants: [...byAddr.values()],
    subject: info.subject ?? s.subject,
    icon: info.icon ?? s.icon,
    conferenceVersion: info.version,
    updatedAt: now,
  };
}
