// The client-facing delivery session that 8.3.2.9.1.2 (deferred-delivery.ts,
// after the client's 200 OK) and 8.3.2.9.1.3 (rejoin-delivery.ts, after the
// PF accepted the re-join) have in common: MSRP up, the deferred items read
// and sent in order, the restart of an inactive group session, the client's
// BYE. Pure: state + event in, state + actions out. The two procedures differ
// only in what happens once the queue is drained (`onDrained`).

import type { Config } from "../config/config.js";
import { CpmError } from "../errors/catalogue.js";
import { type GroupSession, isGroupActive, userKey } from "../session/group-session.js";
import { formatReason, parseReasonHeaders } from "../sip/reason.js";
import type { DeferredHandle } from "../store/deferred-queue.js";
import { type GroupStateObject, GSO_CONTENT_TYPE, serializeGso } from "../xml/gso.js";
import type { ListEntry } from "../xml/resource-lists.js";
import type { DeliveryClaim, DeliveryOwner } from "./delivery-guard.js";
import { emptyTracker, type ItemTracker, inFlightCount, type PendingItem, readCursor, settle, takeBatch } from "./delivery-items.js";

/** delivery.* plus the pf switch for subject/icon in GSOs. */
/** Reason of a delivery session the PF ends normally (8.3.2.3 2.a: cause 200). */
export const CALL_COMPLETED = formatReason({ protocol: "SIP", cause: 200, text: "Call completed" });

export type DeliveryPolicy = Config["delivery"] &
  Pick<Config["pf"], "groupSessionDataManagement"> & {
    /** The PF's SIP UA as a URI (the delivery INVITE's Contact with delivery.contact "pf"). */
    uaUri?: string;
  };

/**
 * Items asked from the queue per read (DeferredQueue.read limit). The next
 * read goes out while the previous batch is still being delivered (at most
 * one batch ahead), so the queue I/O stays off the wire's critical path.
 */
export const READ_BATCH = 250;
/**
 * Confirmed items are removed from the queue in sets (one UID EXPUNGE, RFC
 * 4315), at the latest when this many wait or the batch read is settled. The
 * record keeps how far the device confirmed with each set (delivered-through.ts,
 * ahead of the store's marks): a crash re-delivers about this many and the
 * MSRP window (at-least-once, the MSRP Message-ID and imdn.Message-ID
 * unchanged so the client can tell).
 */
export const ACK_BATCH = 32;

/** The group session's queue, as DeferredQueue.folderOf / read / discard take it. */
export interface QueueRef {
  sessionKey: string;
  servedUser: string;
  conversationId: string;
  contributionId: string;
  focus: string;
  /**
   * The device this delivery is for (its keyword, device-view.ts): its reads
   * skip what it already has, its confirmations and discards (DD-8, DD-14)
   * are its own; absent: the queue as a whole.
   */
  device?: string;
}

/** The delivery INVITE (DD-2..DD-6), rendered: the SIP adapter sends it as is (adding Via, From-tag, Call-ID, CSeq). */
export interface DeliveryInvite {
  requestUri: string;
  /** Routes pre-loaded after Kamailio's (delivery.terminatingRoute), nearest first. */
  route: string[];
  /** In order; Content-Type included, Content-Length left to the adapter. */
  headers: [string, string][];
  body: string;
  /** The SDP part alone (DD-6), for the media plane to anchor. */
  sdp: string;
}

/** A SEND the client made in the delivery session (chat message, IMDN or isComposing). */
export interface ClientMedia {
  msrpMessageId: string;
  kind: "message" | "imdn" | "isComposing";
  /** The SEND's Failure-Report header (RFC 4975 7.1.2; absent = "yes"). */
  failureReport: "yes" | "no" | "partial";
  /** Its CPIM asked for a negative delivery notification (RFC 5438 6.2 imdn.Disposition-Notification). */
  negativeDelivery?: boolean;
}

/**
 * DD-13 / RJ-3: the re-start of the long-lived group session. First the
 * 8.2.2.7 re-join INVITE to the focus (lastfocussessionid); when the focus
 * is gone, a new INVITE to the conference factory with the participants
 * (RFC 5366 recipient list).
 */
export interface RestartRequest {
  sessionKey: string;
  /** Which INVITE this is: to the focus, or (after the focus answered 404 / 410 / 403) to the conference factory. */
  via: "focus" | "factory";
  /** The group session's focus (lastfocussessionid): the Request-URI of the "focus" INVITE. */
  focusUri: string;
  /** The conference factory URI: the Request-URI of the "factory" INVITE; "" = none known, no factory step. */
  factoryUri: string;
  conversationId: string;
  contributionId: string;
  subject: string | undefined;
  /** The known participants, the served user left out: whom the factory invites (RFC 5366 4). */
  participants: ListEntry[];
}

export type DeliveryAction =
  /** DD-2..DD-6: the delivery INVITE, rendered (deferred-delivery.ts). */
  | { kind: "sendInvite"; invite: DeliveryInvite }
  /** CANCEL the delivery INVITE (superseded by a re-join before its final answer). */
  | { kind: "cancelInvite" }
  /**
   * DD-1: the INVITE under way is dropped (the device registered another
   * contact): CANCELled (RFC 3261 9.1), and a 2xx it still gets is ACKed and
   * BYEd; its answer is no event of the delivery.
   */
  | { kind: "abandonInvite" }
  /** DD-7 / DD-10: ACK the client's 200 OK (8.3.2.1, B2BUA). */
  | { kind: "sendAck" }
  /** Read the oldest items of the session's queue (DeferredQueue.read), answered by `itemsRead`. */
  /** `after`: only items above that UID of that folder incarnation (everything at or below it was taken). */
  | { kind: "readDeferred"; queue: QueueRef; limit: number; after?: { afterUid: number; uidValidity: string } }
  /** DD-10 / RJ-2: MSRP SEND of each item, one after another in this order, on the delivery session. */
  | { kind: "deliverInOrder"; items: PendingItem[] }
  /**
   * Delivered (or deliberately dropped) items: marked as the device's
   * (DeferredQueue.mark), removed from the queue once every member device
   * has them (device-view.ts retirable, DeferredQueue.ack).
   */
  | { kind: "ackDeferred"; handles: DeferredHandle[] }
  /** DD-11 / RJ-3: a GSO in an MSRP SEND with the GSO MIME type. */
  | { kind: "sendGso"; contentType: typeof GSO_CONTENT_TYPE; body: string; gso: GroupStateObject }
  /**
   * DD-8 / DD-14: discard the session's deferred messages and IMDNs for
   * `queue.device`: every item marked as that device's (it never gets them),
   * removed once the other members have them too.
   */
  | { kind: "discardDeferred"; queue: QueueRef }
  /** DD-8 ii.a: BYE to the conference focus. */
  | { kind: "sendByeToFocus"; sessionKey: string; reason: string }
  /** DD-8 ii.a: release the group session's media (MSRP) resources. */
  | { kind: "releaseMedia"; sessionKey: string }
  /** DD-8 ii.b / DD-12 MAY: SUBSCRIBE with Expires: 0 to the focus's conference event package (RFC 4575). */
  | { kind: "unsubscribeConference"; sessionKey: string; focusUri: string }
  /** DD-9: run `retryTimer` after delayMs. */
  | { kind: "scheduleRetry"; attempt: number; delayMs: number }
  /** DD-12: join the delivery session with the on-going conference (live relay both ways from now on). */
  | { kind: "rejoinConference"; sessionKey: string }
  /** BYE-B7: this device's joined delivery session leaves the conference; the user's other joined devices stay. */
  | { kind: "leaveConference"; sessionKey: string }
  /** DD-13 / RJ-3: INVITE towards the Controlling Function (8.2.2.7), answered by `restartResponse`. */
  | { kind: "restartGroupSession"; restart: RestartRequest }
  /** RJ-5, and after a successful restart: join the client's dialog with the group session dialog towards the CF. */
  | { kind: "joinGroupDialog"; sessionKey: string }
  /** Client SENDs held until the join go to the focus, in this order. */
  | { kind: "forwardToFocus"; msrpMessageIds: string[] }
  /** RJ-4: MSRP REPORT with an error Status (RFC 4975 7.1.2) for a client SEND that cannot reach the group. */
  | { kind: "msrpFailureReport"; msrpMessageId: string; status: number }
  /** RJ-4: the negative delivery IMDN (RFC 5438 7.2.1.1 "failed") the client's message asked for, sent to the client. */
  | { kind: "negativeDeliveryImdn"; msrpMessageId: string }
  /** RJ-3: BYE to the client on the delivery / re-join dialog. */
  | { kind: "byeToClient"; reason: string }
  /** DD-14: the client's BYE, handled as 8.2.2.3 (answer it; towards the CF too when joined). */
  | { kind: "handleAsBye"; reason: string; towardsFocus: boolean }
  /** Tell the registration machine of this session that a re-join took over (RJ-1). */
  | { kind: "supersedeRegistrationDelivery"; key: string }
  /** RJ-1: accept the client's re-join INVITE (200 OK, PF-anchored SDP answer). */
  | { kind: "acceptRejoin"; clientCallId: string }
  /** Not a re-join the PF delivers for: handle it as a plain 8.2.2.7 re-join. */
  | { kind: "relayRejoin"; clientCallId: string };

/** Events of the delivery session, common to both procedures. */
export type SessionEvent =
  | { type: "msrpUp" }
  | { type: "itemsRead"; items: PendingItem[]; at: Date }
  /** The queue could not be read (store unavailable). */
  | { type: "readFailed"; reason: string }
  | { type: "itemDelivered"; handle: DeferredHandle }
  /** MSRP error response (or 408 for no response, RFC 4975 7.1.1) to one item's SEND. */
  | { type: "itemFailed"; handle: DeferredHandle; status: number }
  | { type: "clientSentMedia"; media: ClientMedia }
  /**
   * The final (or provisional) answer to the restartGroupSession INVITE of
   * `via`; with a 2xx, `focusUri` is the focus its Contact names (;isfocus,
   * RFC 4579 3.4) when it names one, and `at` when it came (the timestamp of
   * a GSO naming a new focus; the executor always gives it).
   */
  | { type: "restartResponse"; via: RestartRequest["via"]; status: number; reasonPhrase?: string; focusUri?: string; at?: Date }
  /**
   * The client's BYE on the delivery session: every Reason header line as
   * received; `othersJoined`: another device of the served user is joined
   * with the same group session (its delivery session, DD-12).
   */
  | { type: "clientBye"; reasons: string[]; othersJoined?: boolean }
  /**
   * 8.3.2.3: the CF ended the group session (a network BYE), decided with
   * `reason` for the served user's clients; `session` is the record after it.
   */
  | { type: "groupEnded"; session: GroupSession; reason: string }
  /** No executor took `action` (or it failed before anything went out): the procedure decides what follows. */
  | { type: "actionUnavailable"; action: DeliveryAction; reason: string };

export type SessionPhase = "connecting" | "delivering" | "delivered" | "ended";

export interface DeliverySession {
  /** deliveryKey(servedUser, session.key, device). */
  key: string;
  owner: DeliveryOwner;
  servedUser: string;
  /** The device delivered to: its keyword in the queue (device-view.ts). */
  device: string;
  /** Latest snapshot of the group session. */
  session: GroupSession;
  phase: SessionPhase;
  items: ItemTracker;
  /** A readDeferred is outstanding. */
  reading: boolean;
  /** The last read found nothing new: the next one waits until nothing is in flight. */
  exhausted: boolean;
  /** The delivery session is joined with the group session dialog towards the CF. */
  joined: boolean;
  restart: "none" | "pending" | "done" | "failed";
  /** The re-start INVITE waiting for its answer (restart "pending"). */
  restarting?: RestartRequest;
  /** Client SENDs waiting for the join (or for the restart's answer). */
  held: ClientMedia[];
  /** Items the client confirmed (or refused for good) not removed from the queue yet (ACK_BATCH). */
  toAck: DeferredHandle[];
  /** RJ-3: the re-start failed before the queue was drained: the BYE (this Reason) once what is pending was delivered. */
  endAfterDrain?: { reason: string; status: number };
}

export interface Step<S> {
  state: S;
  actions: DeliveryAction[];
  notes: string[];
  /** What the guard should hold for this session now (undefined: release). */
  claim: DeliveryClaim | undefined;
  /** Bad input (unknown status code, …): the state is unchanged. */
  error?: CpmError;
}

/** The part that differs: what to do once the queue is drained. */
export type OnDrained = (s: DeliverySession, policy: DeliveryPolicy, at: Date) => { session: DeliverySession; actions: DeliveryAction[] };

export function queueRef(servedUser: string, session: GroupSession, device?: string): QueueRef {
  return {
    sessionKey: session.key,
    servedUser,
    conversationId: session.conversationId,
    contributionId: session.contributionId,
    focus: session.focusUri,
    ...(device !== undefined ? { device } : {}),
  };
}

export function newDeliverySession(
  key: string,
  owner: DeliveryOwner,
  servedUser: string,
  session: GroupSession,
  device: string,
): DeliverySession {
  return {
    key,
    owner,
    servedUser,
    device,
    session,
    phase: "connecting",
    items: emptyTracker,
    reading: false,
    exhausted: false,
    joined: false,
    restart: "none",
    held: [],
    toAck: [],
  };
}

/** The ackDeferred for what waits to be removed (none when nothing does). */
function ackPending(s: DeliverySession): DeliveryAction[] {
  return s.toAck.length ? [{ kind: "ackDeferred", handles: s.toAck }] : [];
}

/** The group session is still going on at the CF (DD-8 ii, DD-12 vs DD-13). */
export function isActive(session: GroupSession): boolean {
  return isGroupActive(session);
}

/** A SIP response status code (RFC 3261 7.2: 100-699); anything else is bad input. */
export function checkStatus(status: number): CpmError | undefined {
  if (Number.isInteger(status) && status >= 100 && status <= 699) return undefined;
  return new CpmError("CPM_ERR_BAD_REQUEST", `status code ${status}: not a SIP status (100-699)`);
}

/**
 * DD-13 / RJ-3: the first re-start INVITE, to the focus. The factory it
 * falls back on: the one the client created the group through (the record's
 * conferenceFactoryUri), else the configured delivery.conferenceFactoryUri.
 */
export function restartRequest(session: GroupSession, policy: Pick<DeliveryPolicy, "conferenceFactoryUri">): RestartRequest {
  const self = userKey(session.servedUser);
  return {
    sessionKey: session.key,
    via: "focus",
    focusUri: session.focusUri,
    factoryUri: session.conferenceFactoryUri || policy.conferenceFactoryUri,
    conversationId: session.conversationId,
    contributionId: session.contributionId,
    subject: session.subject,
    participants: participantEntries(session).filter((p) => userKey(p.uri) !== self),
  };
}

/**
 * The focus's answers that say it is gone, so the long-lived group session
 * is re-started through the conference factory instead: 404 (no such
 * conference, RFC 3261 21.4.5) and 410 (gone for good, 21.4.10), and 403, which
 * RJ-3 names with 404 as the focus's refusal of a re-start. Anything else
 * (busy, server error, timeout) says nothing of the group being gone: RJ-3
 * at once.
 */
export const FOCUS_GONE: ReadonlySet<number> = new Set([404, 410, 403]);

/** The second attempt after the focus's `status`, or undefined when there is none. */
function factoryAttempt(req: RestartRequest | undefined, status: number): RestartRequest | undefined {
  if (!req || req.via !== "focus" || !FOCUS_GONE.has(status) || !req.factoryUri) return undefined;
  return { ...req, via: "factory" };
}

export function participantEntries(session: GroupSession): ListEntry[] {
  return session.participants.map((p) => ({ uri: p.commAddr, displayName: p.name }));
}

/** A GSO with the session's latest participants, in an MSRP SEND (5.2.8); undefined without a focus URI. */
export function gsoAction(session: GroupSession, at: Date, policy: { groupSessionDataManagement: boolean }): DeliveryAction | undefined {
  if (!session.focusUri) return undefined; // clients reject a GSO without lastfocussessionid
  const gso: GroupStateObject = {
    timestamp: at,
    lastFocusSessionId: session.focusUri,
    groupType: session.groupType,
    contributionId: session.contributionId,
    participants: session.participants,
  };
  if (policy.groupSessionDataManagement) {
    gso.subject = session.subject;
    gso.icon = session.icon;
  }
  return { kind: "sendGso", contentType: GSO_CONTENT_TYPE, body: serializeGso(gso), gso };
}

/**
 * RFC 4975 7.1.2 status of the failure REPORT for a client SEND that could
 * not go on to the group (RJ-4: "not delivered downstream"; the spec names no
 * code, and 481 would say the delivery session itself does not exist): 408
 * (the downstream hop did not take it in time, RFC 4975 10) when the CF did
 * not answer, timed out or was unavailable (408, 5xx); 403 (not allowed
 * downstream) when it refused (any other 4xx, 6xx).
 */
export function msrpStatusForRestartFailure(sipStatus: number): number {
  return sipStatus === 408 || (sipStatus >= 500 && sipStatus < 600) ? 408 : 403;
}

/** RJ-4: what the client gets for each message that cannot go on: a failure REPORT where its SEND allowed one, the negative IMDN where its CPIM asked. */
function failureReports(held: readonly ClientMedia[], sipStatus: number): DeliveryAction[] {
  const status = msrpStatusForRestartFailure(sipStatus);
  return held.flatMap((m): DeliveryAction[] => [
    // Failure-Report: no → no REPORT (RFC 4975 7.1.2); partial and yes → REPORT on failure
    ...(m.failureReport !== "no" ? [{ kind: "msrpFailureReport", msrpMessageId: m.msrpMessageId, status } as const] : []),
    ...(m.negativeDelivery ? [{ kind: "negativeDeliveryImdn", msrpMessageId: m.msrpMessageId } as const] : []),
  ]);
}

/** The next read of the queue: above everything taken. */
function readNext(s: DeliverySession): DeliveryAction {
  const after = readCursor(s.items);
  return { kind: "readDeferred", queue: queueRef(s.servedUser, s.session, s.device), limit: READ_BATCH, ...(after ? { after } : {}) };
}

/** The claim a live session holds. */
function claimOf(s: DeliverySession): DeliveryClaim | undefined {
  if (s.phase === "ended") return undefined;
  return { owner: s.owner, status: s.phase === "delivered" ? "connected" : "delivering" };
}

function step(s: DeliverySession, actions: DeliveryAction[], notes: string[], error?: CpmError): Step<DeliverySession> {
  const out: Step<DeliverySession> = { state: s, actions, notes, claim: claimOf(s) };
  if (error) out.error = error;
  return out;
}

function ignored(s: DeliverySession, what: string): Step<DeliverySession> {
  return step(s, [], [`${what} ignored in phase ${s.phase}`]);
}

/** Joins the group session dialog once both the queue is drained and a live CF dialog exists (order: deferred first). */
export function joinIfReady(s: DeliverySession): { session: DeliverySession; actions: DeliveryAction[] } {
  const live = isActive(s.session) || s.restart === "done";
  if (s.joined || s.phase !== "delivered" || !live) return { session: s, actions: [] };
  const actions: DeliveryAction[] = [{ kind: "joinGroupDialog", sessionKey: s.session.key }];
  if (s.held.length) actions.push({ kind: "forwardToFocus", msrpMessageIds: s.held.map((m) => m.msrpMessageId) });
  // held until forwarded: a forward that cannot happen answers them with failure REPORTs (unavailable())
  return { session: { ...s, joined: true }, actions };
}

/** The client's BYE Reason (no Reason → cause 200, as 8.3.2.3 2.a; no usable SIP cause → undefined). */
export function clientByeReason(reasons: readonly string[]): { cause: number; text: string | undefined } | undefined {
  if (reasons.length === 0) return { cause: 200, text: undefined };
  const sip = parseReasonHeaders(reasons).values.find((v) => v.protocol === "SIP" && v.cause !== undefined);
  return sip?.cause === undefined ? undefined : { cause: sip.cause, text: sip.text };
}

/** Events of the delivery session, shared by both procedures. */
export function stepSession(s: DeliverySession, ev: SessionEvent, policy: DeliveryPolicy, onDrained: OnDrained): Step<DeliverySession> {
  if (s.phase === "ended") return ignored(s, ev.type);
  // DD-14: the discard is this device's (its view of the queue); the others keep what they have not got
  const ref = queueRef(s.servedUser, s.session, s.device);
  switch (ev.type) {
    case "msrpUp":
      if (s.phase !== "connecting") return ignored(s, "msrpUp");
      return step({ ...s, phase: "delivering", reading: true }, [readNext(s)], []);

    case "itemsRead": {
      if (s.phase !== "delivering" || !s.reading) return ignored(s, "itemsRead");
      const batch = takeBatch(s.items, ev.items, policy.sendInterimGsos);
      const taken = batch.deliver.length + batch.skipped.length;
      let next: DeliverySession = { ...s, items: batch.tracker, reading: false, exhausted: taken === 0 };
      const actions: DeliveryAction[] = [];
      if (batch.skipped.length) actions.push({ kind: "ackDeferred", handles: batch.skipped.map((i) => i.handle) });
      if (batch.deliver.length) actions.push({ kind: "deliverInOrder", items: batch.deliver });
      if (taken > 0 && inFlightCount(next.items) <= READ_BATCH) {
        // progress was made: read on (ahead of the delivery, one batch at most)
        next = { ...next, reading: true };
        actions.push(readNext(next));
      } else if (taken === 0 && inFlightCount(next.items) === 0) {
        // nothing new (empty read, or only items already sent): the queue is drained
        const done = onDrained({ ...next, phase: "delivered" }, policy, ev.at);
        const end = done.session.endAfterDrain;
        if (end) {
          const over: DeliverySession = { ...done.session, phase: "ended", toAck: [] };
          const bye: DeliveryAction = { kind: "byeToClient", reason: end.reason };
          return step(
            over,
            [...actions, ...done.actions, ...ackPending(done.session), bye],
            [...batch.notes, "pending data delivered: RJ-3 BYE"],
          );
        }
        const join = joinIfReady(done.session);
        return step(join.session, [...actions, ...done.actions, ...join.actions], batch.notes);
      }
      return step(next, actions, batch.notes);
    }

    case "readFailed": {
      if (s.phase !== "delivering" || !s.reading) return ignored(s, "readFailed");
      // Decision (spec silent): a store outage ends this delivery session like a
      // SIP/IP core release (8.3.2.3 "any other cause"); what was confirmed is
      // retired, the rest stays queued for the next registration or re-join.
      const reason = formatReason({ protocol: "SIP", cause: 503, text: "Service Unavailable" });
      return step(
        { ...s, phase: "ended", reading: false, toAck: [] },
        [...ackPending(s), { kind: "byeToClient", reason }],
        [`deferred queue unreadable (${ev.reason}): delivery stopped, data kept`],
      );
    }

    case "itemDelivered":
    case "itemFailed": {
      const r = settle(s.items, ev.handle);
      if (!r.known) return step(s, [], [`${ev.type} for uid ${ev.handle.uid}: not in flight, ignored`]);
      const notes: string[] = [];
      if (ev.type === "itemFailed") {
        // RFC 4975 7.1.1: a 3-digit status; only 3xx-9xx can be a failure
        if (!Number.isInteger(ev.status) || ev.status < 300 || ev.status > 999) {
          return step(s, [], [], new CpmError("CPM_ERR_BAD_REQUEST", `MSRP status ${ev.status}: not a failure status`));
        }
        const permanent = ev.status >= 400 && ev.status < 500 && ev.status !== 408 && ev.status !== 481;
        if (!permanent) {
          // Decision (spec silent): the MSRP session is unusable (408 / 481 /
          // 5xx). Items not confirmed stay in the queue (never lost, delivered
          // by the next registration or re-join); the delivery session ends
          // like a network-side release (8.3.2.3 "any other cause").
          const reason = formatReason({ protocol: "SIP", cause: 503, text: "Service Unavailable" });
          const ended: DeliverySession = { ...s, phase: "ended", items: { ...r.tracker, sent: [], head: 0 }, toAck: [] };
          return step(
            ended,
            [...ackPending(s), { kind: "byeToClient", reason }],
            [`MSRP ${ev.status} for uid ${ev.handle.uid}: delivery stopped, rest kept`],
          );
        }
        // Decision (spec silent): a client that refuses an item (415, 413, …)
        // would refuse it again; it is dropped so the queue cannot block.
        notes.push(`item uid ${ev.handle.uid} refused by the client (MSRP ${ev.status}): dropped`);
      }
      let next: DeliverySession = { ...s, items: r.tracker, toAck: [...s.toAck, ev.handle] };
      const inFlight = inFlightCount(next.items);
      const actions: DeliveryAction[] = [];
      if (inFlight === 0 || next.toAck.length >= ACK_BATCH) {
        actions.push(...ackPending(next));
        next = { ...next, toAck: [] };
      }
      // the next batch: ahead while less than one is in flight, or (queue seen empty) once all is through
      const wantRead = inFlight === 0 || (!next.exhausted && inFlight <= READ_BATCH);
      if (wantRead && next.phase === "delivering" && !next.reading) {
        next = { ...next, reading: true };
        actions.push(readNext(next));
        return step(next, actions, notes);
      }
      return step(next, actions, notes);
    }

    case "clientSentMedia":
      return clientMedia(s, ev.media, policy);

    case "restartResponse": {
      const bad = checkStatus(ev.status);
      if (bad) return step(s, [], [], bad);
      // an answer to an attempt that is not the one waiting (e.g. the focus's, once the factory was asked) is stale
      if (s.restart !== "pending" || (s.restarting && s.restarting.via !== ev.via)) return ignored(s, `restartResponse (${ev.via})`);
      if (ev.status < 200) return step(s, [], [`provisional ${ev.status} to the restart INVITE (${ev.via})`]);
      if (ev.status < 300) return restarted(s, ev, policy);
      const factory = factoryAttempt(s.restarting, ev.status);
      if (factory) {
        // the focus is gone: re-start the long-lived group session through the conference factory; the client's SENDs stay held
        return step(
          { ...s, restarting: factory },
          [{ kind: "restartGroupSession", restart: factory }],
          [`focus answered ${ev.status}: re-start via the conference factory ${factory.factoryUri}`],
        );
      }
      // RJ-3: BYE to the client with the CF's code; RJ-4: REPORTs for what it sent first. When
      // the factory refused too, the client gets the factory's code, not the focus's: the
      // focus's 404 / 410 / 403 only said the old focus is gone, which the factory step
      // answered; the factory's refusal is why the long-lived group session could not be
      // re-started.
      const reason = formatReason({ protocol: "SIP", cause: ev.status, text: ev.reasonPhrase });
      const noFactory = ev.via === "focus" && FOCUS_GONE.has(ev.status) ? " (no conference factory URI known)" : "";
      const failed = `group session restart failed: ${ev.status} from the ${ev.via}${noFactory}`;
      if (s.phase !== "delivered") {
        // the re-start went out before the queue was drained (a re-join of an inactive group, or a
        // client SEND during the delivery): the BYE waits until what is pending was delivered
        return step(
          { ...s, restart: "failed", restarting: undefined, held: [], endAfterDrain: { reason, status: ev.status } },
          failureReports(s.held, ev.status),
          [`${failed}; BYE after the pending data`],
        );
      }
      const actions = [...ackPending(s), ...failureReports(s.held, ev.status), { kind: "byeToClient", reason } as DeliveryAction];
      return step({ ...s, restart: "failed", restarting: undefined, held: [], phase: "ended", toAck: [] }, actions, [failed]);
    }

    case "actionUnavailable":
      return unavailable(s, ev.action, ev.reason, policy, onDrained);

    case "groupEnded": {
      const next = { ...s, session: ev.session };
      // BYE-B7: the joined delivery session is one of the user's dialogs of the group session
      if (!s.joined) return step(next, [], ["group session ended by the CF: no join after the deferred items"]);
      return step(
        { ...next, phase: "ended", held: [], toAck: [] },
        [...ackPending(s), { kind: "byeToClient", reason: ev.reason }],
        ["group session ended by the CF: the joined delivery session ends with the PF's Reason"],
      );
    }

    case "clientBye": {
      const parsed = clientByeReason(ev.reasons);
      const cause = parsed?.cause;
      // the client's Reason goes on as received (8.2.2.3); none → cause=200
      const text = parsed?.text ?? (cause === 200 ? "Call completed" : undefined);
      const reason = formatReason({ protocol: "SIP", cause: cause ?? 503, text });
      // BYE-B7 "every connected client": with another device still joined only this device leaves,
      // the user stays in the group (as a forked INVITE's device that sends its own BYE)
      const leavesGroup = s.joined && ev.othersJoined !== true;
      const actions: DeliveryAction[] = [{ kind: "handleAsBye", reason, towardsFocus: leavesGroup }];
      const notes: string[] = [];
      if (s.joined && !leavesGroup) {
        actions.push({ kind: "leaveConference", sessionKey: s.session.key });
        notes.push("another device of the served user is joined: only this device leaves the group session");
      }
      if (cause === 200) {
        // DD-14: discard all remaining deferred messages of the group session
        actions.push({ kind: "discardDeferred", queue: ref });
      } else {
        // Decision (spec silent): only cause=200 discards; a release for
        // another cause (e.g. connection loss) keeps what was not delivered
        actions.push(...ackPending(s));
        notes.push(`client BYE cause ${cause ?? "unusable"}: undelivered items kept`);
      }
      if (s.held.length) notes.push(`${s.held.length} held client SEND(s) dropped with the session`);
      return step({ ...s, phase: "ended", held: [], toAck: [] }, actions, notes);
    }
  }
}

/**
 * What follows an action nothing could execute. Decisions (spec silent): a
 * re-start that cannot be sent is a failed re-start (RJ-3 / RJ-4 with 503);
 * a join that cannot be made ends the delivery session after the deferred
 * items with cause 200 (the client re-joins the conference itself, 8.2.2.7)
 * and the client SENDs held for it get failure REPORTs; the actions towards
 * the focus after the session's data was settled (BYE, release, unsubscribe)
 * leave the CF side as it is.
 */
function unavailable(
  s: DeliverySession,
  action: DeliveryAction,
  reason: string,
  policy: DeliveryPolicy,
  onDrained: OnDrained,
): Step<DeliverySession> {
  const why = `${action.kind} not executed (${reason})`;
  const unavailableStatus = 503;
  switch (action.kind) {
    case "restartGroupSession": {
      const r = stepSession(
        s,
        { type: "restartResponse", via: action.restart.via, status: unavailableStatus, reasonPhrase: "Service Unavailable" },
        policy,
        onDrained,
      );
      return { ...r, notes: [why, ...r.notes] };
    }
    case "rejoinConference":
    case "joinGroupDialog":
      return step(
        { ...s, joined: false, held: [], phase: "ended", toAck: [] },
        [...ackPending(s), ...failureReports(s.held, unavailableStatus), { kind: "byeToClient", reason: CALL_COMPLETED }],
        [why, "delivery session ended after the deferred items: the client re-joins the conference itself"],
      );
    case "forwardToFocus": {
      const ids = new Set(action.msrpMessageIds);
      const lost = s.held.filter((m) => ids.has(m.msrpMessageId));
      return step({ ...s, held: s.held.filter((m) => !ids.has(m.msrpMessageId)) }, failureReports(lost, unavailableStatus), [why]);
    }
    default:
      return step(s, [], [why]);
  }
}

/**
 * DD-13 / RJ-3: the group session is up again (a 2xx to the re-start of
 * `via`): the delivery session joins it once the queue is drained, the held
 * SENDs go on. A 2xx naming a new focus (always so from the factory) makes
 * it the group's lastfocussessionid; once the deferred items are through,
 * the client gets a GSO with it at once. Decision (spec silent): sent
 * whatever delivery.sendInterimGsos says, since the GSO of the drain named
 * the old focus and a client re-joining that one later would be refused
 * again; before the drain, the drain's GSO carries the new focus.
 */
function restarted(
  s: DeliverySession,
  { via, focusUri, at }: Extract<SessionEvent, { type: "restartResponse" }>,
  policy: DeliveryPolicy,
): Step<DeliverySession> {
  const moved = focusUri !== undefined && focusUri !== "" && focusUri !== s.session.focusUri;
  const session = moved ? { ...s.session, focusUri } : s.session;
  const actions: DeliveryAction[] = [];
  const notes: string[] = [];
  if (moved) {
    notes.push(`group session re-started via the ${via}: new focus ${focusUri}`);
    const gso = s.phase === "delivered" && at ? gsoAction(session, at, policy) : undefined;
    if (gso) actions.push(gso);
  }
  const join = joinIfReady({ ...s, session, restart: "done", restarting: undefined });
  return step(join.session, [...actions, ...join.actions], notes);
}

/** DD-13 / RJ-4 / RJ-5: a SEND from the client in the delivery session. */
function clientMedia(s: DeliverySession, media: ClientMedia, policy: DeliveryPolicy): Step<DeliverySession> {
  if (s.phase === "connecting") return ignored(s, "clientSentMedia");
  // DD-12 / RJ-5: joined: on to the CF, after whatever went before it
  if (s.joined) return step(s, [{ kind: "forwardToFocus", msrpMessageIds: [media.msrpMessageId] }], []);
  // RJ-4: the re-start already failed, the session ends once the pending data is delivered
  if (s.endAfterDrain) return step(s, failureReports([media], s.endAfterDrain.status), []);
  const held = [...s.held, media];
  if (isActive(s.session) || s.restart === "pending" || s.restart === "done") {
    // held until the join (after the deferred items, order)
    return step({ ...s, held }, [], []);
  }
  // DD-13: inactive group session, the client sends IMDN / isComposing / message → re-start it
  const restart = restartRequest(s.session, policy);
  return step({ ...s, held, restart: "pending", restarting: restart }, [{ kind: "restartGroupSession", restart }], []);
}
