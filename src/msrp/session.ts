// One MSRP session (RFC 4975 5.2): our URI (whose session-id names it), the
// peer's path, the reassembly of incoming chunks and the sending of whole
// messages in chunks. receive() decides what an incoming request gets
// (response code, REPORTs) and the connection writes it; the session never
// touches the socket itself.
import { EventEmitter } from "node:events";
import { CpmError } from "../errors/catalogue.js";
import { componentLogger, type Logger } from "../log/logger.js";
import {
  DEFAULT_CHUNK_SIZE,
  MessageChunker,
  type OutgoingMessage,
  Reassembler,
  type ReassemblyLimits,
  type ReceivedMessage,
} from "./chunking.js";
import type { FailureReport, MsrpRequest, SuccessReport } from "./frame.js";
import { shouldRespond, successReportFor } from "./reports.js";
import { type MsrpResources, msrpResources } from "./resources.js";
import { formatMsrpUri, type MsrpUri, msrpUriEquals } from "./uri.js";

/** What MsrpSession needs from the connection it is bound to (see connection.ts). */
export interface SessionTransport {
  /** Writes a request; `verdict` settles with the response code (408 on timeout, 200 when no response is expected). */
  request(req: MsrpRequest, owner: MsrpSession, onLateError?: (code: number) => void): { written: Promise<void>; verdict: Promise<number> };
  detach(session: MsrpSession): void;
}

export interface MsrpSessionOptions {
  /** Our URI (the last URI of our a=path); must carry the session-id. */
  localUri: MsrpUri;
  /** The peer's a=path, relays first: the To-Path of what we send. */
  remotePath: MsrpUri[];
  reassembly?: Partial<ReassemblyLimits>;
  /** Bytes per outgoing chunk; default DEFAULT_CHUNK_SIZE (2048). */
  chunkSize?: number;
  /** Chunks of one message sent ahead of the oldest unanswered one; default DEFAULT_CHUNK_WINDOW (4). */
  chunkWindow?: number;
  /** Put on outgoing messages unless send() says otherwise; absent = RFC defaults (no / yes). */
  successReport?: SuccessReport;
  failureReport?: FailureReport;
  /**
   * Session matching (RFC 4975 5.4, 14): also require the last From-Path URI
   * of every request to equal (RFC 4975 6.1) the last URI of remotePath, the
   * peer's own URI however relays rewrite the hops before it; the connection
   * answers others 403 (connection.ts). Off by default.
   */
  verifyFromPath?: boolean;
  /**
   * remotePath is a stand-in until learnRemotePath() (the peer's SDP answer
   * has not arrived): a peer that connects first binds on its word, and is
   * checked once the path is known.
   */
  remotePathPending?: boolean;
  /** a=accept-types: media types accepted in SEND bodies (`*`, `type/*`, `type/subtype`); others get 415. Default: all. */
  acceptTypes?: string[];
  logger?: Logger;
  resources?: MsrpResources;
}

export type SessionState = "unbound" | "bound" | "closed";

/**
 * Lets a "message" listener delay the response to the chunk that completed the
 * message until `verdict` settles with the code to send (e.g. 200 once the
 * message is stored or relayed; a rejection answers 403). Call it synchronously
 * from the listener; the success REPORT, if any, follows a 2xx verdict.
 */
export type HoldResponse = (verdict: Promise<number>) => void;

export interface SessionEvents {
  /** A whole message arrived (all chunks). `hold` is optional to use (see HoldResponse). */
  message: [message: ReceivedMessage, hold: HoldResponse];
  /** A REPORT for a message we sent. */
  report: [report: MsrpRequest];
  bound: [];
  close: [reason: string];
}

/** What the connection does with an incoming request after the session has looked at it. */
export interface IncomingActions {
  /** Response code to send back one hop; undefined when Failure-Report (or the method) wants none. */
  respond?: number;
  /** REPORTs to send (success reports for whole messages). */
  reports: MsrpRequest[];
  /** A listener held the response (HoldResponse): answer with this code once settled; `reports` only after a 2xx. */
  respondLater?: Promise<number>;
}

export interface SendResult {
  messageId: string;
  /** 200, or the first error code that stopped the message (413, 481, 408 for no answer in time...). */
  code: number;
  chunks: number;
}

/** Chunks of one message on the wire before the sender waits for the oldest response. */
export const DEFAULT_CHUNK_WINDOW = 4;

function mediaTypeOf(contentType: string): string {
  return (contentType.split(";")[0] ?? "").trim().toLowerCase();
}

export class MsrpSession extends EventEmitter<SessionEvents> {
  readonly id: string;
  readonly localUri: MsrpUri;
  readonly remotePath: MsrpUri[];
  /** Made by the first chunk, dropped once it holds nothing: an idle session keeps none (RSS per idle session). */
  private reassembly: Reassembler | undefined;
  private readonly options: MsrpSessionOptions;
  private readonly baseLog: Logger;
  private childLog: Logger | undefined;
  private readonly resources: MsrpResources;
  private transport: SessionTransport | undefined;
  private current: SessionState = "unbound";
  private refusal: number | undefined;
  private remotePathPending: boolean;
  /** The sender (last From-Path URI) of the request that bound a passive session, checked once the path is learnt. */
  private boundBy: MsrpUri | undefined;
  /** Messages received while the path was pending, in arrival order (made with the first). */
  private awaitingPath: ((peer: boolean | undefined) => void)[] | undefined;

  constructor(options: MsrpSessionOptions) {
    super();
    if (options.localUri.sessionId === undefined) throw new CpmError("CPM_ERR_MSRP_URI", "the local MSRP URI has no session-id");
    if (options.remotePath.length === 0) throw new CpmError("CPM_ERR_MSRP_URI", "the remote MSRP path is empty");
    this.id = options.localUri.sessionId;
    this.localUri = options.localUri;
    this.remotePath = options.remotePath;
    this.remotePathPending = options.remotePathPending === true;
    this.options = options;
    this.baseLog = options.logger ?? componentLogger("msrp");
    this.resources = options.resources ?? msrpResources;
    this.resources.sessionOpened(this);
  }

  get state(): SessionState {
    return this.current;
  }

  /** The connection the session is bound to, if any. */
  get connection(): SessionTransport | undefined {
    return this.transport;
  }

  /** Whether the peer's path is still the stand-in (remotePathPending until learnRemotePath()). */
  get pathPending(): boolean {
    return this.remotePathPending;
  }

  /** The sender (last From-Path URI) whose request bound this passive session, if any. */
  get boundSender(): MsrpUri | undefined {
    return this.boundBy;
  }

  /** Bytes of partially received messages. */
  get bufferedBytes(): number {
    return this.reassembly?.bufferedBytes ?? 0;
  }

  /** @internal The connection took the session (passive: first request named it, from `sender`; active: bind()). */
  attach(transport: SessionTransport, sender?: MsrpUri): void {
    if (this.current !== "unbound") throw new CpmError("CPM_ERR_MSRP_SESSION_IN_USE", `session ${this.id} is ${this.current}`);
    this.transport = transport;
    this.boundBy = sender;
    this.current = "bound";
    this.debug("session bound");
    this.emit("bound");
  }

  /** Decides what an incoming request for this session gets, delivering whole messages and REPORTs. */
  receive(req: MsrpRequest): IncomingActions {
    const reports: MsrpRequest[] = [];
    if (this.current === "closed") return shouldRespond(req, 481) ? { respond: 481, reports } : { reports };
    let code: number;
    switch (req.method) {
      case "SEND": {
        if (this.refusal !== undefined) {
          code = this.refusal;
          this.debug("SEND refused", { messageId: req.messageId, code });
          break;
        }
        if (req.body !== undefined && req.contentType !== undefined && !this.accepts(req.contentType)) {
          code = 415;
          break;
        }
        const outcome = this.reassembler.accept(req);
        if (this.reassembly?.empty) this.reassembly = undefined;
        if (outcome.kind === "rejected") {
          code = outcome.status;
          this.log.info("message refused", { messageId: outcome.messageId, code, reason: outcome.reason });
          break;
        }
        code = 200;
        if (outcome.kind === "complete") {
          const m = outcome.message;
          this.debug("message received", {
            messageId: m.messageId,
            bytes: m.body.length,
            chunks: m.chunks,
            contentType: m.contentType,
          });
          const sr = successReportFor(m, this.localUri);
          if (sr !== undefined) reports.push(sr);
          // RFC 4975 14: whoever bound the session before its path was known is checked first; its messages wait for that
          if (this.remotePathPending && this.options.verifyFromPath === true) return { reports, respondLater: this.afterPathKnown(m) };
          const held = this.emitMessage(m);
          if (held !== undefined) return { reports, respondLater: held };
        } else if (outcome.kind === "aborted") {
          this.debug("message aborted by sender", { messageId: outcome.messageId });
        }
        break;
      }
      case "REPORT":
        // 7.1.2: REPORTs get no response.
        this.safeEmit("report", req);
        return { reports };
      default:
        code = 501;
    }
    const actions: IncomingActions = { reports };
    if (shouldRespond(req, code)) actions.respond = code;
    return actions;
  }

  /** Whether the request comes from the peer this session expects (always true unless verifyFromPath; true while the path is pending). */
  isFromPeer(req: Pick<MsrpRequest, "fromPath">): boolean {
    return this.isPeer(req.fromPath[req.fromPath.length - 1]);
  }

  /**
   * The peer's path from its SDP answer replaces the stand-in. A session that
   * a foreign sender bound meanwhile (RFC 4975 14: whoever learnt our URI) is
   * taken back: it leaves that connection, unbound again for the peer, and
   * the refusal is logged and counted. Returns false in that case.
   */
  learnRemotePath(path: readonly MsrpUri[]): boolean {
    this.remotePath.splice(0, this.remotePath.length, ...path);
    this.remotePathPending = false;
    const by = this.boundBy;
    if (this.current !== "bound" || by === undefined || this.isPeer(by)) {
      this.settleAwaitingPath(true);
      return true;
    }
    this.settleAwaitingPath(false);
    this.resources.refusals.foreignSenders++;
    this.log.warn("MSRP session was bound by a sender that is not the peer, unbinding it", {
      sender: formatMsrpUri(by),
      expected: formatMsrpUri(path[path.length - 1] as MsrpUri),
    });
    const transport = this.transport;
    this.transport = undefined;
    this.boundBy = undefined;
    this.current = "unbound";
    this.reassembly = undefined;
    transport?.detach(this);
    return false;
  }

  /** The message's listener verdict (HoldResponse), if it held the response. */
  private emitMessage(m: ReceivedMessage): Promise<number> | undefined {
    const held: { verdict?: Promise<number> } = {};
    this.safeEmit("message", m, (verdict) => {
      held.verdict = verdict;
    });
    return held.verdict;
  }

  /** Delivers `m` once learnRemotePath() found the binder to be the peer; 403 when it is not, 481 when the session ends first. */
  private afterPathKnown(m: ReceivedMessage): Promise<number> {
    return new Promise<number>((resolve) => {
      this.awaitingPath ??= [];
      this.awaitingPath.push((peer) => {
        if (peer === undefined) resolve(481);
        else if (!peer) resolve(403);
        else resolve(this.emitMessage(m) ?? 200);
      });
    });
  }

  /** Settles the messages that waited for the peer's path: delivered (true), refused (false), session gone (undefined). */
  private settleAwaitingPath(peer: boolean | undefined): void {
    const waiting = this.awaitingPath;
    this.awaitingPath = undefined;
    for (const settle of waiting ?? []) settle(peer);
  }

  /** Whether `sender` (a last From-Path URI) is the peer this session expects (always true unless verifyFromPath; true while the path is pending). */
  isPeer(sender: MsrpUri | undefined): boolean {
    if (this.options.verifyFromPath !== true || this.remotePathPending) return true;
    const expected = this.remotePath[this.remotePath.length - 1];
    return sender !== undefined && expected !== undefined && msrpUriEquals(sender, expected);
  }

  /**
   * From now on every incoming SEND gets `code` and is discarded, the session
   * staying bound (e.g. 481 for what a client still sends after the SIP BYE,
   * OMA CPM 8.3.2.3, BYE-B6).
   */
  refuseIncoming(code: number): void {
    this.refusal = code;
  }

  /** Refuses the rest of a message (its chunk was answered 413 before reaching the session, e.g. maxBodyBytes). */
  rejectMessage(messageId: string): void {
    this.reassembler.reject(messageId);
  }

  /**
   * Sends one message in chunks over the bound connection. Resolves with 200
   * or with the code that stopped it; rejects with CPM_ERR_MSRP_CONNECTION if
   * the session is not bound or the connection goes away meanwhile.
   * `hooks.written` runs once the last chunk is written, before the answers.
   */
  async send(message: OutgoingMessage, hooks: { written?: () => void } = {}): Promise<SendResult> {
    const transport = this.transport;
    if (this.current !== "bound" || transport === undefined)
      throw new CpmError("CPM_ERR_MSRP_CONNECTION", `session ${this.id} is ${this.current}`);
    const spec: OutgoingMessage = { ...message };
    if (spec.successReport === undefined && this.options.successReport !== undefined) spec.successReport = this.options.successReport;
    if (spec.failureReport === undefined && this.options.failureReport !== undefined) spec.failureReport = this.options.failureReport;
    const chunker = new MessageChunker(spec, this.remotePath, [this.localUri], this.options.chunkSize ?? DEFAULT_CHUNK_SIZE);
    const window = Math.max(1, this.options.chunkWindow ?? DEFAULT_CHUNK_WINDOW);
    const inFlight: Promise<void>[] = [];
    let chunks = 0;
    for (let chunk = chunker.next(); chunk !== undefined; chunk = chunker.next()) {
      chunks++;
      const tx = transport.request(chunk, this, (late) => chunker.stop(late));
      const verdict = tx.verdict.then((code) => {
        if (code >= 300) chunker.stop(code);
      });
      verdict.catch(() => {}); // awaited below; this only keeps an early exit from leaving it unhandled
      inFlight.push(verdict);
      await tx.written;
      // Wait for the oldest chunk's answer before going further, so a 413 stops the rest (RFC 4975 10.5).
      if (inFlight.length >= window) await inFlight.shift();
    }
    // every chunk is on the connection: a caller keeping order may start the next message (RFC 4975 7.1.1 keeps no order across messages itself)
    hooks.written?.();
    await Promise.all(inFlight);
    const code = chunker.stoppedWith ?? 200;
    this.debug("message sent", { messageId: chunker.messageId, bytes: chunker.total, chunks, code });
    return { messageId: chunker.messageId, code, chunks };
  }

  /** Ends the session: drops partial messages, leaves the connection (which closes when no session is left on it). */
  close(reason = "closed"): void {
    if (this.current === "closed") return;
    const transport = this.transport;
    this.finish(reason);
    transport?.detach(this);
  }

  /** @internal The connection went away under the session. */
  connectionLost(reason: string): void {
    this.finish(reason);
  }

  /** Short form for logs: the local URI. */
  override toString(): string {
    return formatMsrpUri(this.localUri);
  }

  private finish(reason: string): void {
    if (this.current === "closed") return;
    this.current = "closed";
    this.settleAwaitingPath(undefined);
    this.transport = undefined;
    this.reassembly = undefined;
    this.resources.sessionClosed(this);
    this.debug("session closed", { reason });
    this.safeEmit("close", reason);
  }

  private get reassembler(): Reassembler {
    this.reassembly ??= new Reassembler(this.options.reassembly);
    return this.reassembly;
  }

  private accepts(contentType: string): boolean {
    const accept = this.options.acceptTypes;
    if (accept === undefined) return true;
    const type = mediaTypeOf(contentType);
    const major = type.split("/")[0];
    return accept.some((a) => {
      const t = a.toLowerCase();
      return t === "*" || t === type || (t.endsWith("/*") && t.slice(0, -2) === major);
    });
  }

  /** The session's child logger, made on first use: an idle session holds none (RSS per idle session). */
  private get log(): Logger {
    if (this.childLog === undefined) this.childLog = this.baseLog.child({ msrpSession: this.id });
    return this.childLog;
  }

  private debug(message: string, meta?: Record<string, unknown>): void {
    if (this.baseLog.isDebugEnabled()) this.log.debug(message, meta);
  }

  /** A listener that throws must not break the connection's read loop. */
  private safeEmit<K extends keyof SessionEvents>(event: K, ...args: SessionEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: SessionEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.log.error("session listener threw", { event, err: err instanceof Error ? err.message : String(err) });
    }
  }
}
