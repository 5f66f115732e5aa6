// The Participating Function: runs the pure procedures against the session
// table and carries out their actions (store the GSO, tell the media plane).
// Transport-neutral: src/grpc maps it to the cpm.pf.v1 contract.
import type { Config } from "../config/config.js";
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import type { MediaLeg, MediaPlane, Offerer } from "../media/media-plane.js";
import type { GroupSessionRef } from "../media/ports.js";
import { CALL_COMPLETED } from "../procedures/delivery-session.js";
import { deviceBye, forkedAnswer } from "../procedures/forked-devices.js";
import { type ByeAction, type ByeDecision, type ByeIdentity, chooseMode, handleBye } from "../procedures/handle-bye.js";
import { type LifecycleEvent, stepLifecycle } from "../procedures/lifecycle.js";
import { foldConferenceInfo } from "../session/conference.js";
import {
  type DeliveredThrough,
  dialogOf,
  type ForkedDevice,
  type GroupSession,
  isGroupActive,
  type Lifecycle,
  recordId,
  recordIdOf,
  type SessionDialog,
  userKey,
} from "../session/group-session.js";
import { contactInstance, dialogOfInvite, observe, servedUserOf } from "../session/observe.js";
import { rebuildRecord, type SessionDescriptor } from "../session/rebuild.js";
import type { Fence, SessionStore } from "../session/record-store.js";
import { PerRecord } from "../session/serial.js";
import { parseCSeq } from "../sip/cseq.js";
import { header, headerValues, parseSipMessage, type SipMessage } from "../sip/message.js";
import { bodyParts, replaceBodyPart } from "../sip/multipart.js";
import { parseNameAddr, tagOf } from "../sip/name-addr.js";
import { refuseRegistration } from "../sip/registration-trust.js";
import { ANONYMOUS_URI } from "../store/deferred-object.js";
import { groupSessionFolder } from "../store/folder.js";
import { buildGsoObject } from "../store/gso-object.js";
import type { ConferenceInfo } from "../xml/conference-info.js";
import type { GroupStateObject } from "../xml/gso.js";

/** What the PF needs of the Message Store (src/store/mailboxes.ts): owner = the served user, whose mailbox gets the object. */
export interface ObjectStore {
  append(obj: {
    owner: string;
    folder: string;
    raw: Buffer;
    messageId: string;
    /** The Message-ID identifies the object: one already in the folder or the spool is not stored again. */
    unique?: boolean;
    /** Spooled (durable) when the mailbox has not taken it this long after the call (ms). */
    budgetMs?: number;
  }): Promise<{ state: "stored" | "spooled"; folder: string; messageId: string; duplicate?: boolean }>;
  /** CREATEs the folder ahead of need (best effort: a failure only means the first append CREATEs it). */
  prepareFolder?(obj: { owner: string; folder: string }): Promise<void>;
}

export type GsoOutcome = { state: "not-required" } | { state: "stored" | "spooled"; folder: string; messageId: string };

export interface ByeResult extends ByeDecision {
  sessionKey: string;
  gso: GsoOutcome;
  /** Kamailio reports the clients' answer (ReportByeOutcome): what 2.d/2.f do waits for it. */
  reportOutcome: boolean;
  /** BYE-B7: Kamailio relays the BYE to the PF's UA, which holds further devices' dialogs (DeviceDialogs). */
  relayToUa: boolean;
}

export interface Envelope {
  raw: Uint8Array;
  source: string;
}

export interface ObserveResult {
  updated: boolean;
  sessionKey: string;
  participantCount: number;
  /** Initial INVITE of a CPM session (from the focus or the client), PF as B2BUA, media plane on: Kamailio must call anchorMedia. */
  anchorMedia: boolean;
  /** RJ-1: the client's re-join of a group session the PF holds data for: Kamailio relays it to the PF's UA, which answers it. */
  answerByPf: boolean;
  /** With answerByPf: the UA that answers (this sidecar's, or the served user's slot holder's); "" = Kamailio's CPM_PF_UA_ADDRESS. */
  uaAddress: string;
}

export interface AnchorMediaResult {
  sessionKey: string;
  /** The INVITE body towards the INVITE's recipient (the client(s), or the CF for a client-initiated session) and its Content-Type. */
  clientBody: Buffer;
  clientContentType: string;
  /** What the 2xx answer towards the INVITE's sender must carry (Kamailio rewrites it): the CF-facing leg, or the client-facing one for a client-initiated session. */
  cfLeg: MediaLeg;
}

export interface PfOptions {
  /** config media.enabled: the PF anchors MSRP of sessions where it is B2BUA. Default false. */
  anchorMedia?: boolean;
  /** 8.3.2.9.1.2 deferred delivery after registration (src/delivery); absent = off. */
  registrations?: RegistrationHandler;
  /** The session descriptors in the served users' mailboxes (src/store/session-descriptor.ts); absent = none written. */
  descriptors?: DescriptorStore;
  /** The CF's session refreshes on a dialog whose client leg is gone (src/delivery/session-refresh.ts); absent: relayed. */
  refreshes?: { answers(msg: SipMessage): boolean };
  /** Told of every lifecycle transition once it is written (the PF's own conference subscription follows them); must not throw. */
  lifecycleListener?: LifecycleListener;
  /** BYE-B7: the SIP UA's side of a forked INVITE's further devices (src/delivery/device-dialogs.ts); absent: their 2xx is an error. */
  devices?: ForkExecutor;
  /** This sidecar's UA as Kamailio reaches it (sip.advertisedAddress, config.ts uaAddress): named in the answers its UA takes. */
  uaAddress?: string;
}

/** Executes the forked-devices procedure's actions (src/procedures/forked-devices.ts) with the SIP UA and the media plane. */
export interface ForkExecutor {
  /** ackDevice / byeDevice on the dialog `callId` of `session`. */
  ack(session: GroupSession, callId: string, device: ForkedDevice): void;
  bye(session: GroupSession, callId: string, device: ForkedDevice, reason: string): void;
}

/** A record's lifecycle moved (`record`: the record after the event). */
export type LifecycleListener = (record: GroupSession, ev: LifecycleEvent, transition: { from: Lifecycle; to: Lifecycle }) => void;

/** What a conference-info document of the PF's own subscription did to the record. */
export interface ConferenceApplied {
  applied: boolean;
  notes: string[];
  participants?: number;
}

/** What the PF needs of the session descriptors: written with the first deferred item, read to rebuild a record, removed once the queue is settled. */
export interface DescriptorStore {
  write(session: GroupSession): Promise<void>;
  /** Removes the group session's descriptors; resolves with how many went. */
  remove(servedUser: string, conversationId: string, contributionId: string): Promise<number>;
  read(
    servedUser: string,
    conversationId: string,
    contributionId: string,
  ): Promise<{ descriptor: SessionDescriptor | undefined; latestGso: GroupStateObject | undefined }>;
}

/** What a 3rd-party REGISTER started (DD-1). */
export interface RegistrationResult {
  /** The notification was understood (served user and contact found). */
  accepted: boolean;
  /** Group sessions whose deferred data delivery started. */
  deliveries: number;
  notes: string[];
  /** DD-1 trust: Kamailio answers the REGISTER with this status (e.g. 403) instead of 200 OK. */
  rejectStatus?: number;
  rejectReason?: string;
}

export interface RegistrationHandler {
  /** DD-1: a 3rd-party REGISTER (TS 24.229 5.4.1.7) for the served user reached the PF. */
  onRegistration(env: Envelope): Promise<RegistrationResult>;
  /** 8.3.2.3: the CF ended the group session (`session`: the record after it); `reason` is what the served user's clients get. */
  groupEnded?(session: GroupSession, reason: string): void;
  /**
   * RJ-1: whether the PF's UA answers the client's re-join of `session`
   * itself (8.3.2.9.1.3): undefined when not; else the UA that does
   * (`ua` undefined: this sidecar's; several sidecars: the served user's slot holder's).
   */
  rejoinTarget?(session: GroupSession, instanceId: string | undefined): Promise<{ ua?: string } | undefined>;
}

const SDP = "application/sdp";

function sdpOf(msg: SipMessage, what: string): string {
  let parts: ReturnType<typeof bodyParts>;
  try {
    parts = bodyParts(header(msg, "content-type"), msg.body);
  } catch (err) {
    throw new CpmError("CPM_ERR_BAD_SDP", `${what}: unreadable body`, { cause: err });
  }
  const sdp = parts.find((p) => p.contentType === SDP);
  if (!sdp) throw new CpmError("CPM_ERR_BAD_SDP", `${what} carries no application/sdp`);
  return sdp.body.toString("utf8");
}

/** A further device's 2xx as the record keeps it (its tag, Contact, instance, route). */
function forkedDeviceOf(msg: SipMessage): ForkedDevice {
  const clientTag = tagOf(header(msg, "to"));
  if (!clientTag) throw new CpmError("CPM_ERR_BAD_SIP", "2xx without a To tag");
  let clientTarget: string;
  try {
    clientTarget = parseNameAddr(header(msg, "contact") ?? "").uri;
  } catch (err) {
    throw new CpmError("CPM_ERR_BAD_HEADER", "2xx Contact is malformed", { cause: err });
  }
  return { clientTag, clientTarget, clientInstance: contactInstance(msg), routeSet: headerValues(msg, "record-route"), state: "confirmed" };
}

/**
 * How long a decision's GSO waits for the mailbox before it is spooled: the
 * configured cap (store.gsoBudgetMs), and never more than half of what is
 * left until `answerBy`, when the caller stops waiting (the other half is
 * for the spool's fsync and the answer's way back). With several sidecars
 * the bridge gives the first one only part of its deadline.
 */
export function gsoBudgetMs(cap: number, answerBy: number | undefined, now = performance.now()): number {
  if (answerBy === undefined) return cap;
  return Math.max(0, Math.min(cap, Math.floor((answerBy - now) / 2)));
}

/** A BYE decision whose record write another writer overtook is made again from the fresh record, at most this often in all. */
const STALE_ATTEMPTS = 3;

function asReason(err: unknown): string {
  return err instanceof CpmError ? err.detail : String(err);
}

export class ParticipatingFunction {
  private readonly serial = new PerRecord();
  /** Actions no executor took (a bug: counted by kind, logged with their kind; cpmpf_unexecuted_actions_total). */
  readonly unexecutedActions = new Map<string, number>();
  /** Decided BYEs whose outcome was never reported: their media released by the watchdog. */
  lostOutcomes = 0;
  /** Decided BYEs of known sessions waiting for ReportByeOutcome (pf.byeOutcomeTimeoutMs). */
  private readonly awaitingOutcome = new Map<string, NodeJS.Timeout>();
  /** drain(): no new sessions or deliveries. */
  private draining = false;

  constructor(
    private readonly cfg: Config,
    private readonly sessions: SessionStore,
    private readonly store: ObjectStore,
    private readonly media: MediaPlane,
    private readonly log: Logger,
    private readonly opts: PfOptions = {},
  ) {}

  /** DD-1: a 3rd-party REGISTER; starts deferred delivery (in the background) when it is on. */
  async reportRegistration(env: Envelope): Promise<RegistrationResult> {
    // DD-1 trust (TS 24.229 5.4.1.7): only a trusted S-CSCF, only for one of the user's identities
    const refusal = refuseRegistration(env, this.cfg.delivery.trustedRegistrars);
    if (refusal) return refusal;
    if (!this.opts.registrations) return { accepted: false, deliveries: 0, notes: ["deferred delivery is off"] };
    // draining: no new delivery; the data stays queued for the user's next registration (another PF, or this one restarted)
    if (this.draining)
      return { accepted: true, deliveries: 0, notes: ["the PF is draining: deferred data kept for the next registration"] };
    return this.opts.registrations.onRegistration(env);
  }

  /**
   * 8.3.2.3: decide and act on a BYE; resolves after any GSO is stored or
   * spooled and the record's new lifecycle is written. `replayed`: a BYE Kamailio relayed through its fail-safe
   * earlier (failsafe-replay.ts): nobody waits for the answer, so its GSO
   * goes to the mailbox without the decision's budget. `answerBy`: when the
   * caller stops waiting (performance.now() clock), see gsoBudgetMs.
   */
  async handleBye(env: Envelope, now = new Date(), opts: { replayed?: boolean; answerBy?: number } = {}): Promise<ByeResult> {
    const msg = parseSipMessage(env.raw);
    if (msg.kind !== "request" || msg.method !== "BYE") throw new CpmError("CPM_ERR_BAD_REQUEST", "HandleBye needs a BYE request");
    const callId = header(msg, "call-id") ?? "";
    if (!callId) throw new CpmError("CPM_ERR_BAD_SIP", "BYE without Call-ID");
    let fromTag = "";
    try {
      fromTag = parseNameAddr(header(msg, "from") ?? "").params.get("tag") ?? "";
    } catch (err) {
      throw new CpmError("CPM_ERR_BAD_HEADER", "BYE From header is malformed", { cause: err });
    }
    const cseq = parseCSeq(header(msg, "cseq")).seq;
    return this.serial.run(this.serialKey(callId), async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await this.decideBye(msg, { callId, fromTag, cseq }, now, opts);
        } catch (err) {
          // a shared record store refused the record write: another sidecar wrote the record since it was read
          // (nothing was written, the record is read again); decided once more from the fresh record
          if (!(err instanceof CpmError && err.code === "CPM_ERR_RECORD_STALE") || attempt >= STALE_ATTEMPTS) throw err;
          this.log.info("group session record changed by another writer while the BYE was decided: decided again", { callId, attempt });
        }
      }
    });
  }

  /** One decision of handleBye from the record as it is now; throws CPM_ERR_RECORD_STALE when its write was refused. */
  private async decideBye(
    msg: SipMessage,
    bye: { callId: string; fromTag: string; cseq: number },
    now: Date,
    opts: { replayed?: boolean; answerBy?: number },
  ): Promise<ByeResult> {
    const { callId, fromTag, cseq } = bye;
    const session = this.sessions.get(callId);
    const decision = handleBye(
      session,
      { callId, cseq, fromTag, reasons: headerValues(msg, "reason"), referredBy: header(msg, "referred-by"), receivedAt: now },
      this.cfg.pf,
    );
    const fields = { callId, conversationId: session?.conversationId, contributionId: session?.contributionId };
    for (const note of decision.notes) this.log.warn(note, fields);

    // BYE-B7: a dialog with further devices of a forked INVITE; one device's BYE ends only its own part while others stay
    const dialog = session ? dialogOf(session, callId) : undefined;
    const devices = session && dialog ? deviceBye(session, dialog, decision.side, fromTag) : undefined;
    const oneDeviceLeft = devices?.leaving !== undefined && !devices.last;
    if (devices && devices.record !== session) {
      this.log.info("a device of the served user left the group session (BYE-B7)", {
        ...fields,
        device: devices.leaving,
        last: devices.last,
      });
    }
    // The record outlives the dialog: the BYE moves its lifecycle, durably, before the answer.
    if (session && oneDeviceLeft) await this.sessions.put(devices.record);
    else if (session) {
      const ev: LifecycleEvent =
        decision.side === "network"
          ? { type: "networkBye", callId, cause: decision.cause, reasonCause: decision.reasonCause }
          : { type: "clientBye", callId };
      const after = await this.applyLifecycle(devices?.record ?? session, ev, now.getTime());
      // BYE-B7: a delivery session joined with the group is one more dialog of the user's (proxy: the CF's Reason as received)
      const reason = decision.clientReason || headerValues(msg, "reason").join(", ") || CALL_COMPLETED;
      if (after && decision.side === "network") this.opts.registrations?.groupEnded?.(after, reason);
    }
    let gso: GsoOutcome = { state: "not-required" };
    for (const action of decision.actions) {
      const outcome = await this.executeByeAction(
        action,
        opts.replayed ? undefined : gsoBudgetMs(this.cfg.store.gsoBudgetMs, opts.answerBy),
      );
      if (outcome) gso = outcome;
    }
    // A proxy-mode BYE goes on unchanged (8.3.2.3 1): its line is debug, as
    // Kamailio's own per-BYE line is. A B2BUA decision changes the BYE and
    // may store a GSO: info.
    this.log.log(decision.mode === "proxy" ? "debug" : "info", "BYE decided", {
      ...fields,
      side: decision.side,
      mode: decision.mode,
      cause: decision.cause,
      reasonCause: decision.reasonCause,
      gso: gso.state,
    });
    // 2.d records and 2.f releases once the clients answered: a B2BUA BYE of
    // a known session, or one whose dialog holds media (a proxy-mode or
    // client-side BYE of an anchored session)
    // (one device's BYE to the UA: the UA releases that device's leg, and the rest after its BYE to the focus when it was the last)
    const relayToUa = devices?.relayToUa === true;
    const byDevice = relayToUa && decision.side === "client";
    const reportOutcome = session !== undefined && !byDevice && (decision.mode === "b2bua" || this.media.holds(callId));
    if (reportOutcome) this.expectOutcome(callId);
    return { ...decision, sessionKey: callId, gso, reportOutcome, relayToUa };
  }

  /** 2.f (BYE-B10) even when the outcome report is lost: the dialog's media goes after pf.byeOutcomeTimeoutMs. */
  private expectOutcome(sessionKey: string): void {
    clearTimeout(this.awaitingOutcome.get(sessionKey));
    const timer = setTimeout(() => {
      this.awaitingOutcome.delete(sessionKey);
      this.lostOutcomes++;
      const released = this.media.release(sessionKey);
      this.log.warn("BYE outcome never reported: media released", { callId: sessionKey, mediaReleased: released });
    }, this.cfg.pf.byeOutcomeTimeoutMs);
    timer.unref();
    this.awaitingOutcome.set(sessionKey, timer);
  }

  /**
   * Stops taking new work (SIGTERM): no new anchored session (CPM_ERR_DRAINING,
   * Kamailio relays the INVITE unanchored), no new deferred delivery. BYEs,
   * observations and outcome reports of what is under way are still decided.
   */
  drain(): void {
    if (this.draining) return;
    this.draining = true;
    this.log.info("draining: no new sessions or deliveries");
  }

  close(): void {
    for (const t of this.awaitingOutcome.values()) clearTimeout(t);
    this.awaitingOutcome.clear();
  }

  /**
   * One executor per action: the store (GSO), the media plane (481 for the
   * client's media), the RPC answer to Kamailio (the BYE towards the clients
   * and the answer to its sender are Kamailio's to send). An action no
   * executor takes is an error.
   */
  private async executeByeAction(action: ByeAction, gsoBudget: number | undefined): Promise<GsoOutcome | undefined> {
    switch (action.kind) {
      case "storeGso":
        return this.storeGso(action.session, action.gso, action.bye, gsoBudget);
      case "refuseClientMedia":
        this.media.refuseClientMedia(action.sessionKey);
        return undefined;
      case "byeToClients":
      case "answerSenderAfterClients":
        // carried by the HandleBye answer (client_reason, wait_for_clients)
        return undefined;
      default:
        this.unexecuted((action as { kind: string }).kind);
        return undefined;
    }
  }

  private unexecuted(kind: string): void {
    this.unexecutedActions.set(kind, (this.unexecutedActions.get(kind) ?? 0) + 1);
    this.log.error("action with no executor", { action: kind });
  }

  /** Deferred data was stored for the group session (the media plane's deferred sink): the client leg is absent. */
  async deferredStored(ref: GroupSessionRef): Promise<void> {
    const session = this.sessions.get(ref.sessionKey);
    // the first item changes the record (client absent, data pending); the others cost one lookup
    if (!session || (session.pendingDeferred && session.lifecycle !== "active")) return;
    await this.serial.run(recordIdOf(session), async () => {
      const now = this.sessions.get(ref.sessionKey);
      if (!now) return;
      const wasPending = now.pendingDeferred;
      const next = await this.applyLifecycle(now, { type: "deferred" }, Date.now());
      // the queue describes itself from its first item on (a PF without local state rebuilds the record from it)
      if (next && !wasPending && this.opts.descriptors) {
        await this.opts.descriptors.write(next).catch((err) =>
          this.log.error("session descriptor not written", {
            callId: next.key,
            conversationId: next.conversationId,
            contributionId: next.contributionId,
            reason: err instanceof CpmError ? err.detail : String(err),
          }),
        );
      }
    });
  }

  /**
   * The record of a group session whose deferred data is in the served
   * user's mailbox but which the PF does not know (its local state is gone):
   * rebuilt from the session descriptor and the latest GSO, and kept.
   * Undefined when the store holds no usable descriptor (the data stays).
   */
  async rebuild(servedUser: string, conversationId: string, contributionId: string): Promise<GroupSession | undefined> {
    if (!this.opts.descriptors) return undefined;
    const id = recordId(servedUser, conversationId, contributionId);
    return this.serial.run(id, async () => {
      const known = this.sessions.getById(id);
      if (known) return known;
      const fields = { servedUser, conversationId, contributionId };
      const { descriptor, latestGso } = await (this.opts.descriptors as DescriptorStore).read(servedUser, conversationId, contributionId);
      if (!descriptor) return undefined;
      const record = rebuildRecord(descriptor, latestGso, Date.now());
      if (recordIdOf(record) !== id) {
        this.log.warn("session descriptor names another served user: not used", { ...fields, descriptorUser: record.servedUser });
        return undefined;
      }
      await this.sessions.put(record);
      this.log.info("group session record rebuilt from the Message Store", {
        ...fields,
        lifecycle: record.lifecycle,
        gso: latestGso !== undefined,
      });
      return record;
    });
  }

  /**
   * DD-8 ii: the served user declined the deferred delivery of a group still
   * active: the record's current dialog ends and its lifecycle goes to left,
   * durably, before the PF's BYE goes out. Resolves with the record and the
   * dialog as they were (what the BYE needs), or undefined when the record
   * holds no confirmed dialog for `sessionKey`.
   */
  async userLeaves(sessionKey: string): Promise<{ session: GroupSession; dialog: SessionDialog } | undefined> {
    return this.serial.run(this.serialKey(sessionKey), async () => {
      const session = this.sessions.get(sessionKey);
      const dialog = session ? dialogOf(session, session.key) : undefined;
      if (!session || dialog?.state !== "confirmed") return undefined;
      await this.applyLifecycle(session, { type: "userLeft", callId: dialog.callId }, Date.now());
      return { session, dialog };
    });
  }

  /**
   * DD-13 / RJ-3: the PF re-started the group session for the served user:
   * the record takes the new dialog (and the new focus, after a re-start via
   * the conference factory) and is active again.
   */
  async restarted(sessionKey: string, dialog: SessionDialog, focusUri?: string): Promise<void> {
    await this.serial.run(this.serialKey(sessionKey), async () => {
      const session = this.sessions.get(sessionKey);
      if (!session) return;
      const next = await this.applyLifecycle(session, { type: "invited", dialog, ...(focusUri ? { focusUri } : {}) }, Date.now());
      if (next && next.focusUri !== session.focusUri) {
        this.log.info("group session focus changed by the re-start (DD-13)", {
          callId: next.key,
          conversationId: next.conversationId,
          contributionId: next.contributionId,
          focus: next.focusUri,
          previousFocus: session.focusUri,
        });
      }
    });
  }

  /** DD-12 / RJ-5: a delivery session joined the on-going group session: its record is active again (the client is back). */
  async clientJoined(sessionKey: string): Promise<void> {
    await this.serial.run(this.serialKey(sessionKey), async () => {
      const session = this.sessions.get(sessionKey);
      if (session) await this.applyLifecycle(session, { type: "clientJoined" }, Date.now());
    });
  }

  /**
   * A conference-info document from the PF's own subscription to the focus
   * (src/delivery/conference-subscriptions.ts), whose version it checked
   * (RFC 4575 4.1, per subscription): folded into the record with the rules
   * of the client's NOTIFYs (src/session/conference.ts) and persisted, so
   * that the GSOs stored later (8.3.2.3) and the deferred delivery's
   * resource list and GSOs (DD-2, DD-11) carry the fresh participants.
   * Only while the group session is going on (active, client-absent): a
   * record the CF or the user ended keeps what it had then. The served
   * user's own removal is not applied (the CF's BYE ends the session for him).
   */
  async applyConferenceNotify(id: string, info: ConferenceInfo, now = Date.now()): Promise<ConferenceApplied> {
    return this.serial.run(id, async () => {
      const session = this.sessions.getById(id);
      if (!session) return { applied: false, notes: ["no group session record"] };
      if (!isGroupActive(session)) return { applied: false, notes: [`group session is ${session.lifecycle}: not applied`] };
      const folded = foldConferenceInfo(session, info, now, { keepServedUser: true, lastVersion: -1 });
      if (folded.updated) await this.sessions.put(folded.session);
      return { applied: folded.updated, notes: folded.notes, participants: folded.session.participants.length };
    });
  }

  /** DD-1 per device: a device of the served user registered (or re-joined) while the group session had data pending. */
  deviceSeen(servedUser: string, conversationId: string, contributionId: string, keyword: string, fence?: Fence): Promise<void> {
    return this.onRecordOf(recordId(servedUser, conversationId, contributionId), { type: "deviceSeen", keyword }, fence);
  }

  /** DD-10: a device confirmed every deferred item of the group session up to `through` (a takeover starts behind them). */
  deviceDelivered(
    servedUser: string,
    conversationId: string,
    contributionId: string,
    keyword: string,
    through: DeliveredThrough,
    fence?: Fence,
  ): Promise<void> {
    return this.onRecordOf(recordId(servedUser, conversationId, contributionId), { type: "deviceDelivered", keyword, through }, fence);
  }

  /**
   * A registration's delivery of the group session to the device of
   * `keyword` began (`to`: where it goes) or ended (`to` undefined): the
   * record keeps it, so that one a SIGKILL interrupted is started again
   * (DeliveryService.resumeInterrupted).
   */
  delivering(
    servedUser: string,
    conversationId: string,
    contributionId: string,
    keyword: string,
    to: { contact: string; instanceId?: string } | undefined,
    fence?: Fence,
  ): Promise<void> {
    const ev: LifecycleEvent = to ? { type: "deliveryBegan", keyword, ...to } : { type: "deliveryEnded", keyword };
    return this.onRecordOf(recordId(servedUser, conversationId, contributionId), ev, fence);
  }

  /** The PF answered the CF's in-dialog request of `callId` for the client (a session refresh): the record keeps its CSeq (RFC 3261 12.2.2). */
  async cfRequest(callId: string, cseq: number): Promise<void> {
    const session = this.sessions.get(callId);
    if (session) await this.onRecordOf(recordIdOf(session), { type: "cfRequest", callId, cseq });
  }

  /** `ev` on the record of `id` (none: nothing), in the record's turn. */
  private async onRecordOf(id: string, ev: LifecycleEvent, fence?: Fence): Promise<void> {
    await this.serial.run(id, async () => {
      const session = this.sessions.getById(id);
      if (session) await this.applyLifecycle(session, ev, Date.now(), fence);
    });
  }

  /** Deferred delivery emptied or discarded the group session's queue (DD-8, DD-10, DD-14). */
  async queueSettled(servedUser: string, conversationId: string, contributionId: string, fence?: Fence): Promise<void> {
    const id = recordId(servedUser, conversationId, contributionId);
    await this.serial.run(id, async () => {
      const session = this.sessions.getById(id);
      if (session) await this.applyLifecycle(session, { type: "queueSettled" }, Date.now(), fence);
      // nothing queued is left to describe; the next deferred item writes a new descriptor (same serial as deferredStored)
      await this.opts.descriptors?.remove(servedUser, conversationId, contributionId).catch((err) =>
        this.log.warn("session descriptor not removed (harmless: the queue is empty)", {
          servedUser,
          conversationId,
          contributionId,
          reason: err instanceof CpmError ? err.detail : String(err),
        }),
      );
    });
  }

  /** The retention policy's purge (src/procedures/lifecycle.ts shouldPurge); returns how many records went. */
  async sweep(now = Date.now()): Promise<number> {
    const purged = await this.sessions.sweep(now);
    for (const s of purged) {
      this.log.info("group session record purged (retention)", {
        callId: s.key,
        conversationId: s.conversationId,
        contributionId: s.contributionId,
        lifecycle: s.lifecycle,
      });
    }
    return purged.length;
  }

  /** Runs the lifecycle procedure on `session`, persists the result (or the purge) and logs a transition. */
  private async applyLifecycle(session: GroupSession, ev: LifecycleEvent, now: number, fence?: Fence): Promise<GroupSession | undefined> {
    const step = stepLifecycle(session, ev, now);
    const fields = { callId: session.key, conversationId: session.conversationId, contributionId: session.contributionId };
    for (const note of step.notes) this.log.debug(note, fields);
    if (!step.record) {
      await this.sessions.purge(recordIdOf(session));
      this.log.info("group session record removed", { ...fields, event: ev.type, lifecycle: session.lifecycle });
      return undefined;
    }
    if (step.record !== session) await this.sessions.put(step.record, fence);
    if (step.transition) {
      this.log.info("group session lifecycle", {
        ...fields,
        event: ev.type,
        transition: `${step.transition.from} -> ${step.transition.to}`,
      });
      try {
        this.opts.lifecycleListener?.(step.record, ev, step.transition);
      } catch (err) {
        this.log.error("lifecycle listener failed", { ...fields, reason: err instanceof CpmError ? err.detail : String(err) });
      }
    }
    return step.record;
  }

  /** Events of one record run one at a time: keyed by the record's identity, or the Call-ID before the PF knows one. */
  private serialKey(callId: string): string {
    const s = this.sessions.get(callId);
    return s ? recordIdOf(s) : `call:${callId}`;
  }

  /** Folds a SIP message into the group session records (dialogs, participants, focus, IDs). */
  async observe(env: Envelope, now = Date.now()): Promise<ObserveResult> {
    const msg = parseSipMessage(env.raw);
    const callId = header(msg, "call-id") ?? "";
    const initialInvite = msg.kind === "request" && msg.method === "INVITE" && !tagOf(header(msg, "to"));
    if (msg.kind === "request" && (msg.method === "INVITE" || msg.method === "UPDATE") && !initialInvite) {
      // the CF's re-INVITE / UPDATE (a session refresh) on a dialog whose client is gone: the PF's UA answers it
      const answerByPf = this.opts.refreshes?.answers(msg) === true;
      const s = this.sessions.get(callId);
      const uaAddress = answerByPf ? (this.opts.uaAddress ?? "") : "";
      return {
        updated: false,
        sessionKey: callId,
        participantCount: s?.participants.length ?? 0,
        anchorMedia: false,
        answerByPf,
        uaAddress,
      };
    }
    let existing = this.sessions.get(callId);
    if (!existing && initialInvite) {
      // a new dialog of a group session the PF knows (re-join, re-start): the same record
      const conv = header(msg, "conversation-id") ?? "";
      const contrib = header(msg, "contribution-id") ?? "";
      existing = this.sessions.findByIds(servedUserOf(msg) || this.cfg.pf.servedUser, conv || contrib, contrib || conv);
      if (!existing && (conv || contrib) && dialogOfInvite(msg).initiator === "client") {
        // decision: a group chat the PF has no record of (a new one, or one whose record was purged): the focus or
        // factory the Request-URI names decides (404/410 when it is gone); nothing of the PF's is involved
        this.log.info("client INVITE for a group chat the PF has no record of: relayed as a new session to the focus or factory it names", {
          callId,
          requestUri: msg.requestUri,
          conversationId: conv || undefined,
          contributionId: contrib || undefined,
        });
      }
    }
    const key = existing ? recordIdOf(existing) : `call:${callId}`;
    const rejoin = initialInvite && existing && existing.key !== callId ? await this.rejoinTarget(msg, existing) : undefined;
    if (existing && rejoin) {
      // 8.3.2.9.1.3: the PF's UA answers this dialog; the record's dialogs towards the CF are unchanged
      const uaAddress = rejoin.ua ?? this.opts.uaAddress ?? "";
      // decision: the IDs name the group session (8.2.2.7); a focus the record does not know (an older one, or
      // none the PF ever saw) changes nothing: a re-start goes to the record's lastfocussessionid
      const otherFocus = userKey(msg.requestUri) !== userKey(existing.focusUri ?? "");
      this.log.info("re-join of a group session with pending data or a lost client leg: answered by the PF (RJ-1)", {
        callId,
        conversationId: existing.conversationId,
        contributionId: existing.contributionId,
        lifecycle: existing.lifecycle,
        ...(otherFocus
          ? { requestUri: msg.requestUri, recordFocus: existing.focusUri, note: "the re-join names another focus than the record's" }
          : {}),
        ...(rejoin.ua !== undefined ? { routedTo: rejoin.ua } : {}),
      });
      return {
        updated: false,
        sessionKey: existing.key,
        participantCount: existing.participants.length,
        anchorMedia: false,
        answerByPf: true,
        uaAddress,
      };
    }
    const session = await this.serial.run(key, async () => {
      const result = observe(existing, msg, now);
      const fields = { callId, conversationId: result.session?.conversationId, contributionId: result.session?.contributionId };
      for (const note of result.notes) this.log.warn(note, fields);
      if (!result.updated || !result.session) return result.session;
      let next = result.session;
      if (!next.servedUser) next = { ...next, servedUser: this.cfg.pf.servedUser };
      // Write-behind: the records in memory are what decisions read; the journal follows in order.
      const dialog = initialInvite ? next.dialogs.find((d) => d.callId === callId) : undefined;
      const stored = dialog ? await this.applyLifecycle(next, { type: "invited", dialog }, now) : next;
      if (!dialog) {
        // a shared store may refuse it (stale, fenced, unreachable): logged, the decision goes on from memory
        this.sessions.put(next).catch((err) => this.log.warn("session record not stored", { ...fields, reason: String(err) }));
      }
      this.log.debug("session updated", { ...fields, participants: next.participants.length });
      if (stored && !existing) this.prepareGroupFolder(stored);
      return stored;
    });
    // The initial INVITE of a CPM session is anchored whichever side sent it:
    // the focus' (the CF invites the served user) or the served user's client's
    // (it creates or joins the group chat; the focus and the CF's tag are only
    // learnt from the 2xx). The session's mode is the same policy HandleBye uses.
    const anchorMedia =
      this.opts.anchorMedia === true && initialInvite && session !== undefined && chooseMode(session, this.cfg.pf) === "b2bua";
    return {
      updated: session !== undefined && session !== existing,
      sessionKey: callId,
      participantCount: session?.participants.length ?? 0,
      anchorMedia,
      answerByPf: false,
      uaAddress: "",
    };
  }

  /** RJ-1: the served user's client (not the focus) re-joins `existing` and the delivery side takes it (here, or at the UA it names). */
  private async rejoinTarget(msg: SipMessage, existing: GroupSession): Promise<{ ua?: string } | undefined> {
    if (!this.cfg.delivery.answerRejoins || this.draining || dialogOfInvite(msg).initiator !== "client") return undefined;
    // the re-joining device (its Contact's +sip.instance): its own delivery only
    return this.opts.registrations?.rejoinTarget?.(existing, contactInstance(msg) || undefined);
  }

  /**
   * PF as B2BUA in the MSRP media path: the INVITE's offer is anchored on the
   * media plane; returns the INVITE body for the recipient and the PF's leg
   * facing the sender for the answer (RFC 4975 8, RFC 6135). The CF's INVITE:
   * body for the client leg, CF-facing leg. The client's INVITE (client-
   * initiated session, offerer "client"): body for the CF leg (a=setup:actpass),
   * client-facing leg.
   */
  async anchorMedia(env: Envelope, now = Date.now()): Promise<AnchorMediaResult> {
    if (this.opts.anchorMedia !== true) throw new CpmError("CPM_ERR_MEDIA_DISABLED", "AnchorMedia with media.enabled=false");
    if (this.draining) throw new CpmError("CPM_ERR_DRAINING", "AnchorMedia while draining");
    const msg = parseSipMessage(env.raw);
    if (msg.kind !== "request" || msg.method !== "INVITE") throw new CpmError("CPM_ERR_BAD_REQUEST", "AnchorMedia needs an INVITE request");
    const callId = header(msg, "call-id") ?? "";
    if (!callId) throw new CpmError("CPM_ERR_BAD_SIP", "INVITE without Call-ID");
    let session = this.sessions.get(callId);
    if (!session) {
      // ObserveSession normally ran first; observe now so the session has its IDs.
      await this.observe(env, now);
      session = this.sessions.get(callId);
    }
    if (!session) throw new CpmError("CPM_ERR_BAD_REQUEST", "INVITE is not a CPM group session (no Conversation-ID / Contribution-ID)");
    const offerSdp = sdpOf(msg, "INVITE");
    // The focus' INVITE carries the CF's tag (observe learnt it as networkTag);
    // any other initial INVITE of the session is the client's.
    const offerer: Offerer = session.networkTag !== "" && tagOf(header(msg, "from")) === session.networkTag ? "network" : "client";
    const ref: GroupSessionRef = {
      sessionKey: callId,
      servedUser: session.servedUser || this.cfg.pf.servedUser,
      conversationId: session.conversationId,
      contributionId: session.contributionId,
      // client-initiated: the conference factory URI until the 2xx names the focus (mediaAnswer)
      focus: session.focusUri || (offerer === "client" ? msg.requestUri : ""),
    };
    // <allow-offline-storage> is an action element of the served user's CPM
    // policy, not of the INVITE: it comes from config (pf.allowOfflineStorage).
    const anchored = await this.media.anchorOffer({
      session: ref,
      offerSdp,
      offerer,
      allowOfflineStorage: this.cfg.pf.allowOfflineStorage,
    });
    const contentType = header(msg, "content-type") ?? SDP;
    const clientBody = replaceBodyPart(contentType, msg.body, SDP, Buffer.from(anchored.clientOfferSdp, "utf8"));
    if (!clientBody) throw new CpmError("CPM_ERR_BAD_SDP", "INVITE carries no application/sdp");
    // cfPath / cfSetup: the leg facing the INVITE's sender (the client-facing one when offerer is "client")
    this.log.info("media anchored", {
      callId,
      conversationId: session.conversationId,
      contributionId: session.contributionId,
      offerer,
      cfPath: anchored.cfLeg.path,
      cfSetup: anchored.cfLeg.setup,
    });
    return { sessionKey: callId, clientBody, clientContentType: contentType, cfLeg: anchored.cfLeg };
  }

  /**
   * The 2xx to an anchored INVITE: the media plane learns the answerer's MSRP
   * path (the client's; the CF's for a client-initiated session, whose focus
   * and CF tag the 2xx also reveals: folded into the session here, so that
   * HandleBye knows the CF's BYE whichever report arrives first).
   */
  async mediaAnswer(sessionKey: string, env: Envelope, opts: { forked?: boolean } = {}, now = Date.now()): Promise<boolean> {
    if (this.opts.anchorMedia !== true) throw new CpmError("CPM_ERR_MEDIA_DISABLED", "ReportMediaAnswer with media.enabled=false");
    const msg = parseSipMessage(env.raw);
    if (msg.kind !== "response" || msg.statusCode < 200 || msg.statusCode >= 300) {
      throw new CpmError("CPM_ERR_BAD_REQUEST", "ReportMediaAnswer needs a 2xx response");
    }
    const key = sessionKey || (header(msg, "call-id") ?? "");
    if (opts.forked) return this.forkedAnswer(key, msg);
    const session = await this.serial.run(this.serialKey(key), async () => {
      const current = this.sessions.get(key);
      if (!current) return undefined;
      // the dialog is confirmed (client's tag and instance; the focus for a client-initiated session)
      const folded = observe(current, msg, now);
      if (!folded.updated || !folded.session) return current;
      await this.sessions.put(folded.session);
      return folded.session;
    });
    const focus = session?.focusUri;
    // the first device's To tag names its leg (BYE-B7: further devices get their own, forkedAnswer)
    const deviceKey = tagOf(header(msg, "to")) ?? "";
    this.media.anchorAnswer(key, sdpOf(msg, "2xx answer"), focus ? { focus, deviceKey } : { deviceKey });
    this.log.info("media answer anchored", {
      callId: key,
      conversationId: session?.conversationId,
      contributionId: session?.contributionId,
    });
    return true;
  }

  /**
   * BYE-B7: a further device's 2xx to the forked INVITE `sessionKey`, which
   * Kamailio kept from the CF: the device joins the record's dialog, the
   * UA ACKs it and the media plane gives it a client leg of its own.
   */
  private async forkedAnswer(sessionKey: string, msg: SipMessage): Promise<boolean> {
    const device = forkedDeviceOf(msg);
    const result = await this.serial.run(this.serialKey(sessionKey), async () => {
      const session = this.sessions.get(sessionKey);
      if (!session) throw new CpmError("CPM_ERR_NOT_FOUND", `no group session for ${sessionKey}`);
      const step = forkedAnswer(session, sessionKey, device);
      if (step.record !== session) await this.sessions.put(step.record);
      return { ...step, session };
    });
    const fields = { callId: sessionKey, conversationId: result.session.conversationId, contributionId: result.session.contributionId };
    for (const note of result.notes) this.log.warn(note, { ...fields, device: device.clientTag });
    for (const action of result.actions) {
      switch (action.kind) {
        case "ackDevice":
          if (this.opts.devices) this.opts.devices.ack(result.record, sessionKey, action.device);
          else this.unexecuted(action.kind);
          break;
        case "byeDevice":
          if (this.opts.devices) this.opts.devices.bye(result.record, sessionKey, action.device, action.reason);
          else this.unexecuted(action.kind);
          break;
        case "anchorDevice":
          try {
            this.media.addDevice(sessionKey, action.device.clientTag, sdpOf(msg, "further device's 2xx"));
          } catch (err) {
            // its dialog stands (ACKed), without media: it ends when the group session does
            this.log.warn("further device's media not anchored", { ...fields, device: action.device.clientTag, reason: asReason(err) });
            break;
          }
          this.log.info("further device of the served user anchored (BYE-B7)", {
            ...fields,
            device: action.device.clientTag,
            instance: action.device.clientInstance || undefined,
          });
          break;
        default:
          this.unexecuted((action as { kind: string }).kind);
      }
    }
    return result.actions.some((a) => a.kind === "anchorDevice");
  }

  /** An anchored INVITE got no session (non-2xx final answer, CANCEL, timeout): release what AnchorMedia allocated. */
  async inviteOutcome(sessionKey: string, statusCode: number): Promise<boolean> {
    if (statusCode >= 200 && statusCode < 300) return false;
    return this.serial.run(this.serialKey(sessionKey), async () => {
      const session = this.sessions.get(sessionKey);
      const released = this.media.release(sessionKey);
      // a group session that never started goes; one known before (failed re-join) stays
      if (session) await this.applyLifecycle(session, { type: "inviteFailed", callId: sessionKey, status: statusCode }, Date.now());
      this.log.info("anchored INVITE failed, media released", {
        callId: sessionKey,
        conversationId: session?.conversationId,
        contributionId: session?.contributionId,
        statusCode,
        mediaReleased: released,
      });
      return released > 0;
    });
  }

  /** The client(s) answered the BYE: 2.d record the session, 2.f release media. The record stays (its lifecycle was set by the BYE). */
  async byeOutcome(sessionKey: string, statusCode: number): Promise<boolean> {
    clearTimeout(this.awaitingOutcome.get(sessionKey));
    this.awaitingOutcome.delete(sessionKey);
    const session = this.sessions.get(sessionKey);
    const fields = { callId: sessionKey, conversationId: session?.conversationId, contributionId: session?.contributionId };
    let recorded = false;
    let released = 0;
    try {
      // 2.d (BYE-B8): the media plane records when allow-offline-storage or recording is on
      if (statusCode >= 200 && statusCode < 300 && session) {
        recorded = await this.media.recordSession(sessionKey, {
          participants: session.participants.map((p) => p.commAddr),
          subject: session.subject,
        });
      }
    } catch (err) {
      this.log.error("session recording failed", { ...fields, reason: String(err) });
    } finally {
      // 2.f (BYE-B10): whatever the recording did, the media resources go
      released = this.media.release(sessionKey);
    }
    this.log.info("BYE completed", { ...fields, statusCode, recorded, mediaReleased: released, lifecycle: session?.lifecycle });
    return session !== undefined;
  }

  /**
   * The group session's folder, CREATEd in the background when the PF first
   * sees the session as B2BUA (it will store the GSOs of 8.3.2.3 2.b there),
   * so that the BYE's decision finds it and does not wait for CREATEs.
   */
  private prepareGroupFolder(session: GroupSession): void {
    if (!this.store.prepareFolder || chooseMode(session, this.cfg.pf) !== "b2bua") return;
    const folder = groupSessionFolder(this.cfg.store.rootFolder, session.conversationId, session.contributionId);
    const fields = { callId: session.key, conversationId: session.conversationId, contributionId: session.contributionId, folder };
    this.store.prepareFolder({ owner: session.servedUser || this.cfg.pf.servedUser, folder }).then(
      () => this.log.debug("group folder ready", fields),
      (err: unknown) =>
        this.log.warn("group folder not created ahead", { ...fields, reason: err instanceof CpmError ? err.detail : String(err) }),
    );
  }

  private async storeGso(
    session: GroupSession,
    gso: GroupStateObject,
    bye: ByeIdentity,
    budgetMs: number | undefined,
  ): Promise<GsoOutcome> {
    const folder = groupSessionFolder(this.cfg.store.rootFolder, session.conversationId, session.contributionId);
    const { raw, messageId } = buildGsoObject({
      gso,
      bye,
      to: session.servedUser || this.cfg.pf.servedUser || ANONYMOUS_URI,
      conversationId: session.conversationId,
      contributionId: session.contributionId,
      subject: this.cfg.pf.groupSessionDataManagement ? session.subject : undefined,
    });
    // one object per BYE: a retransmitted or replayed BYE finds its GSO already there
    const result = await this.store.append({
      owner: session.servedUser || this.cfg.pf.servedUser,
      folder,
      raw,
      messageId,
      unique: true,
      ...(budgetMs === undefined ? {} : { budgetMs }),
    });
    this.log.info(result.duplicate ? "GSO already stored" : "GSO stored", {
      callId: session.key,
      conversationId: session.conversationId,
      contributionId: session.contributionId,
      folder,
      messageId,
      state: result.state,
    });
    return { state: result.state, folder: result.folder, messageId: result.messageId };
  }
}
