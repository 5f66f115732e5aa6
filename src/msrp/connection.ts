// One MSRP connection (RFC 4975 5.4, 6.2-6.3, 7.2) over any Duplex: a
// net.Socket, a tls.TLSSocket, or a test pair. It parses what arrives,
// answers hop by hop, and routes each request to the session named by the
// session-id of its first To-Path URI among the sessions bound to THIS
// connection: a request for any other session gets 481 and never reaches
// another session (BYE-B6), one for a session bound to another connection
// gets 506. A passive connection binds a session from its table when the
// first request for it arrives; an active one binds with an empty SEND
// (bind()). A connection on which no session gets bound within bindTimeoutMs
// is closed, as is one idle for idleTimeoutMs (when set) and one whose last
// session has left (closeWhenUnused).
import { EventEmitter } from "node:events";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import { CpmError } from "../errors/catalogue.js";
import { componentLogger, type Logger } from "../log/logger.js";
import { makeEmptySend } from "./chunking.js";
import { deadlineSweeper, type HasDeadline } from "./deadline-sweeper.js";
import type { MsrpFrame, MsrpRequest, MsrpResponse } from "./frame.js";
import { type MsrpParseError, MsrpParser, type MsrpParserLimits } from "./parser.js";
import { type ResponsePolicy, responsePolicy, shouldRespond } from "./reports.js";
import { type MsrpResources, msrpResources } from "./resources.js";
import { makeResponse, serializeFrame } from "./serializer.js";
import type { MsrpSession, SessionTransport } from "./session.js";
import type { MsrpSessionTable } from "./session-table.js";
import type { ConnectionRole } from "./setup.js";
import { formatMsrpUri, type MsrpUri } from "./uri.js";

export interface MsrpConnectionOptions {
  /** RFC 6135: active = we opened the connection and bind with an empty SEND; passive = we accepted it. */
  role: ConnectionRole;
  /** Sessions a passive connection may bind (by the first request naming them). */
  table?: MsrpSessionTable;
  /** Parser limits; defaults DEFAULT_PARSER_LIMITS (16 KiB headers, 256 KiB chunk body). */
  limits?: Partial<MsrpParserLimits>;
  /** Close the connection when no session is bound to it this long after it opened; 0 = never. Default 30 000 ms. */
  bindTimeoutMs?: number;
  /** Close the connection after this long without bytes either way; 0 = never (default: SIP ends sessions). */
  idleTimeoutMs?: number;
  /** A request that expects a response and gets none this long counts as 408. Default 30 000 ms (RFC 4975 7.1.1). */
  transactionTimeoutMs?: number;
  /** Close the connection when its last session leaves (RFC 4975 5.4). Default true. */
  closeWhenUnused?: boolean;
  /**
   * Bytes written and not yet taken by the peer (the socket's queue) above
   * which the connection is closed: a peer that sends but never reads (our
   * responses and REPORTs pile up) cannot grow the PF's memory. Default 8 MiB.
   */
  maxWriteQueueBytes?: number;
  logger?: Logger;
  resources?: MsrpResources;
}

export const DEFAULT_MAX_WRITE_QUEUE_BYTES = 8 * 1024 * 1024;

export const DEFAULT_CONNECTION_TIMEOUTS = Object.freeze({
  bindTimeoutMs: 30_000,
  idleTimeoutMs: 0,
  transactionTimeoutMs: 30_000,
});

export interface ConnectionEvents {
  close: [reason: string];
}

interface Transaction {
  owner: MsrpSession | undefined;
  policy: ResponsePolicy;
  timer: NodeJS.Timeout | undefined;
  settle: (code: number) => void;
  fail: (err: Error) => void;
  onLateError: ((code: number) => void) | undefined;
}

/** The connection a socket belongs to: lets one set of socket listeners serve every connection (no closures per connection). */
const CONNECTION = Symbol("msrpConnection");
type OwnedSocket = Duplex & { [CONNECTION]?: MsrpConnection };

function onSocketData(this: OwnedSocket, chunk: Buffer | string): void {
  this[CONNECTION]?.onData(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
}
function onSocketDrain(this: OwnedSocket): void {
  this[CONNECTION]?.flushDrainWaiters();
}
function onSocketError(this: OwnedSocket, err: Error): void {
  this[CONNECTION]?.close(`socket error: ${err.message}`);
}
function onSocketEnd(this: OwnedSocket): void {
  this[CONNECTION]?.close("peer closed the connection");
}
function onSocketClose(this: OwnedSocket): void {
  this[CONNECTION]?.socketClosed();
}

type DrainWaiter = { resolve: () => void; reject: (err: Error) => void };

export class MsrpConnection extends EventEmitter<ConnectionEvents> implements SessionTransport, HasDeadline {
  readonly role: ConnectionRole;
  private readonly socket: OwnedSocket;
  /** Made when bytes arrive, dropped between frames: an idle connection holds no parser (RSS per idle session). */
  private parser: MsrpParser | undefined;
  private readonly limits: Partial<MsrpParserLimits> | undefined;
  private readonly table: MsrpSessionTable | undefined;
  private readonly baseLog: Logger;
  private readonly peer: string;
  private childLog: Logger | undefined;
  private readonly resources: MsrpResources;
  private readonly bindTimeoutMs: number;
  private readonly idleTimeoutMs: number;
  private readonly transactionTimeoutMs: number;
  private readonly closeWhenUnused: boolean;
  private readonly maxWriteQueueBytes: number;
  private readonly bound = new Map<string, MsrpSession>();
  /** Requests awaiting a response, made with the first one (an idle connection holds no table). */
  private pending: Map<string, Transaction> | undefined;
  private drainWaiters: DrainWaiter[] | undefined;
  /** Close unless a session is bound by then (epoch ms; 0 = no bind timeout). */
  private readonly bindDeadline: number;
  private lastActivity = Date.now();
  private everBound = false;
  private closing = false;
  private socketGone = false;
  /** Frames written in one tick leave in one segment (socket cork until the next tick). */
  private corked = false;

  constructor(socket: Duplex, options: MsrpConnectionOptions) {
    super();
    this.role = options.role;
    this.socket = socket;
    this.table = options.table;
    this.limits = options.limits;
    this.resources = options.resources ?? msrpResources;
    this.closeWhenUnused = options.closeWhenUnused ?? true;
    this.maxWriteQueueBytes = options.maxWriteQueueBytes ?? DEFAULT_MAX_WRITE_QUEUE_BYTES;
    this.bindTimeoutMs = options.bindTimeoutMs ?? DEFAULT_CONNECTION_TIMEOUTS.bindTimeoutMs;
    this.idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_CONNECTION_TIMEOUTS.idleTimeoutMs;
    this.transactionTimeoutMs = options.transactionTimeoutMs ?? DEFAULT_CONNECTION_TIMEOUTS.transactionTimeoutMs;
    const peer = socket instanceof net.Socket ? `${socket.remoteAddress}:${socket.remotePort}` : "duplex";
    this.baseLog = options.logger ?? componentLogger("msrp");
    this.peer = peer;
    this.resources.socketOpened(this);

    (socket as OwnedSocket)[CONNECTION] = this;
    socket.on("data", onSocketData);
    socket.on("drain", onSocketDrain);
    socket.on("error", onSocketError);
    socket.on("end", onSocketEnd);
    socket.on("close", onSocketClose);
    if (socket.destroyed) {
      this.socketGone = true;
      this.resources.socketClosed(this);
    }

    this.bindDeadline = this.bindTimeoutMs > 0 ? this.lastActivity + this.bindTimeoutMs : 0;
    this.scheduleDeadline();
  }

  /** Opens a TCP (or, with `tls`, TLS) connection as the active side. */
  static connect(
    target: { host: string; port: number; tls?: tls.ConnectionOptions },
    options: Omit<MsrpConnectionOptions, "role">,
  ): Promise<MsrpConnection> {
    return new Promise((resolve, reject) => {
      const socket = target.tls
        ? tls.connect({ ...target.tls, host: target.host, port: target.port })
        : net.connect({ host: target.host, port: target.port });
      const onError = (err: Error) => {
        socket.destroy();
        reject(new CpmError("CPM_ERR_MSRP_CONNECTION", `connect to ${target.host}:${target.port} failed: ${err.message}`, { cause: err }));
      };
      socket.once("error", onError);
      socket.once(target.tls ? "secureConnect" : "connect", () => {
        socket.off("error", onError);
        resolve(new MsrpConnection(socket, { ...options, role: "active" }));
      });
    });
  }

  /** Connects to the first hop of a session's remote path (msrps = TLS). */
  static connectTo(
    uri: MsrpUri,
    options: Omit<MsrpConnectionOptions, "role">,
    tlsOptions?: tls.ConnectionOptions,
  ): Promise<MsrpConnection> {
    if (uri.port === undefined) return Promise.reject(new CpmError("CPM_ERR_MSRP_URI", "the first hop has no port"));
    const host = uri.host.startsWith("[") ? uri.host.slice(1, -1) : uri.host;
    const target: { host: string; port: number; tls?: tls.ConnectionOptions } = { host, port: uri.port };
    if (uri.scheme === "msrps") target.tls = tlsOptions ?? {};
    return MsrpConnection.connect(target, options);
  }

  get closed(): boolean {
    return this.closing;
  }

  /** Sessions bound to this connection, by session-id. */
  get sessions(): ReadonlyMap<string, MsrpSession> {
    return this.bound;
  }

  /** Parser buffer plus bytes queued on the socket. */
  get bufferedBytes(): number {
    return (this.parser?.bufferedBytes ?? 0) + (this.socketGone ? 0 : this.socket.writableLength);
  }

  /**
   * Active side (RFC 4975 5.4, RFC 6135): binds the session to this
   * connection with an empty SEND. Resolves on 200; otherwise the session is
   * closed and the promise rejects (481 / 506 / 408 ...).
   */
  async bind(session: MsrpSession): Promise<void> {
    if (this.closing) throw new CpmError("CPM_ERR_MSRP_CONNECTION", "connection closed");
    this.attachSession(session);
    const bindSend = makeEmptySend(session.remotePath, [session.localUri]);
    const { verdict } = this.request(bindSend, session);
    let code: number;
    try {
      code = await verdict;
    } catch (err) {
      session.close("connection lost while binding");
      throw err;
    }
    if (code === 200) return;
    session.close(`peer refused the bind with ${code}`);
    const errorCode =
      code === 481
        ? "CPM_ERR_MSRP_NO_SESSION"
        : code === 506
          ? "CPM_ERR_MSRP_SESSION_IN_USE"
          : code === 408
            ? "CPM_ERR_MSRP_TIMEOUT"
            : "CPM_ERR_MSRP_CONNECTION";
    throw new CpmError(errorCode, `bind of session ${session.id} answered ${code}`);
  }

  /**
   * Sends a request. `verdict` settles with the response code, 408 when none
   * comes within transactionTimeoutMs, or 200 right after writing when the
   * request's Failure-Report wants no 200 ("partial": a later error reaches
   * onLateError; "no" and REPORT: nothing more). `written` waits for the
   * socket to drain. Both reject with CPM_ERR_MSRP_CONNECTION if the
   * connection closes first.
   */
  request(
    req: MsrpRequest,
    owner?: MsrpSession,
    onLateError?: (code: number) => void,
  ): { written: Promise<void>; verdict: Promise<number> } {
    if (this.closing) {
      const err = new CpmError("CPM_ERR_MSRP_CONNECTION", "connection closed");
      const rejected = Promise.reject(err);
      rejected.catch(() => {});
      return { written: rejected, verdict: rejected };
    }
    const policy = responsePolicy(req);
    let settle!: (code: number) => void;
    let fail!: (err: Error) => void;
    const verdict = new Promise<number>((resolve, reject) => {
      settle = resolve;
      fail = reject;
    });
    verdict.catch(() => {});
    if (policy !== "none") {
      const tx: Transaction = { owner, policy, timer: undefined, settle, fail, onLateError };
      tx.timer = this.resources.setTimer(this.transactionTimeoutMs, () => {
        tx.timer = undefined;
        this.forgetTransaction(req.transactionId);
        // "partial": silence means success; only "all" turns it into 408.
        if (policy === "all") {
          this.log.info("MSRP transaction timed out", { transactionId: req.transactionId, method: req.method });
          settle(408);
        }
      });
      this.pending ??= new Map();
      this.pending.set(req.transactionId, tx);
    }
    const written = this.write(req);
    written.catch((err: Error) => {
      const tx = this.pending?.get(req.transactionId);
      if (tx === undefined) return;
      this.resources.clearTimer(tx.timer);
      this.forgetTransaction(req.transactionId);
      tx.fail(err);
    });
    if (policy !== "all") written.then(() => settle(200), fail);
    return { written, verdict };
  }

  /** @internal A session leaves (session.close()). */
  detach(session: MsrpSession): void {
    if (this.bound.get(session.id) !== session) return;
    this.bound.delete(session.id);
    for (const [tid, tx] of this.pending ?? []) {
      if (tx.owner !== session) continue;
      this.resources.clearTimer(tx.timer);
      this.forgetTransaction(tid);
      tx.fail(new CpmError("CPM_ERR_MSRP_CONNECTION", "session closed"));
    }
    if (this.closeWhenUnused && this.bound.size === 0 && this.everBound) this.close("last session left");
  }

  /** Closes the connection and every session bound to it. Idempotent. */
  close(reason = "closed"): void {
    if (this.closing) return;
    this.closing = true;
    deadlineSweeper(this.resources).cancel(this);
    const gone = new CpmError("CPM_ERR_MSRP_CONNECTION", `connection closed: ${reason}`);
    const pending = this.pending;
    this.pending = undefined;
    for (const tx of pending?.values() ?? []) {
      this.resources.clearTimer(tx.timer);
      tx.fail(gone);
    }
    const waiters = this.drainWaiters;
    this.drainWaiters = undefined;
    for (const w of waiters ?? []) w.reject(gone);
    const sessions = [...this.bound.values()];
    this.bound.clear();
    for (const s of sessions) s.connectionLost(reason);
    this.parser = undefined;
    this.debug("MSRP connection closing", { reason, sessions: sessions.length });
    this.finishSocket();
    this.emit("close", reason);
  }

  // ---- input ------------------------------------------------------------------

  /** @internal (socket listener) */
  onData(chunk: Buffer): void {
    if (this.closing) return;
    this.lastActivity = Date.now();
    this.resources.traffic.bytesIn += chunk.length;
    this.parser ??= new MsrpParser(this.limits);
    for (const ev of this.parser.push(chunk)) {
      if (this.closing) return;
      if (ev.type === "frame") this.onFrame(ev.frame);
      else if (ev.type === "error") this.onParseError(ev.error);
    }
    // Between frames the parser holds nothing worth keeping.
    if (this.parser?.idle) this.parser = undefined;
  }

  /** @internal (socket listener) The socket is gone for good. */
  socketClosed(): void {
    this.socketGone = true;
    this.close("socket closed");
    this.resources.socketClosed(this);
  }

  private onFrame(frame: MsrpFrame): void {
    this.resources.frame("in", frame, 0);
    if (frame.kind === "response") this.onResponse(frame);
    else this.onRequest(frame);
  }

  private onResponse(res: MsrpResponse): void {
    const tx = this.pending?.get(res.transactionId);
    if (tx === undefined) {
      this.debug("response for no pending transaction", { transactionId: res.transactionId, code: res.code });
      return;
    }
    this.forgetTransaction(res.transactionId);
    this.resources.clearTimer(tx.timer);
    if (tx.policy === "all") tx.settle(res.code);
    else if (res.code >= 300) tx.onLateError?.(res.code);
  }

  private onRequest(req: MsrpRequest): void {
    const sessionId = req.toPath[0]?.sessionId;
    let session = sessionId === undefined ? undefined : this.bound.get(sessionId);
    // RFC 4975 5.4, 7.3: To-Path and From-Path name the session (several may share a session-id, session-table.ts)
    const candidate = session ?? (sessionId === undefined ? undefined : this.table?.find(sessionId, req.fromPath[req.fromPath.length - 1]));
    if (candidate !== undefined && candidate.state !== "closed" && !candidate.isFromPeer(req)) {
      this.refuseForeignSender(req, candidate);
      return;
    }
    if (session === undefined && candidate !== undefined) {
      if (candidate.state === "unbound") {
        this.attachSession(candidate, req.fromPath[req.fromPath.length - 1]);
        session = candidate;
      } else if (candidate.state === "bound") {
        // RFC 4975 10: the session lives on another connection.
        this.log.info("request for a session bound to another connection", { sessionId, transactionId: req.transactionId });
        this.answer(req, 506);
        return;
      }
    }
    if (session === undefined) {
      // BYE-B6 / RFC 4975 10: unknown (or already closed) session: 481, and the request goes nowhere.
      this.debug("request for no session on this connection", { sessionId, transactionId: req.transactionId, method: req.method });
      this.answer(req, 481);
      return;
    }
    const actions = session.receive(req);
    if (actions.respondLater !== undefined) {
      this.answerLater(req, actions.respondLater, actions.reports, session);
      return;
    }
    if (actions.respond !== undefined) this.answer(req, actions.respond, session.localUri);
    for (const report of actions.reports) this.request(report, session);
  }

  /**
   * Session matching (RFC 4975 5.4, 14): the session takes requests from its
   * peer's From-Path only. Whoever else names it gets 403 and reaches
   * nothing; a connection with no session of its own is closed at once.
   */
  private refuseForeignSender(req: MsrpRequest, session: MsrpSession): void {
    this.resources.refusals.foreignSenders++;
    const sender = req.fromPath[req.fromPath.length - 1];
    const closing = this.bound.size === 0;
    this.log.warn("MSRP request from a sender that is not the session's peer, 403", {
      sessionId: session.id,
      transactionId: req.transactionId,
      method: req.method,
      sender: sender === undefined ? undefined : formatMsrpUri(sender),
      closing,
    });
    this.answer(req, 403);
    if (closing) this.close("only foreign senders");
  }

  /** A held response (session.ts HoldResponse): answered once the owner's verdict settles, if still open. */
  private answerLater(req: MsrpRequest, later: Promise<number>, reports: MsrpRequest[], session: MsrpSession): void {
    later
      .catch((err: unknown) => {
        this.log.warn("held MSRP response failed, answering 403", {
          transactionId: req.transactionId,
          err: err instanceof Error ? err.message : String(err),
        });
        return 403;
      })
      .then((code) => {
        if (this.closing || session.state !== "bound") return;
        this.answer(req, code, session.localUri);
        if (code < 300) for (const report of reports) this.request(report, session);
      });
  }

  private onParseError(err: MsrpParseError): void {
    if (err.fatal) {
      this.resources.refusals.unparseableConnections++;
      this.log.warn("unparseable MSRP input, closing", { reason: err.reason, detail: err.detail, transactionId: err.transactionId });
      this.close(`parse error: ${err.reason}`);
      return;
    }
    const head = err.head;
    const sessionId = head?.toPath?.[0]?.sessionId;
    const session = sessionId === undefined ? undefined : this.bound.get(sessionId);
    if (err.reason === "body-too-large" && head?.messageId !== undefined) session?.rejectMessage(head.messageId);
    // RFC 4975 7.2: a response is addressed with the request's paths; without
    // them (or for a response, or per the Failure-Report policy) none is sent.
    const answerable =
      !err.isResponse &&
      err.transactionId !== undefined &&
      err.method !== undefined &&
      head?.toPath !== undefined &&
      head.fromPath !== undefined &&
      shouldRespond({ method: err.method, failureReport: head.failureReport }, err.status);
    this.log.info("bad MSRP frame", {
      reason: err.reason,
      detail: err.detail,
      limit: err.limit,
      transactionId: err.transactionId,
      status: err.status,
      answered: answerable,
    });
    if (!answerable || err.transactionId === undefined || head?.toPath === undefined || head.fromPath === undefined) return;
    this.writeQuietly(
      makeResponse(
        { transactionId: err.transactionId, toPath: head.toPath, fromPath: head.fromPath },
        err.status,
        session ? { localUri: session.localUri } : {},
      ),
    );
  }

  // ---- output -----------------------------------------------------------------

  private answer(req: MsrpRequest, code: number, localUri?: MsrpUri): void {
    if (!shouldRespond(req, code)) return;
    this.writeQuietly(makeResponse(req, code, localUri ? { localUri } : {}));
  }

  private writeQuietly(frame: MsrpFrame): void {
    this.write(frame).catch(() => {});
  }

  /** Serializes and writes; resolves when the socket can take more. */
  private write(frame: MsrpFrame): Promise<void> {
    if (this.closing || this.socketGone) return Promise.reject(new CpmError("CPM_ERR_MSRP_CONNECTION", "connection closed"));
    let bytes: Buffer;
    try {
      bytes = serializeFrame(frame);
    } catch (err) {
      return Promise.reject(err);
    }
    this.lastActivity = Date.now();
    this.resources.frame("out", frame, bytes.length);
    if (!this.corked) {
      // pipelined SENDs and the responses to a burst go out with one syscall, not one each
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    if (this.socket.write(bytes)) return Promise.resolve();
    if (this.socket.writableLength > this.maxWriteQueueBytes) {
      this.resources.refusals.unreadConnections++;
      this.log.warn("MSRP peer does not read what it is sent, closing", {
        queuedBytes: this.socket.writableLength,
        limit: this.maxWriteQueueBytes,
      });
      this.close("peer does not read");
      return Promise.reject(new CpmError("CPM_ERR_MSRP_CONNECTION", "connection closed: the peer does not read"));
    }
    return new Promise((resolve, reject) => {
      this.drainWaiters ??= [];
      this.drainWaiters.push({ resolve, reject });
    });
  }

  /** @internal (socket listener) */
  flushDrainWaiters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = undefined;
    for (const w of waiters ?? []) w.resolve();
  }

  /** Drops a settled transaction; the table goes with the last one. */
  private forgetTransaction(transactionId: string): void {
    const pending = this.pending;
    if (pending === undefined) return;
    pending.delete(transactionId);
    if (pending.size === 0) this.pending = undefined;
  }

  private attachSession(session: MsrpSession, sender?: MsrpUri): void {
    // requests are routed by session-id: two sessions sharing one cannot share a connection
    if (this.bound.has(session.id))
      throw new CpmError("CPM_ERR_MSRP_SESSION_IN_USE", `session-id ${session.id} is bound to this connection`);
    session.attach(this, sender);
    this.bound.set(session.id, session);
    if (this.everBound) return;
    this.everBound = true;
    this.scheduleDeadline(); // no bind deadline any more
  }

  /**
   * The next deadline: the bind timeout while no session was ever bound, the
   * idle timeout (idleTimeoutMs after the last byte either way) when set. One
   * sweeper timer serves every connection (deadline-sweeper.ts).
   */
  private scheduleDeadline(): void {
    let at = Number.POSITIVE_INFINITY;
    let timeoutMs = 0;
    if (!this.everBound && this.bindDeadline > 0) {
      at = this.bindDeadline;
      timeoutMs = this.bindTimeoutMs;
    }
    if (this.idleTimeoutMs > 0 && this.lastActivity + this.idleTimeoutMs < at) {
      at = this.lastActivity + this.idleTimeoutMs;
      timeoutMs = this.idleTimeoutMs;
    }
    const sweeper = deadlineSweeper(this.resources);
    if (at === Number.POSITIVE_INFINITY) sweeper.cancel(this);
    else sweeper.schedule(this, at, timeoutMs);
  }

  /** @internal (sweeper) */
  deadlinePassed(now: number): void {
    if (this.closing) return;
    if (!this.everBound && this.bindDeadline > 0 && now >= this.bindDeadline) {
      this.log.info("no MSRP session bound in time, closing", { bindTimeoutMs: this.bindTimeoutMs });
      this.close("bind timeout");
    } else if (this.idleTimeoutMs > 0 && now - this.lastActivity >= this.idleTimeoutMs) {
      this.log.info("MSRP connection idle, closing", { idleTimeoutMs: this.idleTimeoutMs });
      this.close("idle timeout");
    } else {
      this.scheduleDeadline();
    }
  }

  /** The connection's child logger, made on first use: an idle connection holds none (RSS per idle session). */
  private get log(): Logger {
    if (this.childLog === undefined) this.childLog = this.baseLog.child({ msrpPeer: this.peer, msrpRole: this.role });
    return this.childLog;
  }

  private debug(message: string, meta?: Record<string, unknown>): void {
    if (this.baseLog.isDebugEnabled()) this.log.debug(message, meta);
  }

  /** Flushes what is queued (a last 481, say), then destroys the socket. */
  private finishSocket(): void {
    const socket = this.socket;
    if (socket.destroyed) return;
    if (socket.writableLength === 0 || socket.writableEnded) {
      socket.destroy();
      return;
    }
    socket.once("finish", () => socket.destroy());
    socket.end();
    // A peer that never reads would keep the socket half-written forever.
    const guard = this.resources.setTimer(5_000, () => socket.destroy());
    socket.once("close", () => this.resources.clearTimer(guard));
  }
}
