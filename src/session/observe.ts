// Pure: folds one SIP message seen by Kamailio into the session it belongs to.
// Returns the new session (or undefined when the message is not about a CPM
// group session) and whether anything changed.
import { CpmError } from "../errors/catalogue.js";
import { cseqOfMessage } from "../sip/cseq.js";
import { header, headerValues, type SipMessage } from "../sip/message.js";
import { bodyParts } from "../sip/multipart.js";
import { parseNameAddr, tagOf, uriParams } from "../sip/name-addr.js";
import type { Participant } from "../xml/gso.js";
import { parseResourceLists } from "../xml/resource-lists.js";
import { conferenceInfoOf, foldConferenceInfo } from "./conference.js";
import { type GroupSession, type SessionDialog, withDialog } from "./group-session.js";

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
export function focusContact(msg: SipMessage): string {
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

/** +sip.instance of the Contact (RFC 5626 4.1), unquoted, or "". */
export function contactInstance(msg: SipMessage): string {
  const value = headerValues(msg, "contact")[0];
  if (!value) return "";
  try {
    return (parseNameAddr(value).params.get("+sip.instance") ?? "").replace(/^"|"$/g, "");
  } catch {
    return "";
  }
}

/** RFC 3892 Referred-By of the focus's invitation (the clients show who invited the user); kept from an earlier one otherwise. */
function referredByOf(msg: SipMessage, existing: GroupSession | undefined): { referredBy?: string } {
  const value = (focusContact(msg) ? header(msg, "referred-by") : undefined) ?? existing?.referredBy;
  return value ? { referredBy: value } : {};
}

/** The first Contact's URI, or "". */
function contactUri(msg: SipMessage): string {
  return uriOf(headerValues(msg, "contact")[0]);
}

/** The served user of an initial INVITE: the callee when the focus invites, the caller when the client does. */
export function servedUserOf(msg: SipMessage): string {
  return focusContact(msg) ? uriOf(header(msg, "to")) : uriOf(header(msg, "from"));
}

/** The dialog an initial INVITE creates, as the PF sees it passing. */
export function dialogOfInvite(msg: SipMessage): SessionDialog {
  const focus = focusContact(msg);
  return {
    callId: header(msg, "call-id") ?? "",
    cfTag: focus ? tagOf(header(msg, "from")) : "",
    clientTag: focus ? "" : tagOf(header(msg, "from")),
    remoteTarget: focus,
    routeSet: headerValues(msg, "record-route"),
    inviteCseq: cseqOfMessage(msg)?.seq ?? 0,
    clientInstance: "",
    initiator: focus ? "cf" : "client",
    clientTarget: focus ? "" : contactUri(msg),
    state: "early",
  };
}

/**
 * Folds `msg` into `existing`: the record of the dialog's Call-ID, or for an
 * initial INVITE the record of its (served user, Conversation-ID,
 * Contribution-ID) when the group session is known from an earlier dialog.
 * The lifecycle (src/procedures/lifecycle.ts) is not changed here.
 */
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
          // 8.3.2.9.1.2 b: the SDP offer of the original invitation (a re-join's own offer does not replace it)
          if (!existing?.sdpOffer) sdpOffer = part.body.toString("utf8");
        }
      }
    } catch (err) {
      notes.push(`INVITE body skipped: ${err instanceof CpmError ? err.detail : String(err)}`);
    }
    const dialog = dialogOfInvite(msg);
    const session: GroupSession = {
      key: callId,
      // Orange's CMS sets both IDs to the chat id when one is missing.
      conversationId: conversationId || contributionId,
      contributionId: contributionId || conversationId,
      focusUri: focus || existing?.focusUri || "",
      // client-initiated: the Request-URI is the conference factory (or the focus, for a re-join)
      conferenceFactoryUri: focus ? (existing?.conferenceFactoryUri ?? "") : existing?.conferenceFactoryUri || msg.requestUri,
      networkTag: dialog.cfTag,
      servedUser: existing?.servedUser || servedUserOf(msg),
      groupType: groupTypeOf(msg),
      subject: header(msg, "subject") ?? existing?.subject,
      ...referredByOf(msg, existing),
      icon: existing?.icon,
      participants,
      conferenceVersion: existing?.conferenceVersion ?? -1,
      sdpOffer,
      lifecycle: existing?.lifecycle ?? "active",
      lifecycleAt: existing?.lifecycleAt ?? now,
      endCause: existing?.endCause,
      pendingDeferred: existing?.pendingDeferred ?? false,
      dialogs: withDialog(existing?.dialogs ?? [], dialog),
      createdAt: existing?.createdAt ?? now,
      updatedAt: now,
    };
    return { session, updated: true, notes };
  }

  if (!existing) return { session: undefined, updated: false, notes };

  if (msg.kind === "response" && msg.statusCode >= 200 && msg.statusCode < 300 && cseqOfMessage(msg)?.method === "INVITE") {
    const focus = focusContact(msg);
    const toTag = tagOf(header(msg, "to"));
    const dialogs = existing.dialogs.map((d): SessionDialog => {
      if (d.callId !== callId) return d;
      const rr = headerValues(msg, "record-route");
      // the callee's tag: the client's (CF-initiated) or the CF's (client-initiated, Contact ;isfocus)
      return focus
        ? { ...d, cfTag: toTag, remoteTarget: focus, routeSet: rr.length ? rr : d.routeSet, state: "confirmed" }
        : {
            ...d,
            clientTag: toTag,
            clientInstance: contactInstance(msg) || d.clientInstance,
            clientTarget: contactUri(msg) || d.clientTarget,
            routeSet: rr.length ? rr : d.routeSet,
            state: "confirmed",
          };
    });
    const same = dialogs.every((d, i) => JSON.stringify(d) === JSON.stringify(existing.dialogs[i]));
    if (!focus || existing.focusUri === focus) {
      if (same) return { session: existing, updated: false, notes };
      return { session: { ...existing, dialogs, updatedAt: now }, updated: true, notes };
    }
    // The callee is the focus: the CF's side is the To side of the dialog.
    return {
      session: { ...existing, dialogs, focusUri: focus, networkTag: toTag, updatedAt: now },
      updated: true,
      notes,
    };
  }

  if (msg.kind === "request" && msg.method === "NOTIFY" && (header(msg, "event") ?? "").toLowerCase().startsWith("conference")) {
    const body = conferenceInfoOf(msg);
    if ("note" in body) return { session: existing, updated: false, notes: [body.note] };
    const folded = foldConferenceInfo(existing, body.info, now);
    return { session: folded.session, updated: folded.updated, notes: folded.notes };
  }

  return { session: existing, updated: false, notes };
}
