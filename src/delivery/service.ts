// Deferred delivery after registration (OMA CPM 8.3.2.9.1.2, DD-1..DD-14),
// the I/O side: runs one pure machine (src/procedures/deferred-delivery.ts)
// per group session with deferred data and executes its actions through the
// PF's SIP user agent (the delivery INVITE, ACK and BYE go through Kamailio),
// an MSRP delivery leg towards the client (src/media/delivery-endpoint.ts) and
// the deferred queue in the Message Store. Events of one machine are handled
// one at a time, in arrival order.
//
// The actions on the group session itself (DD-8 ii BYE to the focus, media
// release, unsubscription; DD-12 / RJ-5 join and relay to the CF; DD-13
// re-start) go to src/delivery/group-dialog.ts. An action nothing executes
// is logged as an error, counted (`unexecutedActions`) and handed back to the
// procedure as `actionUnavailable`, which decides what the client gets. This
// runner makes no decision of its own.
import { randomBytes } from "node:crypto";
import { type CpimMessage, parseCpim } from "../cpim/cpim.js";
import { negativeDeliveryNotification, wantsNegativeDelivery } from "../cpim/notification.js";
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import type { JoinedClient } from "../media/anchored-session.js";
import { type Metrics, noMetrics } from "../metrics/metrics.js";
import type { RegistrationHandler, RegistrationResult } from "../pf/participating-function.js";
import {
  type DeferredDeliveryEvent,
  type DeferredDeliveryState,
  type PendingGroupSession,
  startDeferredDelivery,
  stepDeferredDelivery,
} from "../procedures/deferred-delivery.js";
import { type ConfirmedPrefix, itemsConfirmed, itemsRead, noConfirmedPrefix } from "../procedures/delivered-through.js";
import type { DeliveryClaims } from "../procedures/delivery-guard.js";
import { applyClaim } from "../procedures/delivery-guard.js";
import type { PendingItem } from "../procedures/delivery-items.js";
import { itemId } from "../procedures/delivery-items.js";
import {
  CALL_COMPLETED,
  type DeliveryAction,
  type DeliveryInvite,
  type DeliveryPolicy,
  type QueueRef,
  queueRef,
  type Step,
} from "../procedures/delivery-session.js";
import { type Device, deliveredThroughOf, deviceOf, memberKeywords, retirable } from "../procedures/device-view.js";
import { answersRejoin, type RejoinState, rejoinClaims, startRejoinDelivery, stepRejoinDelivery } from "../procedures/rejoin-delivery.js";
import { type DeliveredThrough, type GroupSession, recordId, recordIdOf, userKey } from "../session/group-session.js";
import { contactInstance, servedUserOf } from "../session/observe.js";
import { acceptContactFor, CPM_SESSION_ICSI, icsiRefParam } from "../sip/feature-tags.js";
import { header, headerValues, mediaType, parseSipMessage, type SipMessage } from "../sip/message.js";
import { bodyParts, replaceBodyPart } from "../sip/multipart.js";
import { serializeRequest } from "../sip/serialize.js";
import { readThirdPartyRegister } from "../sip/third-party-register.js";
import type { DeferredHandle, DeferredMarks, DeferredRecord, DeferredSessionSummary, ReadCursor } from "../store/deferred-queue.js";
import type { GroupDialogs } from "./group-dialog.js";
import type { SessionRefresh } from "./session-refresh.js";

/** The PF's SIP UA, as far as delivery uses it (src/sip/ua.ts). */
export interface DeliveryUa {
  invite(
    req: { requestUri: string; route?: string[]; headers: [string, string][]; body: string },
    onProvisional?: (status: number, response: SipMessage) => void,
  ): { callId: string; outcome: Promise<{ status: number; reason: string; response: SipMessage; dialog?: UaDialog }>; cancel(): void };
  ack(dialog: UaDialog): void;
  bye(dialog: UaDialog, headers?: [string, string][]): Promise<number>;
  onRequest(
    handler: (req: SipMessage, reply: (status: number, reason: string, headers?: [string, string][], body?: string) => void) => void,
  ): void;
  /** Initial INVITEs Kamailio relays to the UA: the client's re-joins (RJ-1). */
  onInvite(handler: (invite: UaIncomingInvite) => void): void;
}

/** An INVITE at the UA's INVITE server transaction (src/sip/ua.ts IncomingInvite): the client's re-join, or the CF's re-INVITE. */
export interface UaIncomingInvite {
  readonly request: SipMessage;
  accept(headers: [string, string][], body: string): UaDialog;
  readonly inDialog: boolean;
  acceptInDialog(headers: [string, string][], body: string): void;
  reject(status: number, reason: string, headers?: [string, string][]): void;
  readonly acked: Promise<boolean>;
  onCancel(fn: () => void): void;
}

/** A dialog as the UA keeps it; delivery only passes it back. */
export interface UaDialog {
  callId: string;
}

/** The PF's MSRP endpoint of one delivery session (src/media/delivery-endpoint.ts). */
export interface DeliveryLeg {
  applyAnswer(answerSdp: string): void;
  send(item: { contentType: string; body: Buffer }): Promise<number>;
  /** RFC 4975 7.1.2 failure REPORT for a message the client sent; false when none goes out. */
  failureReport(msrpMessageId: string, status: number): boolean;
  close(reason: string): void;
  on(event: "up", fn: () => void): unknown;
  on(
    event: "clientSend",
    fn: (info: {
      msrpMessageId: string;
      kind: "message" | "imdn" | "isComposing";
      failureReport: "yes" | "no" | "partial";
      contentType: string;
      body: Buffer;
    }) => void,
  ): unknown;
  on(event: "closed", fn: (reason: string) => void): unknown;
  /** DD-12 / RJ-5: this session as the group session's client leg (src/media/anchored-session.ts). */
  asJoinedClient(): JoinedClient;
}

export type OpenLeg = (sessionKey: string, originalSdp: string) => Promise<{ leg: DeliveryLeg; offerSdp: string }>;
/** RJ-1: the PF's MSRP endpoint answering the client's own offer (src/media/delivery-endpoint.ts DeliveryEndpoint.answer). */
export type AnswerLeg = (sessionKey: string, offerSdp: string) => Promise<{ leg: DeliveryLeg; answerSdp: string }>;

/** The deferred queue (src/store/deferred-queue.ts). */
export interface DeliveryQueue {
  /** The group sessions with deferred data in the served user's mailbox; with `device`, counted for that device. */
  listSessions(servedUser: string, device?: string): Promise<DeferredSessionSummary[]>;
  /** The oldest items; with `target.device`, those that device has not got. */
  read(target: QueueRef, limit: number, after?: ReadCursor): Promise<DeferredRecord[]>;
  /** DD-1 per device: marks items as got by the device of `keyword`; resolves with their marks. */
  mark(handles: readonly DeferredHandle[], keyword: string): Promise<DeferredMarks[]>;
  /** DD-10 after a takeover: the items up to `through` the device of `keyword` has no mark on marked as its own; resolves with their marks. */
  markThrough(target: QueueRef, keyword: string, through: DeliveredThrough): Promise<DeferredMarks[]>;
  /** DD-8 / DD-14 for one device: every item marked as got by it; resolves with the marks of all. */
  discardFor(target: QueueRef, keyword: string): Promise<DeferredMarks[]>;
  /** The marks of every item of a session's queue. */
  marks(target: QueueRef): Promise<DeferredMarks[]>;
  /** Removes items: UID EXPUNGE, or one UID MOVE into `moveTo`. */
  ack(handles: readonly DeferredHandle[], opts?: { moveTo?: string }): Promise<number>;
}

/** The group session records (src/session/registry.ts). */
export interface DeliverySessions {
  get(key: string): GroupSession | undefined;
  findByIds(servedUser: string, conversationId: string, contributionId: string): GroupSession | undefined;
  /** Every record (resumeInterrupted). */
  all(): Iterable<GroupSession>;
}

/** A served-user slot's lease (src/session/redis/ownership.ts): its fencing token grows with every grant. */
export interface OwnerLease {
  slot: number;
  token: number;
}

/** Who runs a served user's deliveries when several sidecars share the records (src/session/redis/ownership.ts). */
export interface DeliveryOwnership {
  /** This sidecar's name. */
  readonly self: string;
  owner(
    servedUser: string,
  ): Promise<{ self: true; lease: OwnerLease } | { self: false; slot: number; holder: string; lapsesInMs: number; ua?: string }>;
  /** The fence before a claim: false once a newer lease of the slot exists (or it lapsed). */
  confirm(lease: OwnerLease): Promise<boolean>;
  /** Publishes the registration to the slot's holder; resolves with how many received it. */
  wake(slot: number, wake: { servedUser: string; client: { contact: string; instanceId?: string } }): Promise<number>;
  /** This sidecar holds the served user's slot and its lease has not lapsed by this clock. */
  holds(servedUser: string): boolean;
  /** Runs `fn` when a slot is lost (lapsed, or taken by another sidecar). */
  onLost(fn: (slot: number) => void): void;
}

export interface DeliveryServiceDeps {
  policy: DeliveryPolicy;
  /** session.store "redis": only the holder of the served user's slot delivers; absent (the journal): this sidecar delivers. */
  ownership?: DeliveryOwnership;
  /** Deliveries by outcome and drain time; default none. */
  metrics?: Pick<Metrics, "delivery">;
  /** config pf.servedUser: when set, REGISTERs for another user are not this PF's. */
  servedUser: string;
  ua: DeliveryUa;
  openLeg: OpenLeg;
  answerLeg: AnswerLeg;
  queue: DeliveryQueue;
  sessions: DeliverySessions;
  /** The record of a group session the PF does not know, rebuilt from the served user's mailbox (undefined: none usable). */
  rebuild?: (servedUser: string, conversationId: string, contributionId: string) => Promise<GroupSession | undefined>;
  /** Where delivered items go when the session is recorded (8.5.2: allow-offline-storage or recording); undefined: removed. */
  retireFolder?: (session: GroupSession) => string | undefined;
  /** DD-8 ii: the group session's dialog towards the focus and its media (src/delivery/group-dialog.ts); absent: those actions have no executor. */
  group?: Pick<
    GroupDialogs,
    "byeToFocus" | "releaseMedia" | "unsubscribe" | "join" | "leave" | "relayToCf" | "restart" | "ended" | "holds"
  >;
  /** The focus's NOTIFYs on the PF's own conference subscriptions (src/delivery/conference-subscriptions.ts); absent: every NOTIFY gets 481. */
  subscriptions?: { onNotify(req: SipMessage, reply: (status: number, reason: string) => void): void };
  /** The CF's session refreshes for an absent client (src/delivery/session-refresh.ts); absent: answered 481. */
  refresh?: Pick<SessionRefresh, "onReinvite" | "onUpdate" | "takesBye">;
  /** BYE-B7: the BYEs of dialogs with further devices of a forked INVITE (src/delivery/device-dialogs.ts). */
  devices?: { onBye(req: SipMessage, reply: (status: number, reason: string) => void): boolean };
  /** 8.3.2.3: a BYE the CF sent on a group session dialog the PF's UA set up (a re-start): decided and acted on as Kamailio's are. */
  networkBye?: (raw: Uint8Array) => Promise<void>;
  /** DD-1 per device: a device of the served user registered or re-joined while the group session had data pending (a member of its queue). */
  deviceSeen?(servedUser: string, conversationId: string, contributionId: string, keyword: string, fence?: OwnerLease): Promise<void>;
  /** DD-10: the device confirmed every item up to `through` (the record keeps it: a takeover starts behind them). */
  deviceDelivered?(
    servedUser: string,
    conversationId: string,
    contributionId: string,
    keyword: string,
    through: DeliveredThrough,
    fence?: OwnerLease,
  ): Promise<void>;
  /**
   * A registration's delivery to the device of `keyword` began (`to`: its
   * contact) or ended (`to` undefined): the record keeps it, so that one the
   * process did not see end is resumed (resumeInterrupted).
   */
  delivering?(
    servedUser: string,
    conversationId: string,
    contributionId: string,
    keyword: string,
    to: { contact: string; instanceId?: string } | undefined,
    fence?: OwnerLease,
  ): Promise<void>;
  /** The group session's queue is empty (delivered or discarded): its record may be retired by policy. */
  queueSettled(servedUser: string, conversationId: string, contributionId: string, fence?: OwnerLease): Promise<void>;
  log: Logger;
}

/**
 * Why a registration's delivery starts: the device registered here; another
 * sidecar's registration woke this slot holder; a registration tried again
 * (its wake-up unheard, the store down); an interrupted delivery resumed
 * from the record (resumeInterrupted: never wakes another sidecar).
 */
type Start = "registered" | "woken" | "retry" | "resumed";

/** The procedure a machine runs: after registration (8.3.2.9.1.2) or upon the client's re-join (8.3.2.9.1.3). */
type Procedure = { kind: "registration"; state: DeferredDeliveryState } | { kind: "rejoin"; state: RejoinState };

interface Machine {
  /** deliveryKey: the claim both procedures share. */
  key: string;
  /** key and procedure: a re-join's machine beside the registration machine it supersedes. */
  id: string;
  sessionKey: string;
  proc: Procedure;
  /** Events are handled one after another. */
  chain: Promise<void>;
  invite?: { callId: string; cancel(): void };
  dialog?: UaDialog;
  leg?: DeliveryLeg;
  retry?: NodeJS.Timeout;
  /** When the delivery started (performance.now(); metrics). */
  startedAt: number;
  /** Bodies of the items read, by itemId, until delivered. */
  bodies: Map<string, { contentType: string; body: Buffer }>;
  /** RJ-1: the client's re-join INVITE until answered (a CANCEL ends it). */
  rejoin?: UaIncomingInvite;
  /** DD-13: the re-started group session's dialog (the PF's UA set it up): its Call-ID keys its media too. */
  restartCallId?: string;
  /** What the client sent in the delivery session, by MSRP Message-ID, until it went on to the CF (DD-12, RJ-5). */
  clientSends: Map<string, { contentType: string; body: Buffer }>;
  /** Confirmed items waiting to leave the queue, and the removal running now (retire()). */
  toRetire: DeferredHandle[];
  retiring?: Promise<void>;
  /** DD-10: how far the device confirmed without a gap; kept in the record ahead of the marks (keepThrough()). */
  prefix: ConfirmedPrefix;
  /** The record write of `prefix` running now, and whether a newer position waits for it. */
  keeping?: Promise<void>;
  keepAgain?: boolean;
  /** A re-join's: the items its device confirmed before a crash were marked (markConfirmed) before its first read. */
  confirmedMarked?: boolean;
  /** The served user's slot was lost while this delivery ran (ownsDelivery). */
  standingDown?: boolean;
  /** Several sidecars: the slot's lease the delivery runs under; its record writes carry it as their fence. */
  lease?: OwnerLease;
  /** A registration's: the device's contact, kept in the record while the delivery runs (resumeInterrupted). */
  client?: { contact: string; instanceId?: string };
}

const SDP = "application/sdp";

/**
 * How long a delivery INVITE may ring: the UA's Timer B stops at the first
 * provisional response (RFC 3261 17.1.1.2), so a client that rings forever is
 * CANCELled after this (its 487 is a failed attempt, DD-9).
 */
const INVITE_RING_MS = 60_000;

export class DeliveryService implements RegistrationHandler {
  private readonly machines = new Map<string, Machine>();
  /** Delivery dialog Call-ID -> machine id, for the client's in-dialog requests. */
  private readonly byCallId = new Map<string, string>();
  private claims: DeliveryClaims = new Map();
  private closed = false;
  /** Registrations whose wake-up nobody received: tried again once the holder's lease has lapsed. */
  private readonly wakeRetries = new Set<NodeJS.Timeout>();
  /** Registrations that found the deferred queue unreadable (the store down), by served user and device: tried again (delivery.storeRetryMs). */
  private readonly storeRetries = new Map<string, NodeJS.Timeout>();
  /** resumeInterrupted() is running (a scan does not start a second one). */
  private resuming = false;
  /** Actions the machines asked for that nothing here executes, by kind (each logged as an error; cpmpf_unexecuted_actions_total). */
  readonly unexecutedActions = new Map<string, number>();

  constructor(private readonly deps: DeliveryServiceDeps) {
    deps.ownership?.onLost(() => {
      for (const m of [...this.machines.values()]) this.ownsDelivery(m);
    });
    deps.ua.onRequest((req, reply) => this.onClientRequest(req, reply));
    deps.ua.onInvite((invite) => {
      if (!invite.inDialog) return this.onRejoin(invite);
      // the CF's re-INVITE on a group session dialog whose client is gone (session refresh)
      if (this.deps.refresh) this.deps.refresh.onReinvite(invite);
      else invite.reject(481, "Call/Transaction Does Not Exist");
    });
  }

  /**
   * RJ-1: ObserveSession's answer_by_pf (rejoin-delivery.ts answersRejoin):
   * undefined when the PF does not answer the client's re-join of `session`,
   * else the UA that does (`ua` undefined: this sidecar's). Several sidecars:
   * the holder of the served user's slot, taken here when nobody holds it, as
   * for a registration, so that one claim table orders a re-join and a
   * registration delivery of the same device.
   */
  async rejoinTarget(session: GroupSession, instanceId?: string): Promise<{ ua?: string } | undefined> {
    if (this.closed) return undefined;
    const servedUser = session.servedUser;
    const own = this.deps.ownership;
    if (own) {
      const fields = { servedUser, conversationId: session.conversationId, contributionId: session.contributionId };
      let o: Awaited<ReturnType<DeliveryOwnership["owner"]>>;
      try {
        o = await own.owner(servedUser);
      } catch (err) {
        // not knowing the owner, answering could deliver twice: the focus gets it, the data stays queued
        const reason = err instanceof CpmError ? err.detail : String(err);
        this.deps.log.warn("re-join: the owner of the served user's slot is unknown, relayed to the focus", { ...fields, reason });
        return undefined;
      }
      if (!o.self) {
        // the holder's claims decide when the INVITE reaches it (onRejoin); here what the shared record says
        if (!answersRejoin(servedUser, session, new Map(), false, instanceId)) return undefined;
        if (!o.ua) {
          this.deps.log.warn("re-join: the slot's holder published no UA address, relayed to the focus", { ...fields, owner: o.holder });
          return undefined;
        }
        this.deps.log.info("re-join routed to the holder of the served user's slot", {
          ...fields,
          owner: o.holder,
          slot: o.slot,
          ua: o.ua,
        });
        return { ua: o.ua };
      }
    }
    const cfLegLive = this.deps.group?.holds(session.key) ?? false;
    return answersRejoin(servedUser, session, this.claims, cfLegLive, instanceId) ? {} : undefined;
  }

  /** DD-1: the S-CSCF's third-party REGISTER for the served user reached the PF. */
  async onRegistration(env: { raw: Uint8Array }): Promise<RegistrationResult> {
    const reg = readThirdPartyRegister(parseSipMessage(env.raw));
    if (!reg.registered) return { accepted: true, deliveries: 0, notes: ["de-registration: nothing to deliver"] };
    if (this.deps.servedUser && userKey(reg.servedUser) !== userKey(this.deps.servedUser)) {
      return { accepted: false, deliveries: 0, notes: [`${reg.servedUser} is not the served user`] };
    }
    const client = { contact: reg.contact ?? `<${reg.servedUser}>`, ...(reg.instanceId ? { instanceId: reg.instanceId } : {}) };
    if (!reg.contact) {
      // decision: the S-CSCF routes a request to the public identity to the user's registered contacts (24.229 5.4.3.3)
      this.deps.log.warn(
        "registration names no live contact of the device (no REGISTER in its body, or none unexpired): delivered to the public identity",
        {
          servedUser: reg.servedUser,
        },
      );
    }
    if (!reg.instanceId) {
      // decision: one anonymous device (device-view.ts): all registrations without an instance share its view
      this.deps.log.info("registration without +sip.instance: delivered as the user's anonymous device", {
        servedUser: reg.servedUser,
        contact: client.contact,
      });
    }
    return this.startFor(reg.servedUser, client);
  }

  /** 8.3.2.3: the CF ended the group session: its delivery machines learn it (a joined one ends with `reason`, BYE-B7). */
  groupEnded(session: GroupSession, reason: string): void {
    // by the record's identity: a re-start gave the group session a new dialog (key) since the delivery began
    const id = recordIdOf(session);
    for (const m of this.machines.values()) {
      if (recordIdOf(m.proc.state.delivery.session) === id) this.feed(m, { type: "groupEnded", session, reason });
    }
  }

  /** Starts deferred delivery to `contact` as if the served user had registered there (an operator's request). */
  deliverTo(servedUser: string, contact: string): Promise<RegistrationResult> {
    return this.startFor(servedUser, { contact: contact.startsWith("<") ? contact : `<${contact}>` });
  }

  /** A registration another sidecar got for a user of a slot this one holds (its wake-up). */
  woken(wake: { servedUser: string; client: { contact: string; instanceId?: string }; from: string }): void {
    if (this.closed) return;
    const fields = { servedUser: wake.servedUser, contact: wake.client.contact, from: wake.from };
    this.deps.log.info("registration wake-up received", fields);
    this.startFor(wake.servedUser, wake.client, "woken").then(
      (r) => this.deps.log.info("registration wake-up handled", { ...fields, deliveries: r.deliveries, notes: r.notes }),
      (err) => this.deps.log.error("registration wake-up failed", { ...fields, reason: String(err) }),
    );
  }

  /**
   * Several sidecars: the holder of the served user's slot delivers. Another
   * live holder is woken (pub/sub) and nothing starts here; a slot nobody
   * holds (or whose holder's lease lapsed) is taken, with a new token.
   */
  private async route(
    servedUser: string,
    client: { contact: string; instanceId?: string },
    how: Start,
  ): Promise<{ lease: OwnerLease } | { result: RegistrationResult }> {
    const own = this.deps.ownership as DeliveryOwnership;
    const fields = { servedUser, contact: client.contact };
    let o: Awaited<ReturnType<DeliveryOwnership["owner"]>>;
    try {
      o = await own.owner(servedUser);
    } catch (err) {
      // not knowing the owner, delivering could deliver twice: the next registration (refresh) tries again
      const reason = err instanceof CpmError ? err.detail : String(err);
      this.deps.log.warn("registration: the owner of the served user's slot is unknown, nothing delivered", { ...fields, reason });
      return { result: { accepted: true, deliveries: 0, notes: [`slot owner unknown: ${reason}`] } };
    }
    if (o.self) return { lease: o.lease };
    // an interrupted delivery whose slot a live sidecar holds: that one runs it (or resumes it itself)
    if (how === "resumed") return { result: { accepted: true, deliveries: 0, notes: [`slot ${o.slot} is held by ${o.holder}`] } };
    if (how === "woken") {
      this.deps.log.warn("wake-up for a slot another sidecar holds now: nothing delivered here", { ...fields, owner: o.holder });
      return { result: { accepted: true, deliveries: 0, notes: [`slot ${o.slot} is held by ${o.holder}`] } };
    }
    let received = 0;
    try {
      received = await own.wake(o.slot, { servedUser, client });
    } catch (err) {
      this.deps.log.warn("registration wake-up not published", { ...fields, owner: o.holder, reason: String(err) });
    }
    this.deps.log.info("registration wake-up published", { ...fields, owner: o.holder, slot: o.slot, received });
    if (received > 0) {
      return { result: { accepted: true, deliveries: 0, notes: [`deferred delivery by sidecar ${o.holder} (owner of slot ${o.slot})`] } };
    }
    // nobody listening (the holder died with its lease still running): once it lapsed, this sidecar takes the slot
    if (how === "registered") {
      const timer = setTimeout(() => {
        this.wakeRetries.delete(timer);
        if (this.closed) return;
        this.startFor(servedUser, client, "retry").then(
          (r) =>
            this.deps.log.info("registration retried after the slot's lease lapsed", {
              ...fields,
              deliveries: r.deliveries,
              notes: r.notes,
            }),
          (err) => this.deps.log.error("registration retry failed", { ...fields, reason: String(err) }),
        );
      }, o.lapsesInMs + 50);
      timer.unref();
      this.wakeRetries.add(timer);
    }
    return {
      result: {
        accepted: true,
        deliveries: 0,
        notes: [`sidecar ${o.holder} (owner of slot ${o.slot}) did not get the wake-up: retried when its lease lapses`],
      },
    };
  }

  private async startFor(
    servedUser: string,
    client: { contact: string; instanceId?: string },
    how: Start = "registered",
    storeRetryMs = this.deps.policy.storeRetryMs,
    /** Only these group sessions (record ids; resumeInterrupted: the ones interrupted). Default: every one with data pending. */
    only?: ReadonlySet<string>,
  ): Promise<RegistrationResult> {
    const device = deviceOf(client.instanceId);
    // a newer registration of the device tries now: its retry for a store that was down is not needed
    // (a resumed delivery is no registration: it covers only the sessions it names)
    const retryKey = `${userKey(servedUser)} ${device.keyword}`;
    if (how !== "resumed") {
      clearTimeout(this.storeRetries.get(retryKey));
      this.storeRetries.delete(retryKey);
    }
    let lease: OwnerLease | undefined;
    if (this.deps.ownership) {
      const routed = await this.route(servedUser, client, how);
      if ("result" in routed) return routed.result;
      lease = routed.lease;
    }
    // the served user's own queue, joined with the user's own records: nobody else's data; counted for this device
    let queues: DeferredSessionSummary[];
    try {
      queues = this.only(servedUser, await this.deps.queue.listSessions(servedUser, device.keyword), only);
      // what the device confirmed to a delivery that crashed before marking it: marked now, counted again
      let marked = false;
      for (const q of queues) {
        if (q.count === 0 || q.conversationId === undefined || q.contributionId === undefined) continue;
        const session = this.deps.sessions.findByIds(servedUser, q.conversationId, q.contributionId);
        if (session && (await this.markConfirmed(servedUser, device.keyword, session, lease))) marked = true;
      }
      if (marked) queues = this.only(servedUser, await this.deps.queue.listSessions(servedUser, device.keyword), only);
    } catch (err) {
      // no mailbox for this identity, or the store is down: nothing starts, nothing is touched
      const reason = err instanceof CpmError ? err.detail : String(err);
      const storeDown = !(err instanceof CpmError) || err.code === "CPM_ERR_STORE_UNAVAILABLE";
      const retryInMs = storeDown && storeRetryMs > 0 && !this.closed ? storeRetryMs : undefined;
      this.deps.log.warn("registration: the served user's deferred queue is unreadable, nothing delivered", {
        servedUser: servedUser,
        reason,
        ...(retryInMs !== undefined ? { retryInMs } : {}),
      });
      if (retryInMs !== undefined) {
        // DD-1: the store back, the device gets what it missed without waiting for its next REGISTER refresh
        const next = Math.min(retryInMs * 2, Math.max(retryInMs, this.deps.policy.retryMaxMs));
        const timer = setTimeout(() => {
          this.storeRetries.delete(retryKey);
          if (this.closed) return;
          this.startFor(servedUser, client, how === "woken" ? "woken" : "retry", next, only).then(
            (r) =>
              this.deps.log.info("registration tried again after the store was unreadable", {
                servedUser,
                deliveries: r.deliveries,
                notes: r.notes,
              }),
            (e) => this.deps.log.error("registration retry failed", { servedUser, reason: String(e) }),
          );
        }, retryInMs);
        timer.unref();
        this.storeRetries.set(retryKey, timer);
      }
      return {
        accepted: true,
        deliveries: 0,
        notes: [`deferred queue unreadable: ${reason}${retryInMs !== undefined ? ` (tried again in ${retryInMs} ms)` : ""}`],
      };
    }
    const pending: PendingGroupSession[] = [];
    for (const q of queues) {
      let session: GroupSession | undefined;
      if (q.conversationId !== undefined && q.contributionId !== undefined) {
        session = this.deps.sessions.findByIds(servedUser, q.conversationId, q.contributionId);
        // the local state is gone: the queue describes itself (session descriptor + latest GSO)
        if (!session && q.count > 0) session = await this.rebuild(servedUser, q.conversationId, q.contributionId);
      }
      if (session) {
        // the device is a member of what is pending from now on (the items it has not got wait for it)
        await this.deviceSeen(servedUser, session, device, lease);
        // it has all of it: what the others got too (or what aged out) leaves now
        if (q.count === 0 && (await this.sweep(servedUser, session, device.keyword)) >= q.total) {
          await this.deps
            .queueSettled(servedUser, session.conversationId, session.contributionId, lease)
            .catch((err) =>
              this.deps.log.warn("record not told the queue is empty", { servedUser, callId: session?.key, reason: String(err) }),
            );
        }
      }
      pending.push({ conversationId: q.conversationId, contributionId: q.contributionId, count: q.count, session });
    }
    const ownership = this.deps.ownership;
    // the fence before the claim: a delivery prepared under a token a newer lease superseded does not run
    if (ownership && lease && !(await ownership.confirm(lease).catch(() => false))) {
      this.deps.log.warn("slot lease superseded before the delivery was claimed: nothing delivered here", {
        servedUser,
        slot: lease.slot,
        token: lease.token,
      });
      // once more from the top: the new holder is woken, or the slot taken anew
      if (how === "registered") return this.startFor(servedUser, client, "retry", undefined, only);
      return { accepted: true, deliveries: 0, notes: [`slot ${lease.slot} lease ${lease.token} superseded: nothing delivered`] };
    }
    const start = startDeferredDelivery({ type: "registered", servedUser: servedUser, client, pending }, this.claims, this.deps.policy);
    this.claims = start.claims;
    const fields = {
      servedUser: servedUser,
      contact: client.contact,
      device: device.keyword,
      pending: pending.length,
      ...(lease ? { slot: lease.slot, token: lease.token } : {}),
    };
    // info: every refresh REGISTER repeats them (e.g. a folder of a session the PF no longer knows)
    for (const note of start.notes) this.deps.log.info(note, fields);
    for (const first of start.deliveries) {
      const m = this.newMachine({ kind: "registration", state: first.state });
      // its record writes carry the lease (refused once another sidecar has the slot)
      if (lease) m.lease = lease;
      m.client = client;
      // the record says the delivery runs before anything of it goes out: a crash from here on resumes it
      m.chain = m.chain.then(() => this.markDelivering(m, client)).then(() => this.apply(m, first));
    }
    // DD-1: a delivery of this device not up yet goes on to this registration (registeredAgain);
    // a resumed delivery is no registration: the contact it names may be the one the device left
    for (const a of how === "resumed" ? [] : start.again) {
      const running = this.machines.get(`registration ${a.key}`);
      if (!running) continue;
      running.client = a.client;
      // the record follows: a crash from here on resumes it at the contact just registered
      running.chain = running.chain.then(() =>
        this.machines.get(running.id) === running ? this.markDelivering(running, a.client) : undefined,
      );
      this.feed(running, { type: "registeredAgain", client: a.client });
    }
    this.deps.log.info("registration: deferred delivery started", { ...fields, deliveries: start.deliveries.length });
    const by = ownership && lease ? [`deferred delivery by this sidecar ${ownership.self} (slot ${lease.slot}, lease ${lease.token})`] : [];
    return { accepted: true, deliveries: start.deliveries.length, notes: [...start.notes, ...by] };
  }

  /** The queues of `servedUser` among `only` (all of them without it). */
  private only(servedUser: string, queues: DeferredSessionSummary[], only: ReadonlySet<string> | undefined): DeferredSessionSummary[] {
    if (!only) return queues;
    return queues.filter(
      (q) =>
        q.conversationId !== undefined &&
        q.contributionId !== undefined &&
        only.has(recordId(servedUser, q.conversationId, q.contributionId)),
    );
  }

  /**
   * Resolves true once no delivery is running, false after timeoutMs with
   * some still running (drain: the caller then close()s them; what they did
   * not deliver stays queued).
   */
  async idle(timeoutMs: number): Promise<boolean> {
    const until = performance.now() + timeoutMs;
    while (this.machines.size > 0) {
      if (performance.now() >= until) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  }

  /** Deliveries running now. */
  get running(): number {
    return this.machines.size;
  }

  /**
   * Drain before a shutdown: the running deliveries may finish for up to
   * timeoutMs; those still running then have their confirmed items removed
   * from the queue (nothing delivered is delivered again) and are ended, what
   * they did not deliver staying queued. Resolves with how many were ended.
   */
  async drain(timeoutMs: number): Promise<number> {
    const finished = await this.idle(timeoutMs);
    const left = [...this.machines.values()];
    if (!finished) await Promise.all(left.map((m) => this.retired(m)));
    this.close();
    return left.length;
  }

  /** Ends every delivery (shutdown): timers cleared, legs closed; what was not delivered stays queued. */
  close(): void {
    this.closed = true;
    for (const t of this.wakeRetries) clearTimeout(t);
    this.wakeRetries.clear();
    for (const t of this.storeRetries.values()) clearTimeout(t);
    this.storeRetries.clear();
    for (const m of this.machines.values()) this.dispose(m, "PF shutting down");
    this.machines.clear();
    this.byCallId.clear();
  }

  private newMachine(proc: Procedure): Machine {
    const delivery = proc.state.delivery;
    const m: Machine = {
      key: delivery.key,
      id: `${proc.kind} ${delivery.key}`,
      sessionKey: delivery.session.key,
      proc,
      chain: Promise.resolve(),
      startedAt: performance.now(),
      bodies: new Map(),
      clientSends: new Map(),
      toRetire: [],
      prefix: noConfirmedPrefix,
    };
    this.machines.set(m.id, m);
    return m;
  }

  private feed(m: Machine, ev: DeferredDeliveryEvent): void {
    m.chain = m.chain.then(() => this.step(m, ev));
  }

  /** One event in the machine's turn: its procedure's step, then the actions. */
  private step(m: Machine, ev: DeferredDeliveryEvent): Promise<void> | undefined {
    if (this.closed || this.machines.get(m.id) !== m) return;
    const { policy } = this.deps;
    if (m.proc.kind === "registration") return this.apply(m, stepDeferredDelivery(m.proc.state, ev, policy));
    if (ev.type === "inviteResponse" || ev.type === "retryTimer" || ev.type === "superseded" || ev.type === "registeredAgain") {
      this.deps.log.error("registration event fed to a re-join delivery", { ...this.fields(m), event: ev.type });
      return;
    }
    return this.apply(m, stepRejoinDelivery(m.proc.state, ev, policy));
  }

  private async apply(m: Machine, step: Step<DeferredDeliveryState> | Step<RejoinState>): Promise<void> {
    if (m.proc.kind === "registration") {
      m.proc.state = step.state as DeferredDeliveryState;
      this.claims = applyClaim(this.claims, m.key, "registration", step.claim);
    } else {
      m.proc.state = step.state as RejoinState;
      this.claims = rejoinClaims(this.claims, m.proc.state, step.claim);
    }
    const fields = this.fields(m);
    for (const note of step.notes) this.deps.log.info(note, fields);
    if (step.error) this.deps.log.warn("delivery event refused", { ...fields, reason: step.error.detail });
    for (const action of step.actions) {
      try {
        await this.execute(m, action);
      } catch (err) {
        this.deps.log.error("delivery action failed", { ...fields, action: action.kind, reason: String(err) });
      }
    }
    if (step.claim === undefined) {
      this.dispose(m, "delivery over");
      this.machines.delete(m.id);
      await this.settleIfEmpty(m);
      if (m.client) await this.markDelivering(m, undefined);
    }
  }

  /** The record learns that `m`'s delivery runs (`to`) or ended; a failure costs only its resumption after a crash. */
  private async markDelivering(m: Machine, to: { contact: string; instanceId?: string } | undefined): Promise<void> {
    const d = m.proc.state.delivery;
    try {
      await this.deps.delivering?.(d.servedUser, d.session.conversationId, d.session.contributionId, d.device, to, m.lease);
    } catch (err) {
      this.deps.log.warn(to ? "delivery not recorded as under way (not resumed after a crash)" : "end of the delivery not recorded", {
        ...this.fields(m),
        reason: err instanceof CpmError ? err.detail : String(err),
      });
    }
  }

  /**
   * DD-1 / DD-10 across a crash (delivery.resumeInterrupted): the
   * registrations' deliveries the records say were under way, and that no
   * delivery here runs, start again to the same contacts, each behind what
   * its device confirmed, as if the device had registered again: after this
   * sidecar's restart, and (several sidecars, main.ts's scan) once the slot of a
   * holder that died lapsed; one whose slot a live sidecar holds is left to
   * it. Resolves with how many deliveries started.
   */
  async resumeInterrupted(): Promise<number> {
    if (this.closed || this.resuming) return 0;
    this.resuming = true;
    try {
      const deviceKey = (servedUser: string, keyword: string) => `${userKey(servedUser)} ${keyword}`;
      const running = new Set(
        [...this.machines.values()].map((m) => deviceKey(m.proc.state.delivery.servedUser, m.proc.state.delivery.device)),
      );
      const byDevice = new Map<
        string,
        { servedUser: string; keyword: string; client: { contact: string; instanceId?: string }; records: GroupSession[] }
      >();
      for (const s of this.deps.sessions.all()) {
        for (const dev of s.devices ?? []) {
          const to = dev.delivering;
          if (!to || running.has(deviceKey(s.servedUser, dev.keyword))) continue;
          if (typeof to.contact !== "string" || to.contact === "" || (to.instanceId !== undefined && typeof to.instanceId !== "string")) {
            // a record another writer (or a bug) left malformed: its data stays for the device's next REGISTER
            this.deps.log.warn("interrupted delivery in the record is unusable: not resumed", {
              servedUser: s.servedUser,
              callId: s.key,
              device: dev.keyword,
            });
            continue;
          }
          // each delivery goes on where it went (a device's contact may have changed between two of them)
          const key = `${deviceKey(s.servedUser, dev.keyword)} ${to.contact}`;
          const client = { contact: to.contact, ...(to.instanceId ? { instanceId: to.instanceId } : {}) };
          const entry = byDevice.get(key) ?? { servedUser: s.servedUser, keyword: dev.keyword, client, records: [] };
          entry.records.push(s);
          byDevice.set(key, entry);
        }
      }
      let started = 0;
      for (const { servedUser, keyword, client, records } of byDevice.values()) {
        const fields = { servedUser, contact: client.contact };
        try {
          const r = await this.startFor(servedUser, client, "resumed", undefined, new Set(records.map(recordIdOf)));
          started += r.deliveries;
          if (r.deliveries > 0) {
            this.deps.log.info("deferred delivery resumed: the record says it was under way and nobody ran it", {
              ...fields,
              deliveries: r.deliveries,
            });
            continue;
          }
          this.deps.log.debug("interrupted delivery not resumed here", { ...fields, notes: r.notes });
          // this sidecar would have run it and nothing is pending for the device: the mark is stale (its end was not written)
          if (!this.deps.ownership || this.deps.ownership.holds(servedUser)) {
            for (const rec of records) {
              await this.deps.delivering?.(servedUser, rec.conversationId, rec.contributionId, keyword, undefined);
            }
          }
        } catch (err) {
          this.deps.log.error("interrupted delivery not resumed", { ...fields, reason: String(err) });
        }
      }
      return started;
    } finally {
      this.resuming = false;
    }
  }

  private async rebuild(servedUser: string, conversationId: string, contributionId: string): Promise<GroupSession | undefined> {
    try {
      return await this.deps.rebuild?.(servedUser, conversationId, contributionId);
    } catch (err) {
      const reason = err instanceof CpmError ? err.detail : String(err);
      this.deps.log.warn("group session record not rebuilt: data kept", { servedUser, conversationId, contributionId, reason });
      return undefined;
    }
  }

  /** Tells the record when the delivery left its queue empty (nothing pending: retention may retire it). */
  private async settleIfEmpty(m: Machine): Promise<void> {
    const d = m.proc.state.delivery;
    // the queue as a whole (every device's view)
    const ref = queueRef(d.servedUser, d.session);
    const metrics = this.deps.metrics ?? noMetrics;
    try {
      await this.retired(m);
      // what the other devices got too, or what aged out (delivery.deviceRetentionMs), leaves now
      await this.sweep(d.servedUser, d.session, d.device);
      if ((await this.deps.queue.read(ref, 1)).length > 0) {
        metrics.delivery("data-kept", undefined);
        return;
      }
      metrics.delivery("emptied", (performance.now() - m.startedAt) / 1000);
      await this.deps.queueSettled(d.servedUser, d.session.conversationId, d.session.contributionId, m.lease);
    } catch (err) {
      metrics.delivery("unchecked", undefined);
      this.deps.log.warn("deferred queue not checked after the delivery", { ...this.fields(m), reason: String(err) });
    }
  }

  /**
   * Several sidecars: a registration's delivery runs while this sidecar
   * holds the served user's slot. Once the lease is lost (lapsed while this
   * process did not run, or another sidecar has the slot) it stands down at
   * once: its MSRP leg closed (nothing more goes out), the delivery session
   * ended, what was not confirmed left in the queue for the new owner.
   */
  private ownsDelivery(m: Machine): boolean {
    const own = this.deps.ownership;
    if (!own || m.proc.kind !== "registration" || m.standingDown) return true;
    if (own.holds(m.proc.state.delivery.servedUser)) return true;
    this.standDown(m, "slot lease lost");
    return false;
  }

  private standDown(m: Machine, why: string): void {
    if (m.standingDown) return;
    m.standingDown = true;
    this.deps.log.warn("slot lease lost: this sidecar's delivery stops, the rest stays queued for the slot's new owner", {
      ...this.fields(m),
      why,
    });
    m.leg?.close(why);
    this.feed(m, { type: "superseded" });
  }

  private async execute(m: Machine, a: DeliveryAction): Promise<void> {
    const { queue, ua } = this.deps;
    // what would reach the client or read the queue for it: only while the slot is ours
    if (
      (a.kind === "sendInvite" || a.kind === "readDeferred" || a.kind === "deliverInOrder" || a.kind === "sendGso") &&
      !this.ownsDelivery(m)
    ) {
      return;
    }
    switch (a.kind) {
      case "sendInvite":
        return this.sendInvite(m, a.invite).catch((err) => {
          // no INVITE went out (no media leg, unusable offer): the procedure decides (DD-9)
          const reason = err instanceof CpmError ? err.detail : String(err);
          this.deps.log.warn("delivery INVITE not sent", { ...this.fields(m), reason });
          this.feed(m, { type: "actionUnavailable", action: a, reason });
        });
      case "sendAck":
        if (m.dialog) ua.ack(m.dialog);
        return;
      case "cancelInvite":
        m.invite?.cancel();
        return;
      case "abandonInvite": {
        // sendInvite's handlers see that it is no longer the machine's INVITE
        const stale = m.invite;
        m.invite = undefined;
        if (stale) {
          this.byCallId.delete(stale.callId);
          stale.cancel();
        }
        return;
      }
      case "readDeferred": {
        // a re-join's first read: what the device confirmed before a crash is marked first (a registration did it in startFor)
        const first = m.proc.kind === "rejoin" && !m.confirmedMarked;
        m.confirmedMarked = true;
        const d = m.proc.state.delivery;
        const ready = first ? this.markConfirmed(d.servedUser, d.device, d.session) : Promise.resolve(false);
        // beside the removal running behind: the cursor keeps a read above what the delivery took
        void ready
          .then(() => queue.read(a.queue, a.limit, a.after))
          .then(
            (records) => this.feed(m, { type: "itemsRead", items: this.readable(m, records), at: new Date() }),
            (err) => this.feed(m, { type: "readFailed", reason: err instanceof CpmError ? err.detail : String(err) }),
          );
        return;
      }
      case "deliverInOrder":
        // DD-10: the leg keeps call order on the wire (pipelined up to media.deliveryWindow)
        for (const item of a.items) this.deliver(m, item);
        return;
      case "ackDeferred":
        this.keepThrough(m, a.handles);
        this.retire(m, a.handles);
        return;
      case "discardDeferred": {
        // DD-8 / DD-14: this device's view (a.queue.device); the user's other devices still get theirs
        await this.retired(m);
        const d = m.proc.state.delivery;
        const device = a.queue.device ?? d.device;
        const marks = await queue.discardFor(a.queue, device);
        await this.retireDecided(d.servedUser, d.session, device, marks, device);
        return;
      }
      case "sendGso": {
        // awaited: what follows (e.g. the end of the delivery session) comes after it
        const status = m.leg ? await m.leg.send({ contentType: a.contentType, body: Buffer.from(a.body) }) : 481;
        if (status !== 200) this.deps.log.warn("GSO not delivered", { ...this.fields(m), status });
        return;
      }
      case "scheduleRetry":
        m.retry = setTimeout(() => {
          m.retry = undefined;
          const session = this.deps.sessions.get(m.sessionKey);
          this.feed(m, session ? { type: "retryTimer", session } : { type: "retryTimer" });
        }, a.delayMs);
        m.retry.unref();
        return;
      case "byeToClient":
        await this.retired(m);
        if (m.dialog) await ua.bye(m.dialog, [["Reason", a.reason]]).catch(() => 0);
        m.leg?.close("BYE to the client");
        return;
      case "negativeDeliveryImdn":
        await this.negativeDeliveryImdn(m, a.msrpMessageId);
        return;
      case "msrpFailureReport":
        // RJ-4 / DD-13: the client's SEND cannot reach the group
        if (!m.leg?.failureReport(a.msrpMessageId, a.status)) {
          this.deps.log.info("no failure REPORT for a client SEND (unknown, or Failure-Report: no)", {
            ...this.fields(m),
            msrpMessageId: a.msrpMessageId,
          });
        }
        return;
      case "handleAsBye":
        // the client's BYE was answered when it came (onClientRequest); joined: 8.2.2.3 towards the CF too
        m.leg?.close("client BYE");
        if (a.towardsFocus) await this.executeOnGroup(m, { kind: "sendByeToFocus", sessionKey: m.sessionKey, reason: a.reason });
        return;
      case "supersedeRegistrationDelivery": {
        // RJ-1: the registration machine of the same session stands down (CANCEL or BYE of its delivery session)
        const superseded = this.machines.get(`registration ${a.key}`);
        if (superseded) this.feed(superseded, { type: "superseded" });
        return;
      }
      case "acceptRejoin":
        return this.acceptRejoin(m).catch((err) => {
          const reason = err instanceof CpmError ? err.detail : String(err);
          this.deps.log.warn("re-join not accepted", { ...this.fields(m), reason });
          this.feed(m, { type: "actionUnavailable", action: a, reason });
        });
      case "rejoinConference":
      case "leaveConference":
      case "joinGroupDialog":
      case "forwardToFocus":
      case "restartGroupSession":
        return this.executeOnGroup(m, a);
      case "sendByeToFocus":
      case "releaseMedia":
      case "unsubscribeConference":
        return this.executeOnGroup(m, a);
      // on the group session's dialog towards the CF (DD-12, DD-13): no
      // executor here; the procedure decides what follows (actionUnavailable)
      default:
        this.unexecuted(m, a);
    }
  }

  /** The machine's MSRP endpoint towards the client: its events go to the procedure. */
  private useLeg(m: Machine, leg: DeliveryLeg): void {
    m.leg = leg;
    leg.on("up", () => this.feed(m, { type: "msrpUp" }));
    leg.on("clientSend", (info) => {
      m.clientSends.set(info.msrpMessageId, { contentType: info.contentType, body: info.body });
      const media = { msrpMessageId: info.msrpMessageId, kind: info.kind, failureReport: info.failureReport };
      this.feed(m, { type: "clientSentMedia", media: negativeDeliveryOf(info) ? { ...media, negativeDelivery: true } : media });
    });
    leg.on("closed", (reason) => this.deps.log.info("delivery leg closed", { ...this.fields(m), reason }));
  }

  /**
   * RJ-1: the client's re-join INVITE, relayed to the UA by Kamailio because
   * ObserveSession answered answer_by_pf (rejoinTarget). The procedure
   * (rejoin-delivery.ts) claims the delivery and answers the INVITE with the
   * PF's MSRP endpoint; one it does not take (a race: another re-join holds
   * the claim, the record went) gets 480 with Retry-After: ObserveSession
   * then leaves the next attempt to the focus (8.2.2.7). Several sidecars:
   * only the holder of the served user's slot takes it; another gets 480
   * too, and the next attempt is routed to the holder.
   */
  private onRejoin(invite: UaIncomingInvite): void {
    const req = invite.request;
    const callId = header(req, "call-id") ?? "";
    const conversationId = header(req, "conversation-id") ?? "";
    const contributionId = header(req, "contribution-id") ?? "";
    const servedUser = servedUserOf(req);
    const fields = { servedUser, rejoinCallId: callId, conversationId, contributionId };
    if (this.closed || !servedUser) {
      invite.reject(this.closed ? 503 : 400, this.closed ? "Service Unavailable" : "Bad Request");
      return;
    }
    const rejoin = { invite, servedUser, callId, conversationId, contributionId };
    const own = this.deps.ownership;
    if (!own) {
      this.startRejoin(rejoin);
      return;
    }
    // several sidecars: the slot's holder only (ObserveSession routed the INVITE to it; the lease may have moved since)
    own.owner(servedUser).then(
      (o) => {
        if (o.self) {
          this.startRejoin(rejoin, o.lease);
          return;
        }
        this.deps.log.warn("re-join for a slot another sidecar holds: 480, the next attempt is routed to it", {
          ...fields,
          owner: o.holder,
        });
        invite.reject(480, "Temporarily Unavailable", [["Retry-After", "1"]]);
      },
      (err: unknown) => {
        this.deps.log.warn("re-join: the owner of the served user's slot is unknown: 480", { ...fields, reason: String(err) });
        invite.reject(480, "Temporarily Unavailable", [["Retry-After", "1"]]);
      },
    );
  }

  private startRejoin(
    r: { invite: UaIncomingInvite; servedUser: string; callId: string; conversationId: string; contributionId: string },
    lease?: OwnerLease,
  ): void {
    const { invite, servedUser, callId, conversationId, contributionId } = r;
    const req = invite.request;
    const fields = { servedUser, rejoinCallId: callId, conversationId, contributionId };
    const session = this.deps.sessions.findByIds(servedUser, conversationId || contributionId, contributionId || conversationId);
    // the re-joining device: its Contact's +sip.instance (none: the anonymous device)
    const instanceId = contactInstance(req) || undefined;
    const start = startRejoinDelivery(
      { type: "rejoinInvite", servedUser, clientCallId: callId, session, ...(instanceId ? { instanceId } : {}) },
      this.claims,
      this.deps.policy,
    );
    this.claims = start.claims;
    for (const note of start.notes) this.deps.log.info(note, fields);
    if (!start.state) {
      this.deps.log.warn("re-join not taken by the PF: 480, the next attempt goes to the focus", fields);
      invite.reject(480, "Temporarily Unavailable", [["Retry-After", "1"]]);
      return;
    }
    if (session) void this.deviceSeen(servedUser, session, deviceOf(instanceId), lease);
    const m = this.newMachine({ kind: "rejoin", state: start.state });
    // its record writes carry the lease (refused once another sidecar has the slot)
    if (lease) m.lease = lease;
    m.rejoin = invite;
    this.byCallId.set(callId, m.id);
    this.deps.log.info("re-join: deferred delivery started in the client's own session (RJ-1)", fields);
    const first: Step<RejoinState> = { state: start.state, actions: start.actions, notes: [], claim: this.claims.get(m.key) };
    m.chain = m.chain.then(() => this.apply(m, first));
  }

  /** RJ-1: 200 OK to the re-join with the PF's MSRP answer; the Contact names the focus (RFC 4579 3.4), as the client re-joined it. */
  private async acceptRejoin(m: Machine): Promise<void> {
    const invite = m.rejoin;
    if (!invite) throw new CpmError("CPM_ERR_INTERNAL", "no re-join INVITE to accept");
    m.rejoin = undefined;
    try {
      const { leg, answerSdp } = await this.deps.answerLeg(m.sessionKey, sdpOf(invite.request, "re-join INVITE"));
      this.useLeg(m, leg);
      const focus = m.proc.state.delivery.session.focusUri;
      m.dialog = invite.accept(
        [
          ["Contact", `<${focus}>;isfocus;${icsiRefParam(CPM_SESSION_ICSI)}`],
          ["Accept-Contact", acceptContactFor(CPM_SESSION_ICSI)],
          ["Content-Type", SDP],
        ],
        answerSdp,
      );
    } catch (err) {
      const e = err instanceof CpmError ? err : new CpmError("CPM_ERR_INTERNAL", String(err));
      invite.reject(
        e.code === "CPM_ERR_BAD_SDP" ? 488 : 500,
        e.code === "CPM_ERR_BAD_SDP" ? "Not Acceptable Here" : "Server Internal Error",
      );
      m.leg?.close("re-join not accepted");
      throw err;
    }
    const dialog = m.dialog;
    void invite.acked.then(async (acked) => {
      if (acked) return;
      // RFC 3261 13.3.1.4: no ACK, the session ends; what was not delivered stays queued
      this.deps.log.warn("no ACK for the 2xx to the re-join: session ended", this.fields(m));
      const reason = 'SIP;cause=408;text="No ACK"';
      await this.deps.ua.bye(dialog, [["Reason", reason]]).catch(() => 0);
      this.clientBye(m, [reason]);
    });
  }

  /** The client's BYE on `m`'s delivery session, with whether another device's delivery session is joined with the same group session. */
  private clientBye(m: Machine, reasons: string[]): void {
    const id = recordIdOf(m.proc.state.delivery.session);
    const othersJoined = [...this.machines.values()].some(
      (o) =>
        o !== m &&
        o.proc.state.delivery.joined &&
        o.proc.state.delivery.phase !== "ended" &&
        recordIdOf(o.proc.state.delivery.session) === id,
    );
    this.feed(m, { type: "clientBye", reasons, ...(othersJoined ? { othersJoined } : {}) });
  }

  /** DD-2..DD-6 as rendered by the procedure; the SDP part is the PF's own delivery leg (DD-6 a=sendrecv kept). */
  private async sendInvite(m: Machine, invite: DeliveryInvite) {
    // an attempt made before its retry's time (registeredAgain): that timer is spent
    clearTimeout(m.retry);
    m.retry = undefined;
    m.leg?.close("new delivery attempt");
    const { leg, offerSdp } = await this.deps.openLeg(m.sessionKey, invite.sdp);
    this.useLeg(m, leg);
    const contentType = invite.headers.find(([n]) => n.toLowerCase() === "content-type")?.[1];
    const body = replaceBodyPart(contentType, Buffer.from(invite.body), SDP, Buffer.from(offerSdp));
    if (!body) throw new CpmError("CPM_ERR_INTERNAL", "delivery INVITE without an SDP part");
    // TS 24.229 5.7.3, RFC 7315 4.6: an AS originating a request generates its own ICID
    const charging: [string, string] = ["P-Charging-Vector", `icid-value=${randomBytes(12).toString("hex")}`];
    const headers = [
      ...invite.headers.filter(([n]) => n.toLowerCase() !== "content-type"),
      charging,
      ...invite.headers.filter(([n]) => n.toLowerCase() === "content-type"),
    ];
    const sent = this.deps.ua.invite(
      { requestUri: invite.requestUri, route: invite.route, headers, body: body.toString("utf8") },
      (status) => this.feedFrom(m, sent, () => ({ type: "inviteResponse", status })),
    );
    m.invite = sent;
    this.byCallId.set(sent.callId, m.id);
    const ring = setTimeout(() => sent.cancel(), INVITE_RING_MS);
    ring.unref();
    void sent.outcome.finally(() => clearTimeout(ring)).catch(() => undefined);
    this.deps.log.info("delivery INVITE sent", { ...this.fields(m), requestUri: invite.requestUri, deliveryCallId: sent.callId });
    sent.outcome.then(
      (o) =>
        this.feedFrom(
          m,
          sent,
          () => {
            const status = o.status;
            let answerUnusable: string | undefined;
            if (status >= 200 && status < 300 && o.dialog) {
              m.dialog = o.dialog;
              try {
                leg.applyAnswer(sdpOf(o.response, "2xx to the delivery INVITE"));
              } catch (err) {
                answerUnusable = err instanceof CpmError ? err.detail : String(err);
                this.deps.log.warn("delivery answer unusable", { ...this.fields(m), reason: answerUnusable });
              }
            } else if (status >= 300) leg.close(`INVITE answered ${status}`);
            return answerUnusable === undefined ? { type: "inviteResponse", status } : { type: "inviteResponse", status, answerUnusable };
          },
          () => this.abandoned(m, sent.callId, o, leg),
        ),
      (err) => {
        leg.close("INVITE failed");
        this.feedFrom(
          m,
          sent,
          () => {
            this.deps.log.warn("delivery INVITE failed", { ...this.fields(m), reason: String(err) });
            return { type: "inviteResponse", status: 408 };
          },
          () => this.deps.log.info("dropped delivery INVITE ended unanswered", { ...this.fields(m), deliveryCallId: sent.callId }),
        );
      },
    );
  }

  /**
   * An answer to the INVITE `sent`, taken in the machine's turn: the event
   * `make` returns while it is still the machine's INVITE; `dropped` once an
   * abandonInvite before it in the turn order dropped that INVITE.
   */
  private feedFrom(m: Machine, sent: object, make: () => DeferredDeliveryEvent, dropped?: () => void): void {
    m.chain = m.chain.then(() => {
      if (m.invite !== sent) return dropped?.();
      return this.step(m, make());
    });
  }

  /** The final answer to a delivery INVITE the machine dropped (abandonInvite): a dialog it made is ended at once (RFC 3261 15). */
  private abandoned(m: Machine, callId: string, o: { status: number; dialog?: UaDialog }, leg: DeliveryLeg): void {
    leg.close("INVITE dropped");
    this.deps.log.info("answer to a dropped delivery INVITE", { ...this.fields(m), deliveryCallId: callId, status: o.status });
    if (o.status >= 300 || !o.dialog) return;
    const ua = this.deps.ua;
    ua.ack(o.dialog);
    void ua.bye(o.dialog, [["Reason", CALL_COMPLETED]]).catch(() => 0);
  }

  /**
   * The record learns how far the device confirmed (one write at a time, the
   * newest position next): a delivery that takes over after a crash marks
   * those items instead of sending them again, whatever marks the store got.
   */
  private keepThrough(m: Machine, handles: readonly DeferredHandle[]): void {
    const r = itemsConfirmed(m.prefix, handles);
    m.prefix = r.prefix;
    if (!r.moved || !this.deps.deviceDelivered) return;
    if (m.keeping) {
      m.keepAgain = true;
      return;
    }
    const write = this.deps.deviceDelivered;
    const run = async () => {
      do {
        m.keepAgain = false;
        const d = m.proc.state.delivery;
        const through = { uidValidity: m.prefix.uidValidity as string, uid: m.prefix.through };
        await write(d.servedUser, d.session.conversationId, d.session.contributionId, d.device, through, m.lease).catch((err) => {
          // another sidecar has the slot: this delivery is not ours any more
          if (err instanceof CpmError && err.code === "CPM_ERR_RECORD_FENCED") return this.standDown(m, "record write fenced");
          // the marks still say it (at-least-once: a takeover may send these again)
          this.deps.log.warn("delivered position not kept in the record", { ...this.fields(m), uid: through.uid, reason: String(err) });
        });
      } while (m.keepAgain);
    };
    m.keeping = run().finally(() => {
      m.keeping = undefined;
    });
  }

  /**
   * Removes confirmed items from the queue (ackDeferred) behind the delivery,
   * not in its way: the SENDs and the machine's events go on meanwhile, and
   * the sets that come while one is being removed go together in the next
   * UID EXPUNGE (or UID MOVE). A discard and the BYE wait for it (retired());
   * a read does not: it starts above what the delivery took.
   */
  private retire(m: Machine, handles: readonly DeferredHandle[]): void {
    m.toRetire.push(...handles);
    this.startRetiring(m);
  }

  private startRetiring(m: Machine): void {
    if (m.retiring || m.toRetire.length === 0) return;
    // the handler runs after the assignment below (promise reactions are asynchronous)
    m.retiring = this.retireAll(m).finally(() => {
      m.retiring = undefined;
      this.startRetiring(m);
    });
  }

  private async retireAll(m: Machine): Promise<void> {
    while (m.toRetire.length > 0) {
      const handles = m.toRetire.splice(0);
      const d = m.proc.state.delivery;
      try {
        // DD-1 per device: marked as this device's; what every member device has leaves the queue
        const marks = await this.deps.queue.mark(handles, d.device);
        await this.retireDecided(d.servedUser, d.session, d.device, marks, d.device);
      } catch (err) {
        // not marked: delivered again to this device by its next delivery (at-least-once)
        this.deps.log.error("delivery action failed", { ...this.fields(m), action: "ackDeferred", reason: String(err) });
      }
      for (const h of handles) m.bodies.delete(itemId(h));
    }
  }

  /**
   * Removes the items device-view.ts says leave the queue (every member got
   * them, or retention); `confirmedBy`: the device that just confirmed them
   * (an item its mark did not stick on leaves too, as before per device).
   * Resolves with how many left.
   */
  private async retireDecided(
    servedUser: string,
    session: GroupSession,
    device: string,
    marks: readonly DeferredMarks[],
    confirmedBy?: string,
  ): Promise<number> {
    if (marks.length === 0) return 0;
    const record = this.deps.sessions.findByIds(servedUser, session.conversationId, session.contributionId) ?? session;
    const now = Date.now();
    const retention = this.deps.policy.deviceRetentionMs;
    const members = memberKeywords(record, device, now, retention);
    const r = retirable(marks, members, now, retention, confirmedBy);
    const fields = { servedUser, callId: session.key, conversationId: session.conversationId, device, members: members.length };
    if (r.unmarked > 0) {
      this.deps.log.warn("device mark not kept by the store (no new keyword allowed): items removed as for one device", {
        ...fields,
        unmarked: r.unmarked,
      });
    }
    if (r.retire.length === 0) return 0;
    // 8.5.2: where the session is recorded, delivered items join the group session's folder (the user's other devices sync them)
    const moveTo = this.deps.retireFolder?.(record);
    const removed = await this.deps.queue.ack(r.retire, moveTo ? { moveTo } : {});
    this.deps.log.debug("deferred items retired", { ...fields, retired: removed, kept: r.kept });
    return removed;
  }

  /** What leaves the session's queue now (members got it, or retention), whoever confirmed it; resolves with how many items left. */
  private async sweep(servedUser: string, session: GroupSession, device: string): Promise<number> {
    try {
      const marks = await this.deps.queue.marks(queueRef(servedUser, session));
      return await this.retireDecided(servedUser, session, device, marks);
    } catch (err) {
      const reason = err instanceof CpmError ? err.detail : String(err);
      this.deps.log.warn("deferred queue not swept", { servedUser, callId: session.key, conversationId: session.conversationId, reason });
      return 0;
    }
  }

  /** The record learns the device (a member of its pending data); a failure costs that device's membership only. */
  private async deviceSeen(servedUser: string, session: GroupSession, device: Device, lease?: OwnerLease): Promise<void> {
    try {
      await this.deps.deviceSeen?.(servedUser, session.conversationId, session.contributionId, device.keyword, lease);
    } catch (err) {
      this.deps.log.warn("device not recorded as a member of the pending data", {
        servedUser,
        callId: session.key,
        device: device.keyword,
        reason: String(err),
      });
    }
  }

  /**
   * DD-10 after a takeover (another sidecar, or this one restarted): the
   * items a device confirmed up to the position its record keeps, which a
   * crash left unmarked, are marked as its own (and leave the queue if every
   * member has them) instead of being sent again. Resolves true when it
   * marked any. A failure costs nothing but a second copy of those items.
   */
  private async markConfirmed(servedUser: string, keyword: string, pending: GroupSession, lease?: OwnerLease): Promise<boolean> {
    const session = this.deps.sessions.findByIds(servedUser, pending.conversationId, pending.contributionId) ?? pending;
    const through = deliveredThroughOf(session.devices, keyword);
    if (!through) return false;
    try {
      const marks = await this.deps.queue.markThrough(queueRef(servedUser, session), keyword, through);
      // none unmarked: no crash came between the confirmations and their marks
      if (marks.length === 0) return false;
      const removed = await this.retireDecided(servedUser, session, keyword, marks, keyword);
      this.deps.log.info("items the device confirmed before a crash marked, not sent again", {
        servedUser,
        callId: session.key,
        device: keyword,
        through: through.uid,
        marked: marks.length,
        retired: removed,
      });
      // that was all of it: the record learns the queue is empty (as at a delivery's end)
      if (removed > 0 && (await this.deps.queue.read(queueRef(servedUser, session), 1)).length === 0) {
        await this.deps.queueSettled(servedUser, session.conversationId, session.contributionId, lease);
      }
      return true;
    } catch (err) {
      const reason = err instanceof CpmError ? err.detail : String(err);
      this.deps.log.warn("confirmed items not marked: they may be sent again", { servedUser, callId: session.key, reason });
      return false;
    }
  }

  /** Resolves once no confirmed item waits to be removed. */
  private async retired(m: Machine): Promise<void> {
    while (m.retiring) await m.retiring;
  }

  /** Records the queue handed back become items; an object the queue cannot read is left where it is (never lost) and not sent. */
  private readable(m: Machine, records: DeferredRecord[]): PendingItem[] {
    const items: PendingItem[] = [];
    // an unreadable one too: never confirmed, the kept position stops before it
    m.prefix = itemsRead(
      m.prefix,
      records.map((r) => r.handle),
    );
    for (const r of records) {
      if (!r.item) {
        this.deps.log.warn("deferred object unreadable: kept, not delivered", { ...this.fields(m), uid: r.handle.uid, reason: r.error });
        continue;
      }
      const b = r.item.body;
      // the item's body is its own (read from the object), sent as it is
      m.bodies.set(itemId(r.handle), {
        contentType: r.item.contentType,
        body: Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength),
      });
      items.push({ handle: r.handle, kind: r.item.kind, msrpMessageId: r.item.msrpMessageId });
    }
    return items;
  }

  private deliver(m: Machine, item: PendingItem): void {
    const body = m.bodies.get(itemId(item.handle));
    if (!m.leg || !body) {
      this.feed(m, { type: "itemFailed", handle: item.handle, status: 481 });
      return;
    }
    m.leg.send(body).then(
      (status) =>
        this.feed(m, status === 200 ? { type: "itemDelivered", handle: item.handle } : { type: "itemFailed", handle: item.handle, status }),
      () => this.feed(m, { type: "itemFailed", handle: item.handle, status: 408 }),
    );
  }

  /**
   * Requests relayed by Kamailio to the PF's UA: the client's in a delivery
   * dialog; the focus's NOTIFYs on the PF's conference subscriptions go to
   * those (RFC 6665 4.1.3: 481 for no such subscription).
   */
  private onClientRequest(
    req: SipMessage,
    reply: (status: number, reason: string, headers?: [string, string][], body?: string) => void,
  ): void {
    if (req.method === "NOTIFY") {
      if (this.deps.subscriptions) this.deps.subscriptions.onNotify(req, reply);
      else reply(481, "Subscription Does Not Exist");
      return;
    }
    const key = this.byCallId.get(header(req, "call-id") ?? "");
    const m = key ? this.machines.get(key) : undefined;
    if (req.method === "ACK") return;
    if (!m && req.method === "UPDATE" && this.deps.refresh) {
      this.deps.refresh.onUpdate(req, reply);
      return;
    }
    if (!m && req.method === "BYE" && this.deps.devices?.onBye(req, reply)) return;
    if (!m && req.method === "BYE" && this.deps.refresh?.takesBye(header(req, "call-id") ?? "")) {
      // the CF's BYE on a dialog whose refreshes the PF answered, HandleBye already decided on the way
      reply(200, "OK");
      return;
    }
    if (!m) {
      reply(481, "Call/Transaction Does Not Exist");
      return;
    }
    if (req.method === "BYE" && m.restartCallId === header(req, "call-id")) {
      // 8.3.2.3 on the re-started group session's dialog: decided as a network BYE (its GSO, the lifecycle,
      // the joined delivery session's BYE through groupEnded); the CF gets its 200 at once
      reply(200, "OK");
      m.restartCallId = undefined;
      this.deps.group?.ended(header(req, "call-id") ?? "");
      const raw = serializeRequest(
        req.method,
        req.requestUri,
        req.headers.map((h): [string, string] => [h.name, h.value]),
        req.body.toString("utf8"),
      );
      void this.deps
        .networkBye?.(raw)
        .catch((err) => this.deps.log.error("BYE on the re-started group session not decided", { ...this.fields(m), reason: String(err) }));
      return;
    }
    if (req.method === "BYE") {
      // DD-14: handled as a BYE (8.2.2.3): answered, then the machine decides on the queue
      reply(200, "OK");
      this.clientBye(m, headerValues(req, "reason"));
      return;
    }
    reply(501, "Not Implemented");
  }

  private dispose(m: Machine, reason: string): void {
    if (m.retry) clearTimeout(m.retry);
    m.retry = undefined;
    m.leg?.close(reason);
    if (m.invite) this.byCallId.delete(m.invite.callId);
    if (m.dialog) this.byCallId.delete(m.dialog.callId);
    if (m.restartCallId) this.byCallId.delete(m.restartCallId);
    // disposed before the re-join was answered (shutdown): the client tries again later
    m.rejoin?.reject(503, "Service Unavailable");
    m.rejoin = undefined;
  }

  /** DD-8 ii: the group session's own actions, in the order the procedure gave them. */
  private async executeOnGroup(
    m: Machine,
    a: Extract<
      DeliveryAction,
      {
        kind:
          | "sendByeToFocus"
          | "releaseMedia"
          | "unsubscribeConference"
          | "rejoinConference"
          | "leaveConference"
          | "joinGroupDialog"
          | "forwardToFocus"
          | "restartGroupSession";
      }
    >,
  ): Promise<void> {
    const group = this.deps.group;
    if (!group) return this.unexecuted(m, a);
    try {
      switch (a.kind) {
        case "restartGroupSession": {
          if (!m.leg) throw new CpmError("CPM_ERR_NOT_FOUND", "no delivery leg for the re-started group session");
          const d = m.proc.state.delivery;
          const r = await group.restart({
            servedUser: d.servedUser,
            session: d.session,
            restart: a.restart,
            client: m.leg.asJoinedClient(),
          });
          if (r.callId) {
            m.restartCallId = r.callId;
            this.byCallId.set(r.callId, m.id);
          }
          // the answer to this attempt (focus or factory): the procedure decides on a factory step
          this.feed(m, {
            type: "restartResponse",
            via: a.restart.via,
            status: r.status,
            reasonPhrase: r.reasonPhrase,
            ...(r.focusUri ? { focusUri: r.focusUri } : {}),
            at: new Date(),
          });
          return;
        }
        case "joinGroupDialog":
          // a re-started group session has the delivery session as its client side from its start
          if (m.restartCallId) {
            this.deps.log.info("delivery session joined with the re-started group session (DD-13)", this.fields(m));
            return;
          }
          return this.executeOnGroup(m, { ...a, kind: "rejoinConference" });
        case "rejoinConference":
          if (!m.leg) throw new CpmError("CPM_ERR_NOT_FOUND", "no delivery leg to join");
          await group.join(a.sessionKey, m.leg.asJoinedClient());
          this.deps.log.info("delivery session joined with the on-going group session (DD-12)", this.fields(m));
          return;
        case "leaveConference":
          if (m.leg) group.leave(a.sessionKey, m.leg.asJoinedClient());
          this.deps.log.info("joined delivery session left the group session; the user's other devices stay (BYE-B7)", this.fields(m));
          return;
        case "forwardToFocus":
          return this.forwardToFocus(m, a.msrpMessageIds);
        case "sendByeToFocus":
          await group.byeToFocus(a.sessionKey, a.reason);
          return;
        case "releaseMedia":
          this.deps.log.info("group session media released (DD-8 ii)", { ...this.fields(m), released: group.releaseMedia(a.sessionKey) });
          return;
        case "unsubscribeConference":
          if (!(await group.unsubscribe(a.sessionKey))) {
            this.deps.log.info("no conference subscription of the PF's own to end (DD-8 ii b)", { ...this.fields(m), focus: a.focusUri });
          }
          return;
      }
    } catch (err) {
      const reason = err instanceof CpmError ? err.detail : String(err);
      this.deps.log.warn("group session action failed", { ...this.fields(m), action: a.kind, reason });
      this.feed(m, { type: "actionUnavailable", action: a, reason });
    }
  }

  /**
   * DD-12 / RJ-5: the client's SENDs go on to the CF, in this order (each is
   * queued on the CF leg before the next); one the CF does not take gets a
   * failure REPORT with the CF's code where its Failure-Report asks (RJ-4).
   */
  private async forwardToFocus(m: Machine, ids: readonly string[]): Promise<void> {
    const group = this.deps.group as NonNullable<DeliveryServiceDeps["group"]>;
    const relayed = ids.map((id) => {
      const sent = m.clientSends.get(id);
      if (!sent) return Promise.resolve({ id, code: 481 });
      return group.relayToCf(m.restartCallId ?? m.sessionKey, { ...sent, messageId: id }).then((code) => ({ id, code }));
    });
    const sends = new Map(ids.map((id) => [id, m.clientSends.get(id)]));
    for (const id of ids) m.clientSends.delete(id);
    for (const { id, code } of await Promise.all(relayed)) {
      if (code === 200) continue;
      this.deps.log.info("client SEND not taken by the CF", { ...this.fields(m), msrpMessageId: id, status: code });
      m.leg?.failureReport(id, code);
      const sent = sends.get(id);
      if (sent) await this.negativeDeliveryImdn(m, id, sent);
    }
  }

  /** RJ-4: the "failed" IMDN (RFC 5438 7.2.1.1) for a message of the client's that asked for one, from the group, in the delivery session. */
  private async negativeDeliveryImdn(m: Machine, id: string, sent = m.clientSends.get(id)): Promise<void> {
    m.clientSends.delete(id);
    const cpim = sent && cpimOf(sent);
    const notification = cpim && negativeDeliveryNotification(cpim, m.proc.state.delivery.session.focusUri, new Date());
    if (!notification || !m.leg) return;
    const status = await m.leg.send({ contentType: "message/cpim", body: notification });
    this.deps.log.info("negative delivery notification sent (RJ-4)", { ...this.fields(m), msrpMessageId: id, status });
  }

  /** An action nothing here executes: an error, counted, and an event for the procedure. */
  private unexecuted(m: Machine, a: DeliveryAction): void {
    this.unexecutedActions.set(a.kind, (this.unexecutedActions.get(a.kind) ?? 0) + 1);
    this.deps.log.error("action with no executor", { ...this.fields(m), action: a.kind });
    this.feed(m, { type: "actionUnavailable", action: a, reason: "no executor" });
  }

  private fields(m: Machine) {
    const s = m.proc.state.delivery.session;
    return {
      deliveryKey: m.key,
      device: m.proc.state.delivery.device,
      callId: s.key,
      conversationId: s.conversationId,
      contributionId: s.contributionId,
    };
  }
}

/** A message/cpim the client sent, parsed; undefined for anything else or what does not parse (it goes on as it is). */
function cpimOf(sent: { contentType: string; body: Buffer }): CpimMessage | undefined {
  if (mediaType(sent.contentType) !== "message/cpim") return undefined;
  try {
    return parseCpim(sent.body);
  } catch {
    return undefined;
  }
}

/** RFC 5438 6.2: the client's message asked for a notification should it not be delivered. */
function negativeDeliveryOf(sent: { contentType: string; body: Buffer }): boolean {
  const cpim = cpimOf(sent);
  return cpim !== undefined && wantsNegativeDelivery(cpim);
}

/** The SDP of a message (alone or in a multipart body): the client's 2xx, or its re-join INVITE. */
function sdpOf(msg: SipMessage, what: string): string {
  const sdp = bodyParts(header(msg, "content-type"), msg.body).find((p) => p.contentType === SDP);
  if (!sdp) throw new CpmError("CPM_ERR_BAD_SDP", `${what} carries no SDP`);
  return sdp.body.toString("utf8");
}
