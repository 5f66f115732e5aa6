// The PF's MSRP endpoint for one deferred-delivery session (OMA CPM
// 8.3.2.9.1.2 / 8.3.2.9.1.3): after the served user's client registers again
// the PF INVITEs it with the SDP offer of the original group session
// invitation (DD-6: a=sendrecv), and over this NEW MSRP session, PF <-> client
// only (no CF leg, nothing relayed), SENDs the stored messages in order.
//
// Built from the media plane's pieces: anchorSdp() writes the PF's offer
// (a=path, port, c=/o=, a=setup:actpass, RFC 6135 4.2), connectionRole()
// reads the client's answer, a Leg holds the MsrpSession (path learned from
// the answer, "client leg" timeout, active bind through the connection pool,
// RFC 4975 5.4), classifyPayload() names what the client sends. The session
// waits in the listener's session table from the offer on, so a client that
// answers a=setup:active may connect before its 200 OK reaches the PF.
//
// The listener is shared (MsrpListenerShare): MsrpMediaPlane's in production,
// or startDeliveryListener() below (tests, a PF that does not anchor groups).
import { EventEmitter } from "node:events";
import type * as net from "node:net";
import sdpTransform from "sdp-transform";
import type { Config } from "../config/config.js";
import { CpmError, ErrorCodes } from "../errors/catalogue.js";
import { componentLogger, type Logger } from "../log/logger.js";
import type { ReceivedMessage } from "../msrp/chunking.js";
import { MsrpConnection, type MsrpConnectionOptions } from "../msrp/connection.js";
import { MsrpConnectionPool } from "../msrp/connection-pool.js";
import type { FailureReport } from "../msrp/frame.js";
import { newSessionId } from "../msrp/ids.js";
import { failureReportFor } from "../msrp/reports.js";
import { type MsrpResources, msrpResources } from "../msrp/resources.js";
import { createMsrpServer } from "../msrp/server.js";
import { MsrpSession } from "../msrp/session.js";
import { MsrpSessionTable } from "../msrp/session-table.js";
import { type ConnectionRole, connectionRole, type SetupAttribute } from "../msrp/setup.js";
import { type MsrpUri, parseMsrpPath, parseMsrpUri } from "../msrp/uri.js";
import type { JoinedClient } from "./anchored-session.js";
import { classifyPayload } from "./classify.js";
import { compactPath, compactUri } from "./compact-uri.js";
import { Leg } from "./leg.js";
import { msrpParserLimits } from "./msrp-limits.js";
import type { LegState } from "./relay-policy.js";
import { anchorSdp, type MsrpAnchor } from "./sdp-anchor.js";
import { SessionLog } from "./session-log.js";

type MediaConfig = Config["media"];

/** One stored item to deliver: message/cpim (chat message, IMDN) or application/group-state-object+xml. */
export interface DeliveryItem {
  contentType: string;
  body: Buffer;
}

export type ClientSendKind = "message" | "imdn" | "isComposing";

export interface ClientSendInfo {
  msrpMessageId: string;
  kind: ClientSendKind;
  failureReport: FailureReport;
  contentType: string;
  body: Buffer;
}

export interface DeliveryEndpointEvents {
  /** The MSRP session with the client is usable (bound, RFC 4975 5.4 / RFC 6135). Emitted at most once. */
  up: [];
  /** A whole message from the client; the stack has already answered it (200, per its Failure-Report, RFC 4975 7.2). */
  clientSend: [info: ClientSendInfo];
  /** Connection lost, bind failed, client not connected in time, or close(). Emitted exactly once. */
  closed: [reason: string];
}

/**
 * What the endpoint borrows from the PF's MSRP listener. MsrpMediaPlane owns
 * one (its `table`, `outgoing` pool, connection options); startDeliveryListener()
 * builds an equivalent standalone one.
 */
export interface MsrpListenerShare {
  /** Sessions the listener binds by the To-Path session-id of a connection's first request (RFC 4975 5.4). */
  table: MsrpSessionTable;
  /** Connections the PF opens as the active side, reused per authority (RFC 4975 5.4). */
  pool: MsrpConnectionPool;
  /** Where the listener is reached, as written in a=path, c= and o= (media.advertisedHost, else media.host). */
  host: string;
  /** The listener's bound port (m= and a=path). */
  port: number;
  /** msrps (TCP/TLS/MSRP) or msrp (TCP/MSRP). */
  tls: boolean;
  /** media.*: chunkSize, chunkWindow, maxMessageBytes, maxMessagesInFlight, clientLegTimeoutMs. */
  config: MediaConfig;
  resources: MsrpResources;
  logger: Logger;
}

export interface DeliveryEndpointOptions {
  /** The delivery INVITE's key (Call-ID): the callId field of every log line. */
  sessionKey: string;
  /** The SDP offer of the original group session invitation (DD-6). */
  originalSdp: string;
  msrp: MsrpListenerShare;
  /** Log fields (STYLE: ids as fields). */
  conversationId?: string;
  contributionId?: string;
}

export type DeliveryEndpointState = "offered" | "answered" | "up" | "closed";

/** Stands for the client's path until its SDP answer (RFC 2606 .invalid: never resolves). MsrpMediaPlane has the same, private. */
const PATH_PLACEHOLDER = "msrp://peer-path-pending.invalid:9/pending;tcp";

/** What send() resolves with when the session is gone or never came up (RFC 4975 10: 481). */
const NO_SESSION = 481;

/** Client SENDs remembered for a later failure REPORT. */
const MAX_REMEMBERED_SENDS = 256;

export class DeliveryEndpoint extends EventEmitter<DeliveryEndpointEvents> {
  readonly sessionKey: string;
  private readonly share: MsrpListenerShare;
  private readonly session: MsrpSession;
  /** What a failure REPORT needs of the client's recent SENDs, by Message-ID (oldest dropped first). */
  private readonly received = new Map<string, Pick<ReceivedMessage, "messageId" | "byteRange" | "failureReport" | "fromPath">>();
  private readonly leg: Leg;
  private readonly log: SessionLog;
  private current: DeliveryEndpointState = "offered";
  /** Settles true once "up", false once closed first: send() waits on it. */
  private readonly usable: Promise<boolean>;
  private settleUsable!: (up: boolean) => void;
  /** Resolves once the last send() in line has all its chunks on the connection; never rejects. */
  private tail: Promise<void> = Promise.resolve();
  /** Messages sent and not answered yet (media.deliveryWindow), and the sends waiting for room. */
  private inFlight = 0;
  private readonly waitingForRoom: (() => void)[] = [];
  /** What the anchored group session holds as its joined client (DD-12), made once. */
  private joinedView: JoinedClient | undefined;

  private constructor(opts: Omit<DeliveryEndpointOptions, "originalSdp">, localUri: MsrpUri, log: SessionLog) {
    super();
    this.sessionKey = opts.sessionKey;
    this.share = opts.msrp;
    this.log = log;
    this.usable = new Promise((resolve) => {
      this.settleUsable = resolve;
    });
    const { config, resources, logger } = opts.msrp;
    this.session = new MsrpSession({
      localUri,
      remotePath: parseMsrpPath(PATH_PLACEHOLDER),
      // RFC 4975 5.4, 14: only the client whose 200 OK gave the path may use the session
      verifyFromPath: true,
      remotePathPending: true,
      reassembly: { maxMessageBytes: config.maxMessageBytes, maxMessagesInFlight: config.maxMessagesInFlight },
      chunkSize: config.chunkSize,
      chunkWindow: config.chunkWindow,
      logger,
      resources,
    });
    this.leg = new Leg({ name: "client", session: this.session, pathKnown: false, chunkSize: config.chunkSize, resources, log });
    this.session.on("message", (m) => this.onClientMessage(m));
    this.session.on("close", (reason) => this.finish(reason));
    // From the offer on: a client answering a=setup:active may connect before its 200 OK arrives.
    opts.msrp.table.add(this.session);
  }

  /**
   * Creates the endpoint and the SDP offer for the delivery INVITE: the
   * original offer's media attributes (accept-types, accept-wrapped-types,
   * max-size, ...) kept; c=, o=, the m=message port/proto and a=path the PF's;
   * a=setup:actpass (RFC 6135 4.2, the PF offers); a=sendrecv (DD-6).
   * Throws CpmError CPM_ERR_BAD_SDP (unusable original SDP),
   * CPM_ERR_MEDIA_NOT_STARTED (listener not listening).
   */
  static async create(opts: DeliveryEndpointOptions): Promise<{ endpoint: DeliveryEndpoint; offerSdp: string }> {
    const { msrp } = opts;
    if (msrp.port === 0) throw new CpmError("CPM_ERR_MEDIA_NOT_STARTED", "the MSRP listener is not listening");
    const anchor: MsrpAnchor = { host: msrp.host, port: msrp.port, sessionId: newSessionId(), tls: msrp.tls };
    const offer = deliveryOffer(opts.originalSdp, anchor);
    const log = new SessionLog(msrp.logger, sessionFields(opts));
    const endpoint = new DeliveryEndpoint(opts, offer.localUri, log);
    log.info("MSRP delivery session offered", { msrpSession: anchor.sessionId });
    return { endpoint, offerSdp: offer.sdp };
  }

  /**
   * RJ-1: the endpoint answering the client's own offer (its re-join INVITE,
   * 8.3.2.9.1.3): the PF's SDP answer (the offer's media attributes kept, the
   * PF's c=, port and a=path, a=setup per RFC 6135 4.1: passive unless the
   * client is, a=sendrecv) and the session started at once (the PF connects
   * and binds with an empty SEND, RFC 4975 5.4, or waits for the client's
   * connection). Throws CpmError CPM_ERR_BAD_SDP, CPM_ERR_MEDIA_NOT_STARTED.
   */
  static async answer(
    opts: Omit<DeliveryEndpointOptions, "originalSdp"> & { offerSdp: string },
  ): Promise<{ endpoint: DeliveryEndpoint; answerSdp: string }> {
    const { msrp } = opts;
    if (msrp.port === 0) throw new CpmError("CPM_ERR_MEDIA_NOT_STARTED", "the MSRP listener is not listening");
    const anchor: MsrpAnchor = { host: msrp.host, port: msrp.port, sessionId: newSessionId(), tls: msrp.tls };
    const peer = readPeer(opts.offerSdp, anchor);
    let answer: { sdp: string; localUri: MsrpUri; role: ConnectionRole };
    try {
      // Decision: where the offer lets the PF choose, it listens and the client connects out (clients sit behind NATs)
      const anchored = anchorSdp(opts.offerSdp, anchor, "answer", peer.setup, "passive");
      answer = { ...sendrecv(anchored.sdp), role: connectionRole(anchored.localSetup, peer.setup, false) };
    } catch (err) {
      throw badSdp(err);
    }
    const endpoint = new DeliveryEndpoint(opts, answer.localUri, new SessionLog(msrp.logger, sessionFields(opts)));
    endpoint.log.info("MSRP delivery session answering the client's offer", { msrpSession: anchor.sessionId, role: answer.role });
    endpoint.start(peer.path, answer.role);
    return { endpoint, answerSdp: answer.sdp };
  }

  get state(): DeliveryEndpointState {
    return this.current;
  }

  /** The PF's a=path URI of this session (its session-id names it in the listener's table). */
  get localUri(): MsrpUri {
    return this.session.localUri;
  }

  /**
   * The client's SDP answer (its 200 OK): learns its a=path; its a=setup
   * decides who connects (RFC 6135 4.2: passive = the PF connects and binds
   * with an empty SEND, RFC 4975 5.4; active = the PF waits for the client's
   * connection). Emits "up" once usable, "closed" if not up within
   * media.clientLegTimeoutMs. A second answer (retransmitted 200 OK) and an
   * answer after close() are ignored. Throws CpmError CPM_ERR_BAD_SDP.
   */
  applyAnswer(answerSdp: string): void {
    if (this.current !== "offered") {
      this.log.debug("SDP answer ignored", { state: this.current });
      return;
    }
    const answer = readPeer(answerSdp, { host: this.share.host, port: this.share.port, sessionId: "answer", tls: this.share.tls });
    let role: ConnectionRole;
    try {
      role = connectionRole("actpass", answer.setup, true);
    } catch (err) {
      throw badSdp(err);
    }
    this.log.info("MSRP delivery session answered", { role, clientSetup: answer.setup });
    this.start(answer.path, role);
  }

  /** Both SDPs known: the client's path learnt; "up" once usable, "closed" if not up within media.clientLegTimeoutMs. */
  private start(path: MsrpUri[], role: ConnectionRole): void {
    this.current = "answered";
    this.leg.learnPath(path);
    this.leg.expectWithin(this.share.config.clientLegTimeoutMs);
    // Active: "up" after the client's 200 to the bind (Leg state goes up at attach, before it).
    const ready = role === "active" ? this.leg.connect((s) => this.share.pool.bind(s)) : this.leg.settled();
    ready
      .then(() => this.leg.settled())
      .then(() => {
        if (this.current !== "answered" || this.leg.state !== "up") return;
        this.current = "up";
        this.settleUsable(true);
        this.log.info("MSRP delivery session up", { role });
        this.safeEmit("up");
      })
      .catch((err: unknown) => this.log.error("MSRP delivery session setup failed", { err: errText(err) }));
  }

  /**
   * SENDs one item (chunked per media.chunkSize, RFC 4975 7.1.1) and resolves
   * with the code of the peer's response: 200 delivered, 408 none within
   * media.transactionTimeoutMs (RFC 4975 7.1.1), 415, 413, ...; 481 when the
   * session is gone or never came up. Never rejects. Calls keep their order
   * on the wire: each item goes out once the previous one is written, with at
   * most media.deliveryWindow items unanswered (DD-10 in order, pipelined).
   * An item sent before "up" waits for it.
   */
  send(item: DeliveryItem): Promise<number> {
    const previous = this.tail;
    let written!: () => void;
    this.tail = new Promise<void>((resolve) => {
      written = resolve;
    });
    return (async () => {
      try {
        await previous;
        await this.room();
        try {
          return await this.sendNow(item, written);
        } finally {
          this.inFlight--;
          this.waitingForRoom.shift()?.();
        }
      } finally {
        written();
      }
    })();
  }

  private room(): Promise<void> {
    if (this.inFlight < Math.max(1, this.share.config.deliveryWindow)) {
      this.inFlight++;
      return Promise.resolve();
    }
    return new Promise((resolve) =>
      this.waitingForRoom.push(() => {
        this.inFlight++;
        resolve();
      }),
    );
  }

  /**
   * DD-12 / RJ-5: this session as the group session's client leg once joined
   * (src/media/anchored-session.ts relays the CF's messages to it, in order,
   * through send()).
   */
  asJoinedClient(): JoinedClient {
    // one view per endpoint: the anchored session tells its joined clients apart by identity
    this.joinedView ??= this.makeJoinedView();
    return this.joinedView;
  }

  private makeJoinedView(): JoinedClient {
    const endpoint = this;
    return {
      get state(): LegState {
        return endpoint.current === "up" ? "up" : endpoint.current === "closed" ? "gone" : "pending";
      },
      settled: () => endpoint.usable.then(() => undefined),
      send: (item) => endpoint.send({ contentType: item.contentType, body: item.body }),
      singleChunk: (item) => item.body.length <= endpoint.share.config.chunkSize,
      broken: (reason) => endpoint.close(reason),
      release: () => {
        const open = endpoint.current !== "closed";
        endpoint.close("media released");
        return open ? 1 : 0;
      },
    };
  }

  /** Closes the session (its connection closes with its last session, RFC 4975 5.4), its timer and table entry; queued sends get 481. Idempotent. */
  close(reason: string): void {
    if (this.current === "closed") return;
    this.current = "closed";
    this.settleUsable(false);
    this.leg.release();
    this.log.info("MSRP delivery session closed", { reason });
    this.safeEmit("closed", reason);
  }

  private async sendNow(item: DeliveryItem, written: () => void): Promise<number> {
    if (!(await this.usable) || this.current !== "up") return NO_SESSION;
    try {
      const r = await this.session.send({ body: item.body, contentType: item.contentType }, { written });
      this.log.debug("deferred item sent", { messageId: r.messageId, code: r.code, chunks: r.chunks, bytes: item.body.length });
      if (r.code !== 200) this.log.info("deferred item refused by the client", { messageId: r.messageId, code: r.code });
      return r.code;
    } catch (err) {
      // The connection went away under the message (CPM_ERR_MSRP_CONNECTION -> 481).
      const entry = err instanceof CpmError ? ErrorCodes[err.code] : undefined;
      const code = entry !== undefined && "msrp" in entry ? entry.msrp : NO_SESSION;
      this.log.info("deferred item not sent", { code, err: errText(err) });
      return code;
    }
  }

  /**
   * RFC 4975 7.1.2: a failure REPORT with `status` for a message the client
   * sent on this session (when the group it was meant for cannot get it,
   * RJ-4). False when the message is unknown, its Failure-Report wants none,
   * or the session is not up.
   */
  failureReport(msrpMessageId: string, status: number): boolean {
    const m = this.received.get(msrpMessageId);
    const transport = this.session.connection;
    if (!m || !transport || this.current === "closed") return false;
    const report = failureReportFor({ method: "SEND", ...m }, status, this.session.localUri);
    if (!report) return false;
    transport.request(report, this.session);
    return true;
  }

  /** The stack has answered already (200, RFC 4975 7.2 with the SEND's Failure-Report); tell the delivery service. */
  private onClientMessage(m: ReceivedMessage): void {
    this.received.set(m.messageId, {
      messageId: m.messageId,
      byteRange: m.byteRange,
      failureReport: m.failureReport,
      fromPath: m.fromPath,
    });
    if (this.received.size > MAX_REMEMBERED_SENDS) this.received.delete(this.received.keys().next().value as string);
    const payload = classifyPayload(m.contentType, m.body);
    // A client sends no Group State Object; should one come, it goes up as a plain message.
    const kind: ClientSendKind = payload === "gso" ? "message" : payload;
    this.log.debug("client SEND on the delivery session", { messageId: m.messageId, kind, bytes: m.body.length });
    this.safeEmit("clientSend", {
      msrpMessageId: m.messageId,
      kind,
      failureReport: m.failureReport,
      contentType: m.contentType ?? "application/octet-stream",
      body: m.body,
    });
  }

  /** The session closed under us (connection lost, bind refused, client leg timeout). */
  private finish(reason: string): void {
    if (this.current === "closed") return;
    this.current = "closed";
    this.settleUsable(false);
    this.leg.release(); // its timer, if the session closed before the leg was up
    this.log.info("MSRP delivery session lost", { reason });
    this.safeEmit("closed", reason);
  }

  /** A listener that throws must not break the MSRP stack (or leave a promise rejected). */
  private safeEmit<K extends keyof DeliveryEndpointEvents>(event: K, ...args: DeliveryEndpointEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: DeliveryEndpointEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.log.error("delivery endpoint listener threw", { event, err: errText(err) });
    }
  }
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function badSdp(err: unknown): CpmError {
  if (err instanceof CpmError && err.code === "CPM_ERR_BAD_SDP") return err;
  return new CpmError("CPM_ERR_BAD_SDP", errText(err), { cause: err });
}

/** The MSRP media description anchorSdp() rewrites (the first m=message over TCP/MSRP or TCP/TLS/MSRP). */
function msrpMedia(sdp: sdpTransform.SessionDescription): sdpTransform.MediaDescription | undefined {
  return sdp.media?.find((m) => m.type === "message" && /^TCP(\/TLS)?\/MSRP$/i.test(m.protocol));
}

function sessionFields(opts: Pick<DeliveryEndpointOptions, "sessionKey" | "conversationId" | "contributionId">): Record<string, unknown> {
  const fields: Record<string, unknown> = { callId: opts.sessionKey };
  if (opts.conversationId !== undefined) fields.conversationId = opts.conversationId;
  if (opts.contributionId !== undefined) fields.contributionId = opts.contributionId;
  return fields;
}

/** DD-6: the original offer pointed at the PF (anchorSdp "offer": actpass) and made a=sendrecv; returns the PF's URI as written. */
function deliveryOffer(originalSdp: string, anchor: MsrpAnchor): { sdp: string; localUri: MsrpUri } {
  let anchored: string;
  try {
    anchored = anchorSdp(originalSdp, anchor, "offer").sdp;
  } catch (err) {
    throw badSdp(err);
  }
  return sendrecv(anchored);
}

/** An SDP the PF wrote with its MSRP media made a=sendrecv (DD-6); returns the PF's URI as written. */
function sendrecv(anchored: string): { sdp: string; localUri: MsrpUri } {
  const session = sdpTransform.parse(anchored);
  const media = msrpMedia(session);
  const path = media?.invalid?.find((a) => a.value.startsWith("path:"));
  if (media === undefined || path === undefined) throw new CpmError("CPM_ERR_BAD_SDP", "rewritten offer lost its MSRP media");
  // RFC 4566 6: the media-level direction wins; a session-level one other than sendrecv goes.
  media.direction = "sendrecv";
  if (session.direction !== undefined && session.direction !== "sendrecv") delete session.direction;
  return { sdp: sdpTransform.write(session), localUri: compactUri(parseMsrpUri(path.value.slice("path:".length).trim())) };
}

/** The client's a=path and a=setup in its answer or offer (read by anchorSdp like the media plane reads answers; its rewritten SDP is not used). */
function readPeer(answerSdp: string, anchor: MsrpAnchor): { path: MsrpUri[]; setup: SetupAttribute | undefined } {
  try {
    const read = anchorSdp(answerSdp, anchor, "answer", "actpass");
    // RFC 3264 6: port 0 rejects the stream.
    if (msrpMedia(sdpTransform.parse(answerSdp))?.port === 0)
      throw new CpmError("CPM_ERR_BAD_SDP", "the client's MSRP stream has port 0 (RFC 3264 6)");
    return { path: compactPath(parseMsrpPath(read.peerPath.join(" "))), setup: read.peerSetup };
  } catch (err) {
    throw badSdp(err);
  }
}

// ---- standalone listener --------------------------------------------------------

export interface DeliveryListener {
  readonly share: MsrpListenerShare;
  /** Closes every connection (and so every session bound to one), the table's sessions and the listener. */
  close(): Promise<void>;
}

/**
 * An MSRP listener of its own on media.host:media.port (plain TCP), built like
 * MsrpMediaPlane.start() does its own: for tests and for a PF that delivers
 * deferred messages without anchoring group sessions. With the media plane on,
 * share its listener instead (one port, one table). msrps is the media
 * plane's: media.tlsCertFile set here throws CPM_ERR_CONFIG.
 */
export async function startDeliveryListener(opts: {
  config: MediaConfig;
  resources?: MsrpResources;
  logger?: Logger;
}): Promise<DeliveryListener> {
  const { config } = opts;
  if (config.tlsCertFile !== "") throw new CpmError("CPM_ERR_CONFIG", "media.tlsCertFile: the standalone delivery listener is plain TCP");
  const resources = opts.resources ?? msrpResources;
  const logger = opts.logger ?? componentLogger("media");
  const table = new MsrpSessionTable();
  const connectionOptions: Omit<MsrpConnectionOptions, "role"> = {
    limits: msrpParserLimits(config),
    // RFC 4975 14.1: a connection that never names a session of ours is closed.
    bindTimeoutMs: config.unauthenticatedTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
    transactionTimeoutMs: config.transactionTimeoutMs,
    logger,
    resources,
  };
  const pool = new MsrpConnectionPool((first) => MsrpConnection.connectTo(first, connectionOptions));
  const accepted = new Set<MsrpConnection>();
  const server = createMsrpServer({
    ...connectionOptions,
    table,
    onConnection: (c) => {
      accepted.add(c);
      c.once("close", () => accepted.delete(c));
    },
  });
  server.on("connection", (socket: net.Socket) => socket.setNoDelay(true));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", (err) => logger.error("MSRP delivery listener error", { err: err.message }));
  const port = (server.address() as net.AddressInfo).port;
  const share: MsrpListenerShare = {
    table,
    pool,
    host: config.advertisedHost !== "" ? config.advertisedHost : config.host,
    port,
    tls: false,
    config,
    resources,
    logger,
  };
  return {
    share,
    async close() {
      table.closeAll("delivery listener closing");
      for (const c of [...accepted]) c.close("delivery listener closing");
      pool.closeAll("delivery listener closing");
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
