// The PF in the MSRP media path of a group session : for every
// anchored session two MSRP sessions on the PF's listener, one towards the
// Controlling Function ("cf" leg) and one towards the served user's client
// ("client" leg), with messages relayed between them in order, stored for
// deferred delivery while the client leg is absent, refused after the SIP BYE
// (BYE-B6), kept for recording (BYE-B8) and released on request (BYE-B10).
//
// SDP (RFC 4975 8, RFC 6135): the CF's offer goes to the client with the
// client leg's a=path and a=setup:actpass; the client's answer goes to the CF
// with the CF leg's a=path and the a=setup that answers the CF's offer. A
// client-initiated session (offerer "client": the served user's client
// INVITEs the conference factory / focus) is the mirror image: the client's
// offer goes to the CF with the CF leg's a=path and a=setup:actpass, the CF's
// answer to the client with the client leg's. Whoever offered, the CF leg
// stays the "network" leg (deferred storage, BYE-B6/B8/B10 unchanged). The
// role on each leg follows from the two a=setup values (src/msrp/setup.ts):
// passive legs wait in the session table for the peer's first SEND, active
// legs bind once the SDP answer is known, over the connection the PF already
// opened to the same authority when there is one (RFC 4975 5.4 connection
// reuse: typically every session's CF leg shares one connection to the CF).
//
// Forking (BYE-B7): the S-CSCF forks the CF's INVITE to every device of the
// served user, all with the PF's one offer (one a=path, a=setup:actpass).
// Each device that answers 2xx gets a client leg of its own: the first
// answer through anchorAnswer(), every further one through addDevice(). All
// those legs share the PF's session-id; the listener's table tells active
// devices apart by their From-Path (src/msrp/session-table.ts), towards
// passive ones the PF connects to each device's a=path.

import { readFileSync } from "node:fs";
import type * as net from "node:net";
import type * as tls from "node:tls";
import type { Config } from "../config/config.js";
import { CpmError } from "../errors/catalogue.js";
import { componentLogger, type Logger } from "../log/logger.js";
import type { Metrics } from "../metrics/metrics.js";
import { MsrpConnection, type MsrpConnectionOptions } from "../msrp/connection.js";
import { MsrpConnectionPool } from "../msrp/connection-pool.js";
import { newSessionId } from "../msrp/ids.js";
import { type MsrpResources, msrpResources } from "../msrp/resources.js";
import { createMsrpServer } from "../msrp/server.js";
import { MsrpSession, type MsrpSessionOptions } from "../msrp/session.js";
import { MsrpSessionTable } from "../msrp/session-table.js";
import { answerSetup, type ConnectionRole, connectionRole, type SetupAttribute } from "../msrp/setup.js";
import { formatMsrpUri, type MsrpUri, msrpUriEquals, parseMsrpPath, parseMsrpUri } from "../msrp/uri.js";
import { AnchoredSession, type JoinedClient } from "./anchored-session.js";
import { compactPath, compactUri } from "./compact-uri.js";
import type { MsrpListenerShare } from "./delivery-endpoint.js";
import { Leg } from "./leg.js";
import type { AnchorOfferRequest, AnchorOfferResult, AnswerFacts, MediaPlane, Offerer, RecordFacts } from "./media-plane.js";
import { msrpParserLimits } from "./msrp-limits.js";
import type { DeferredSink, GroupSessionRef, SessionRecorder } from "./ports.js";
import type { LegState } from "./relay-policy.js";
import { anchorSdp } from "./sdp-anchor.js";
import { SessionLog } from "./session-log.js";

export type MediaConfig = Config["media"];

export interface MsrpMediaPlaneOptions {
  config: MediaConfig;
  /** Where messages from the CF go while the client leg is absent (src/store implements it). */
  deferredSink: DeferredSink;
  /** OMA CPM 8.5.2 recording (src/store implements it); without it recordSession() returns false. */
  recorder?: SessionRecorder;
  logger?: Logger;
  /** Counters of sockets, sessions, timers, buffers; default the process-wide ones. */
  resources?: MsrpResources;
  now?: () => Date;
  metrics?: Pick<Metrics, "relayed">;
}

export interface MediaPlaneStats {
  /** Anchored sessions. */
  sessions: number;
  /** Messages queued or awaiting the next hop's answer, both directions. */
  queued: number;
  /** Bytes kept for recording. */
  recordedBytes: number;
  /** Connections accepted by the listener and still open. */
  acceptedConnections: number;
  /** Connections the PF opened (active side), one per peer authority (RFC 4975 5.4 reuse). */
  openedConnections: number;
}

interface Anchored {
  session: AnchoredSession;
  /** Who sent the INVITE: its leg ("sender" leg) is the one whose offer the PF answers. */
  offerer: Offerer;
  /** The a=setup of the sender's offer (the PF's answer on that leg answers it). */
  senderPeerSetup: SetupAttribute | undefined;
  /** The PF's connection role on the sender's leg, fixed by the offer. */
  senderRole: ConnectionRole;
  /** The PF's MSRP session-id on the sender's leg (its a=path in the answer). */
  senderSessionId: string;
  allowOfflineStorage: boolean;
  answered: boolean;
  /** The PF offered to the CF itself (originate()): no sender leg to answer or wait for. */
  originated?: boolean;
  /** BYE-B6: refuseClientMedia() was called (devices answering later are refused too). */
  refused?: boolean;
  /** The PF's connection role on each device's client leg, fixed by that device's answer (device key: its To tag). */
  clientRoles: Map<string, ConnectionRole>;
  log: SessionLog;
}

/** Stands for the INVITE recipient's path until its SDP answer arrives (RFC 2606 .invalid: never resolves). */
const PATH_PLACEHOLDER = "msrp://peer-path-pending.invalid:9/pending;tcp";

const SETUPS: readonly SetupAttribute[] = ["active", "passive", "actpass", "holdconn"];

function refuse481(leg: Leg): void {
  leg.session.refuseIncoming(481);
}

export class MsrpMediaPlane implements MediaPlane {
  private readonly config: MediaConfig;
  private readonly options: MsrpMediaPlaneOptions;
  private readonly log: Logger;
  private readonly resources: MsrpResources;
  private readonly now: () => Date;
  private readonly table = new MsrpSessionTable();
  private readonly anchored = new Map<string, Anchored>();
  private readonly accepted = new Set<MsrpConnection>();
  /** Connections the PF opened as the active side, one per peer authority (RFC 4975 5.4). */
  private readonly outgoing = new MsrpConnectionPool((first) => this.connectTo(first));
  private server: net.Server | undefined;
  private listenPort = 0;
  private clientTls: tls.ConnectionOptions | undefined;
  private sharedSessionOptions: Omit<MsrpSessionOptions, "localUri" | "remotePath"> | undefined;
  private sharedConnectionOptions: Omit<MsrpConnectionOptions, "role"> | undefined;
  /** One "close" listener for every accepted connection (`this` is the connection). */
  private readonly forgetAccepted: (this: MsrpConnection) => void;

  constructor(options: MsrpMediaPlaneOptions) {
    this.options = options;
    this.config = options.config;
    this.log = options.logger ?? componentLogger("media");
    this.resources = options.resources ?? msrpResources;
    this.now = options.now ?? (() => new Date());
    const accepted = this.accepted;
    this.forgetAccepted = function (this: MsrpConnection) {
      accepted.delete(this);
    };
  }

  get tls(): boolean {
    return this.config.tlsCertFile !== "";
  }

  /** The listener's address (port resolved when config port is 0). */
  /** The listener's shared pieces, for deferred-delivery endpoints (src/media/delivery-endpoint.ts). */
  get listenerShare(): MsrpListenerShare {
    return {
      table: this.table,
      pool: this.outgoing,
      host: this.advertisedHost(),
      port: this.listenPort,
      tls: this.tls,
      config: this.config,
      resources: this.resources,
      logger: this.log,
    };
  }

  get address(): { host: string; port: number } {
    return { host: this.config.host, port: this.listenPort };
  }

  /** Opens the MSRP listener (msrps when media.tlsCertFile / tlsKeyFile are set). */
  async start(): Promise<void> {
    if (this.server !== undefined) return;
    let serverTls: tls.TlsOptions | undefined;
    if (this.tls) {
      try {
        serverTls = { cert: readFileSync(this.config.tlsCertFile), key: readFileSync(this.config.tlsKeyFile) };
        this.clientTls = this.config.tlsCaFile !== "" ? { ca: readFileSync(this.config.tlsCaFile) } : {};
      } catch (err) {
        throw new CpmError("CPM_ERR_CONFIG", `media.tls*: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    }
    const server = createMsrpServer({
      ...this.connectionOptions(),
      table: this.table,
      ...(serverTls ? { tls: serverTls } : {}),
      onConnection: (c) => {
        this.accepted.add(c);
        c.on("close", this.forgetAccepted); // emitted once
      },
    });
    // Chat is interactive: no Nagle delay on small frames (for TLS this is the underlying TCP socket).
    server.on("connection", (socket: net.Socket) => socket.setNoDelay(true));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.config.port, this.config.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", (err) => this.log.error("MSRP listener error", { err: err.message }));
    const addr = server.address() as net.AddressInfo;
    this.listenPort = addr.port;
    this.server = server;
    this.log.info("MSRP media plane listening", { host: this.config.host, port: this.listenPort, tls: this.tls });
  }

  /** Releases every session, closes every connection and the listener. */
  async close(): Promise<void> {
    for (const key of [...this.anchored.keys()]) this.release(key);
    for (const c of [...this.accepted]) c.close("media plane shutting down");
    this.outgoing.closeAll("media plane shutting down");
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  stats(): MediaPlaneStats {
    let queued = 0;
    let recordedBytes = 0;
    for (const a of this.anchored.values()) {
      queued += a.session.queued;
      recordedBytes += a.session.recording?.bytes ?? 0;
    }
    return {
      sessions: this.anchored.size,
      queued,
      recordedBytes,
      acceptedConnections: this.accepted.size,
      openedConnections: this.outgoing.size,
    };
  }

  /**
   * The state of a session's legs (health, tests); undefined when not
   * anchored. `client`: up when a client leg is up, pending when one is
   * pending, else gone; `devices`: each answered device's leg by its key.
   */
  legs(sessionKey: string): { cf: LegState; client: LegState; devices: { key: string; state: LegState }[] } | undefined {
    const a = this.anchored.get(sessionKey);
    return (
      a && {
        cf: a.session.cf.state,
        client: a.session.clientState,
        devices: a.session.clientLegs().map(({ key, leg }) => ({ key, state: leg.state })),
      }
    );
  }

  async anchorOffer(req: AnchorOfferRequest): Promise<AnchorOfferResult> {
    if (this.server === undefined) throw new CpmError("CPM_ERR_MEDIA_NOT_STARTED", "call start() first");
    const key = req.session.sessionKey;
    if (this.anchored.has(key)) throw new CpmError("CPM_ERR_MEDIA_SESSION_EXISTS", `session ${key}`);
    const offerer: Offerer = req.offerer ?? "network";
    const host = this.advertisedHost();
    // The INVITE's sender offered; the PF answers it on the sender's leg and offers on the recipient's.
    const senderSessionId = newSessionId();
    const recipientSessionId = newSessionId();
    // Towards the recipient the PF offers, with a=setup:actpass (RFC 6135 4.1).
    const toRecipient = anchorSdp(req.offerSdp, { host, port: this.listenPort, sessionId: recipientSessionId, tls: this.tls }, "offer");
    const senderPath = compactPath(parseMsrpPath(toRecipient.peerPath.join(" ")));
    // Towards the sender the PF answers; anchorAnswer writes the same a=setup (answerSetup) into that answer.
    const senderLocalSetup = answerSetup(toRecipient.peerSetup);
    const senderPeerSetup = SETUPS.find((s) => s === toRecipient.peerSetup); // a shared literal, not a slice of the SDP
    const senderRole = connectionRole(senderLocalSetup, toRecipient.peerSetup, false);

    const log = new SessionLog(this.log, {
      callId: key,
      conversationId: req.session.conversationId,
      contributionId: req.session.contributionId,
    });
    // The stack logs with the MSRP session-id; "MSRP session anchored" below ties both ids to the Call-ID.
    const senderSession = this.newSession(this.localUri(host, senderSessionId), senderPath, false);
    const recipientSession = this.newSession(this.localUri(host, recipientSessionId), parseMsrpPath(PATH_PLACEHOLDER), true);
    // The recipient may connect (a=setup:active) before its answer reaches the PF: its session waits in the table from now on.
    this.table.add(recipientSession);
    if (senderRole === "passive") this.table.add(senderSession);
    const { chunkSize } = this.config;
    const resources = this.resources;
    const fromNetwork = offerer === "network";
    const cfSession = fromNetwork ? senderSession : recipientSession;
    const clientSession = fromNetwork ? recipientSession : senderSession;
    const session = new AnchoredSession({
      ref: req.session,
      cf: new Leg({ name: "cf", session: cfSession, pathKnown: fromNetwork, chunkSize, resources, log }),
      client: new Leg({ name: "client", session: clientSession, pathKnown: !fromNetwork, chunkSize, resources, log }),
      deferredSink: this.options.deferredSink,
      record: req.allowOfflineStorage || this.config.recording,
      maxRecordedBytes: this.config.maxRecordedBytes,
      log,
      now: this.now,
      ...(this.options.metrics ? { relayed: (sec: number) => this.options.metrics?.relayed(sec) } : {}),
    });
    // client-initiated: the one client leg is the client's, under device key ""
    if (!fromNetwork) session.assignClient("");
    this.anchored.set(key, {
      session,
      offerer,
      senderPeerSetup,
      senderRole,
      senderSessionId,
      allowOfflineStorage: req.allowOfflineStorage,
      answered: false,
      clientRoles: new Map(),
      log,
    });
    const cfMsrpSession = fromNetwork ? senderSessionId : recipientSessionId;
    const clientMsrpSession = fromNetwork ? recipientSessionId : senderSessionId;
    if (fromNetwork) {
      log.info("MSRP session anchored", { cfRole: senderRole, cfSetup: senderLocalSetup, cfMsrpSession, clientMsrpSession });
    } else {
      log.info("MSRP session anchored", {
        offerer,
        clientRole: senderRole,
        clientSetup: senderLocalSetup,
        cfMsrpSession,
        clientMsrpSession,
      });
    }
    return {
      clientOfferSdp: toRecipient.sdp,
      cfLeg: { host, port: this.listenPort, path: formatMsrpUri(senderSession.localUri), setup: senderLocalSetup, tls: this.tls },
    };
  }

  anchorAnswer(sessionKey: string, answerSdp: string, facts: AnswerFacts = {}): string {
    const a = this.get(sessionKey);
    if (facts.focus) a.session.ref.focus = facts.focus;
    const host = this.advertisedHost();
    const toSender = anchorSdp(
      answerSdp,
      { host, port: this.listenPort, sessionId: a.senderSessionId, tls: this.tls },
      "answer",
      a.senderPeerSetup,
    );
    if (a.answered) return toSender.sdp; // a retransmitted 2xx: same answer, legs already set up
    a.answered = true;
    const recipientPath = compactPath(parseMsrpPath(toSender.peerPath.join(" ")));
    // We offered actpass to the recipient; its answer decides (RFC 6135 4.1).
    const recipientRole = connectionRole("actpass", toSender.peerSetup, true);
    const fromNetwork = a.offerer === "network";
    const { cf, client } = a.session;
    const sender = fromNetwork ? cf : client;
    if (fromNetwork) this.answerDevice(a, facts.deviceKey ?? "", recipientPath, recipientRole, true);
    else {
      cf.learnPath(recipientPath);
      if (recipientRole === "active") void cf.connect((s) => this.outgoing.bind(s));
      cf.expectWithin(this.config.clientLegTimeoutMs);
    }
    if (!a.originated) {
      if (a.senderRole === "active") void sender.connect((s) => this.outgoing.bind(s));
      sender.expectWithin(this.config.clientLegTimeoutMs);
    }
    const clientRole = fromNetwork ? recipientRole : a.senderRole;
    const cfRole = fromNetwork ? a.senderRole : recipientRole;
    if (fromNetwork) a.log.info("MSRP client leg answered", { clientRole, cfRole, device: facts.deviceKey ?? "" });
    else a.log.info("MSRP CF leg answered", { offerer: a.offerer, clientRole, cfRole });
    return toSender.sdp;
  }

  /**
   * BYE-B7: a further device's 2xx to the CF-initiated session `sessionKey`
   * (`deviceKey`: that 2xx's To tag); see MediaPlane.addDevice. Throws
   * CpmError CPM_ERR_MEDIA_NOT_ANCHORED, CPM_ERR_BAD_SDP.
   */
  addDevice(sessionKey: string, deviceKey: string, answerSdp: string): void {
    const a = this.anchored.get(sessionKey);
    if (a === undefined || a.offerer !== "network") throw new CpmError("CPM_ERR_MEDIA_NOT_ANCHORED", `session ${sessionKey}`);
    if (a.session.device(deviceKey) !== undefined) return; // a retransmitted 2xx
    let path: MsrpUri[];
    let role: ConnectionRole;
    try {
      const answer = anchorSdp(
        answerSdp,
        { host: this.advertisedHost(), port: this.listenPort, sessionId: a.senderSessionId, tls: this.tls },
        "answer",
        a.senderPeerSetup,
      );
      path = compactPath(parseMsrpPath(answer.peerPath.join(" ")));
      // We offered actpass to every device; each answer decides its own leg (RFC 6135 4.1).
      role = connectionRole("actpass", answer.peerSetup, true);
    } catch (err) {
      if (err instanceof CpmError && err.code === "CPM_ERR_BAD_SDP") throw err;
      throw new CpmError("CPM_ERR_BAD_SDP", err instanceof Error ? err.message : String(err), { cause: err });
    }
    this.answerDevice(a, deviceKey, path, role, false);
    a.log.info("MSRP client leg of a further device answered", { device: deviceKey, clientRole: role });
  }

  /** BYE-B7: device `deviceKey` left (its BYE): its client leg is released, the others and the CF leg go on. Returns what was freed. */
  releaseDevice(sessionKey: string, deviceKey: string): number {
    const a = this.anchored.get(sessionKey);
    if (a === undefined) return 0;
    const freed = a.session.releaseDevice(deviceKey);
    if (freed > 0) a.log.info("MSRP client leg of a device released", { device: deviceKey, freed });
    return freed;
  }

  refuseClientMedia(sessionKey: string): void {
    const a = this.anchored.get(sessionKey);
    if (a === undefined) return;
    // 8.3.2.3 2.b.iv / BYE-B6: what the clients still send after the BYE gets 481 and goes nowhere.
    a.refused = true;
    a.session.forEachClientLeg(refuse481);
    a.log.info("client media refused after BYE");
  }

  async recordSession(sessionKey: string, facts: RecordFacts = {}): Promise<boolean> {
    const a = this.anchored.get(sessionKey);
    const recording = a?.session.recording;
    if (a === undefined || recording === undefined) return false;
    const recorder = this.options.recorder;
    if (recorder === undefined) {
      a.log.warn("recording is on but no SessionRecorder is configured");
      return false;
    }
    // What is still on its way belongs to the session too.
    await a.session.idle();
    const info = { startedAt: a.session.startedAt, endedAt: this.now(), participants: facts.participants ?? [] };
    await recorder.recordSession(a.session.ref, facts.subject === undefined ? info : { ...info, subject: facts.subject }, [
      ...recording.messages,
    ]);
    a.log.info("CPM session recorded", { messages: recording.messages.length, bytes: recording.bytes, truncated: recording.truncated });
    return true;
  }

  release(sessionKey: string): number {
    const a = this.anchored.get(sessionKey);
    if (a === undefined) return 0;
    this.anchored.delete(sessionKey);
    const count = a.session.release();
    a.log.info("MSRP media released", { ...count });
    return count.legs + count.queued + count.recorded + 1; // + the table entry
  }

  holds(sessionKey: string): boolean {
    return this.anchored.has(sessionKey);
  }

  /**
   * The CF invited the served user into this anchored session and the
   * original client leg is gone (the client away, or a joined delivery
   * session in its place): the PF answers the CF's in-dialog offers itself.
   */
  clientLegGone(sessionKey: string): boolean {
    const a = this.anchored.get(sessionKey);
    return a !== undefined && a.offerer === "network" && a.answered && a.session.clientState === "gone";
  }

  /**
   * The PF's answer on the CF leg to the CF's new offer on the same session
   * (a session refresh, RFC 4028; RFC 3264 8: the stream stays as it is): the
   * PF's path and session-id as in its first answer, its connection role
   * kept. Throws CpmError CPM_ERR_MEDIA_NOT_ANCHORED, CPM_ERR_BAD_SDP.
   */
  refreshAnswer(sessionKey: string, offerSdp: string): string {
    const a = this.anchored.get(sessionKey);
    if (!a || a.offerer !== "network") throw new CpmError("CPM_ERR_MEDIA_NOT_ANCHORED", `session ${sessionKey}`);
    return this.keptLegAnswer(offerSdp, a.senderSessionId, a.senderRole);
  }

  /**
   * BYE-B7: the PF's answer to a new offer of device `deviceKey` on its own
   * dialog (its session refresh; RFC 3264 8: the stream stays as it is): the
   * PF's client-facing path, and the connection role that device's answer
   * fixed. Throws CpmError CPM_ERR_MEDIA_NOT_ANCHORED, CPM_ERR_BAD_SDP.
   */
  deviceRefreshAnswer(sessionKey: string, deviceKey: string, offerSdp: string): string {
    const a = this.anchored.get(sessionKey);
    const role = a?.clientRoles.get(deviceKey);
    const sessionId = a?.session.client.session.localUri.sessionId;
    if (!a || role === undefined || sessionId === undefined || a.session.device(deviceKey) === undefined) {
      throw new CpmError("CPM_ERR_MEDIA_NOT_ANCHORED", `session ${sessionKey} device ${deviceKey}`);
    }
    return this.keptLegAnswer(offerSdp, sessionId, role);
  }

  /** An answer that keeps a leg as it is: the PF's path with `sessionId`, and the PF's connection role `role` written as its a=setup. */
  private keptLegAnswer(offerSdp: string, sessionId: string, role: ConnectionRole): string {
    const anchor = { host: this.advertisedHost(), port: this.listenPort, sessionId, tls: this.tls };
    try {
      return anchorSdp(offerSdp, anchor, "answer", role === "active" ? "passive" : "active").sdp;
    } catch (err) {
      throw err instanceof CpmError ? err : new CpmError("CPM_ERR_BAD_SDP", String(err));
    }
  }

  /**
   * DD-13 / RJ-3: the PF re-starts the group session itself (8.2.2.7): a new
   * anchored session keyed by the re-start INVITE's Call-ID, whose CF leg the
   * PF offers (`offerSdp`: the original offer's media attributes, the PF's
   * path, a=setup:actpass, RFC 6135 4.1) and whose client side is the joined
   * delivery session. The CF's answer goes to anchorAnswer() as for a
   * client-initiated session. Returns the SDP offer for the CF.
   */
  originate(req: { session: GroupSessionRef; offerSdp: string; client: JoinedClient }): string {
    if (this.server === undefined) throw new CpmError("CPM_ERR_MEDIA_NOT_STARTED", "call start() first");
    const key = req.session.sessionKey;
    if (this.anchored.has(key)) throw new CpmError("CPM_ERR_MEDIA_SESSION_EXISTS", `session ${key}`);
    const host = this.advertisedHost();
    const cfSessionId = newSessionId();
    const toCf = anchorSdp(req.offerSdp, { host, port: this.listenPort, sessionId: cfSessionId, tls: this.tls }, "offer");
    const log = new SessionLog(this.log, {
      callId: key,
      conversationId: req.session.conversationId,
      contributionId: req.session.contributionId,
    });
    const cfSession = this.newSession(this.localUri(host, cfSessionId), parseMsrpPath(PATH_PLACEHOLDER), true);
    // the CF may connect (a=setup:active) before its answer reaches the PF
    this.table.add(cfSession);
    // no client leg of its own: the delivery session is joined in its place (never in the listener's table)
    const unused = this.newSession(this.localUri(host, newSessionId()), parseMsrpPath(PATH_PLACEHOLDER), true);
    const { chunkSize } = this.config;
    const resources = this.resources;
    const session = new AnchoredSession({
      ref: req.session,
      cf: new Leg({ name: "cf", session: cfSession, pathKnown: false, chunkSize, resources, log }),
      client: new Leg({ name: "client", session: unused, pathKnown: false, chunkSize, resources, log }),
      deferredSink: this.options.deferredSink,
      record: this.config.recording,
      maxRecordedBytes: this.config.maxRecordedBytes,
      log,
      now: this.now,
      ...(this.options.metrics ? { relayed: (sec: number) => this.options.metrics?.relayed(sec) } : {}),
    });
    session.join(req.client);
    this.anchored.set(key, {
      session,
      offerer: "client",
      senderPeerSetup: undefined,
      // the PF's own side: nothing to connect or wait for
      senderRole: "passive",
      senderSessionId: newSessionId(),
      allowOfflineStorage: false,
      answered: false,
      originated: true,
      clientRoles: new Map(),
      log,
    });
    log.info("MSRP session originated towards the CF (re-start)", { cfMsrpSession: cfSessionId });
    return toCf.sdp;
  }

  /** A re-start that did not come up (RJ-3): its CF side is released, the joined delivery session is left open. Returns what was freed. */
  abandon(sessionKey: string): number {
    this.anchored.get(sessionKey)?.session.detach();
    return this.release(sessionKey);
  }

  /** DD-12 / RJ-5: the delivery session joins the anchored group session as its client leg. Throws CpmError CPM_ERR_MEDIA_NOT_ANCHORED. */
  joinClient(sessionKey: string, client: JoinedClient): void {
    this.get(sessionKey).session.join(client);
  }

  /** BYE-B7: one device's joined delivery session leaves the anchored group session (not closed here); the others stay. */
  leaveClient(sessionKey: string, client: JoinedClient): void {
    this.anchored.get(sessionKey)?.session.detach(client);
  }

  /** DD-12 / RJ-5: a message the joined client sent, to the CF leg; resolves with the CF's code (481: nothing anchored, RFC 4975 10). */
  relayToCf(sessionKey: string, m: { contentType: string; body: Buffer; messageId: string }): Promise<number> {
    const a = this.anchored.get(sessionKey);
    return a === undefined ? Promise.resolve(481) : a.session.relayToCf(m);
  }

  /**
   * A device's answer: its client leg learns the device's path and connects
   * (PF active) or waits for the device (PF passive, in the listener's
   * table), absent after clientLegTimeoutMs. The first client leg, made with
   * the offer, waits for whoever connects first (RFC 6135 4.1: before any
   * answer is known): it goes to the device whose answer names that sender,
   * else to the one answered through anchorAnswer() (`first`); every other
   * device gets a new leg with the same PF URI.
   */
  private answerDevice(a: Anchored, key: string, path: MsrpUri[], role: ConnectionRole, first: boolean): Leg {
    const s = a.session;
    const unassigned = s.unassignedClient;
    const binder = unassigned?.session.boundSender;
    const peer = path[path.length - 1];
    let leg: Leg;
    if (unassigned !== undefined && (first || (binder !== undefined && peer !== undefined && msrpUriEquals(binder, peer)))) {
      s.assignClient(key);
      unassigned.learnPath(path);
      leg = unassigned;
    } else {
      const session = this.newSession(s.client.session.localUri, path, false);
      // an active device names the PF URI the others name too: the table picks its session by From-Path
      if (role === "passive") this.table.add(session, true);
      const { chunkSize } = this.config;
      leg = new Leg({ name: "client", device: key, session, pathKnown: true, chunkSize, resources: this.resources, log: a.log });
      s.addDevice(key, leg);
    }
    a.clientRoles.set(key, role);
    if (role === "active") void leg.connect((x) => this.outgoing.bind(x));
    leg.expectWithin(this.config.clientLegTimeoutMs);
    if (a.refused) leg.session.refuseIncoming(481);
    return leg;
  }

  private get(sessionKey: string): Anchored {
    const a = this.anchored.get(sessionKey);
    if (a === undefined) throw new CpmError("CPM_ERR_MEDIA_NOT_ANCHORED", `session ${sessionKey}`);
    return a;
  }

  private advertisedHost(): string {
    return this.config.advertisedHost !== "" ? this.config.advertisedHost : this.config.host;
  }

  private localUri(host: string, sessionId: string): MsrpUri {
    const h = host.includes(":") ? `[${host}]` : host;
    return compactUri(parseMsrpUri(`${this.tls ? "msrps" : "msrp"}://${h}:${this.listenPort}/${sessionId};tcp`));
  }

  /** The same object for every connection (its limits are then shared by every parser, src/msrp/limits.ts). */
  private connectionOptions(): Omit<MsrpConnectionOptions, "role"> {
    this.sharedConnectionOptions ??= {
      limits: msrpParserLimits(this.config),
      // RFC 4975 14.1: a connection that never names a session of ours is closed.
      bindTimeoutMs: this.config.unauthenticatedTimeoutMs,
      idleTimeoutMs: this.config.idleTimeoutMs,
      transactionTimeoutMs: this.config.transactionTimeoutMs,
      maxWriteQueueBytes: this.config.maxWriteQueueBytes,
      logger: this.log,
      resources: this.resources,
    };
    return this.sharedConnectionOptions;
  }

  /**
   * An MsrpSession with the plane's options. Written out as a literal: an
   * object built by spread gets a hidden class (map + descriptors) of its own,
   * about 250 bytes more per session than one literal shape shared by all.
   */
  private newSession(localUri: MsrpUri, remotePath: MsrpUri[], remotePathPending: boolean): MsrpSession {
    const o = this.sessionOptions();
    return new MsrpSession({
      localUri,
      remotePath,
      // RFC 4975 5.4, 14: each leg takes requests from the From-Path its peer's SDP gave only
      verifyFromPath: true,
      remotePathPending,
      reassembly: o.reassembly,
      chunkSize: o.chunkSize,
      chunkWindow: o.chunkWindow,
      logger: o.logger,
      resources: o.resources,
    });
  }

  /** The same object for every session (one per plane, not per session). */
  private sessionOptions(): Omit<MsrpSessionOptions, "localUri" | "remotePath"> {
    this.sharedSessionOptions ??= {
      reassembly: { maxMessageBytes: this.config.maxMessageBytes, maxMessagesInFlight: this.config.maxMessagesInFlight },
      chunkSize: this.config.chunkSize,
      chunkWindow: this.config.chunkWindow,
      logger: this.log,
      resources: this.resources,
    };
    return this.sharedSessionOptions;
  }

  /** Active side: a new connection to the first hop of a peer's path (msrps = TLS); the pool reuses it. */
  private connectTo(first: MsrpUri): Promise<MsrpConnection> {
    return MsrpConnection.connectTo(first, this.connectionOptions(), this.clientTls);
  }
}
