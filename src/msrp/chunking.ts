// Message chunking (RFC 4975 5.1, 7.1.1, 7.3.1). Sending: a message is cut
// into SEND chunks that share one Message-ID, each with its own transaction-id
// and Byte-Range, ending in `+` except the last (`$`). A 413 from the
// receiver stops the rest of the message. Receiving: chunks are put back
// together by Message-ID and Byte-Range, in any order; a `#` chunk means the
// sender gave the message up, and what was collected is dropped. Limits on the
// size of one message and on messages in flight per session keep memory
// bounded; going over either rejects the message with 413, and later chunks
// of it get 413 too, until the sender's last (`$` or `#`) chunk.
import type { ByteRange, FailureReport, HeaderField, MsrpRequest, SuccessReport } from "./frame.js";
import { newMessageId, newTransactionId } from "./ids.js";
import { mergeLimits } from "./limits.js";
import type { MsrpUri } from "./uri.js";

/** RFC 4975 7.1.1 advises chunks for bodies over about 2048 octets, so other messages can interleave. */
export const DEFAULT_CHUNK_SIZE = 2048;

export interface OutgoingMessage {
  body: Buffer;
  contentType: string;
  /** Default: a fresh Message-ID. */
  messageId?: string;
  successReport?: SuccessReport;
  failureReport?: FailureReport;
  /** Further MIME headers (Content-ID, Content-Disposition, ...), repeated on every chunk. */
  headers?: HeaderField[];
}

/**
 * Cuts one message into SEND chunks. Iterate it lazily: a large message is
 * never copied whole, and the caller may stop (after a 413) at any chunk.
 */
export class MessageChunker {
  readonly messageId: string;
  readonly total: number;
  private offset = 0;
  private first = true;
  private stoppedBy: number | undefined;

  constructor(
    private readonly message: OutgoingMessage,
    private readonly toPath: readonly MsrpUri[],
    private readonly fromPath: readonly MsrpUri[],
    private readonly chunkSize: number = DEFAULT_CHUNK_SIZE,
  ) {
    if (!Number.isInteger(chunkSize) || chunkSize < 1) throw new RangeError(`chunkSize must be a positive integer, got ${chunkSize}`);
    this.messageId = message.messageId ?? newMessageId();
    this.total = message.body.length;
  }

  /** The response code that stopped the message (413 ...), if any. */
  get stoppedWith(): number | undefined {
    return this.stoppedBy;
  }

  get done(): boolean {
    return this.stoppedBy !== undefined || (!this.first && this.offset >= this.total);
  }

  /** RFC 4975 7.1.1 / 10.5: after a 413 (or any error) for a chunk, the sender sends no more chunks of the message. */
  stop(code: number): void {
    if (this.stoppedBy === undefined) this.stoppedBy = code;
  }

  /** The next chunk, or undefined when the message is done or stopped. */
  next(): MsrpRequest | undefined {
    if (this.done) return undefined;
    this.first = false;
    const start = this.offset;
    const end = Math.min(this.total, start + this.chunkSize);
    this.offset = end;
    const body = this.message.body.subarray(start, end);
    const last = end >= this.total;
    const byteRange: ByteRange = { start: start + 1, end, total: this.total };
    const req: MsrpRequest = {
      kind: "request",
      method: "SEND",
      transactionId: newTransactionId(body),
      toPath: this.toPath,
      fromPath: this.fromPath,
      messageId: this.messageId,
      byteRange,
      headers: this.message.headers ?? [],
      contentType: this.message.contentType,
      body,
      continuation: last ? "$" : "+",
    };
    if (this.message.successReport !== undefined) req.successReport = this.message.successReport;
    if (this.message.failureReport !== undefined) req.failureReport = this.message.failureReport;
    return req;
  }

  *[Symbol.iterator](): Generator<MsrpRequest> {
    for (let c = this.next(); c !== undefined; c = this.next()) yield c;
  }
}

/** All chunks of a message at once (small messages, tests). */
export function chunkMessage(
  message: OutgoingMessage,
  toPath: readonly MsrpUri[],
  fromPath: readonly MsrpUri[],
  chunkSize = DEFAULT_CHUNK_SIZE,
): MsrpRequest[] {
  return [...new MessageChunker(message, toPath, fromPath, chunkSize)];
}

/**
 * A SEND without a body (RFC 4975 5.4 / RFC 6135): the active endpoint sends
 * one first thing on a new connection so the passive one can bind the
 * connection to the session; also usable as a keep-alive.
 */
export function makeEmptySend(toPath: readonly MsrpUri[], fromPath: readonly MsrpUri[]): MsrpRequest {
  return {
    kind: "request",
    method: "SEND",
    transactionId: newTransactionId(),
    toPath,
    fromPath,
    messageId: newMessageId(),
    byteRange: { start: 1, end: 0, total: 0 },
    headers: [],
    continuation: "$",
  };
}

// ---- receiving --------------------------------------------------------------

export interface ReassemblyLimits {
  /** Largest message accepted, in bytes (declared total or bytes received). */
  maxMessageBytes: number;
  /** Partially received messages one session may hold at once. */
  maxMessagesInFlight: number;
}

export const DEFAULT_REASSEMBLY_LIMITS: Readonly<ReassemblyLimits> = Object.freeze({
  maxMessageBytes: 1024 * 1024,
  maxMessagesInFlight: 16,
});

/** Rejected Message-IDs remembered so that their later chunks are refused without buffering. */
const STOPPED_MEMORY = 64;

export interface ReceivedMessage {
  messageId: string;
  contentType?: string;
  body: Buffer;
  /** 1-N/N over the bytes received. */
  byteRange: ByteRange;
  /** From the last chunk (RFC 4975 7.1.1: all chunks carry the same values). */
  successReport: SuccessReport;
  failureReport: FailureReport;
  /** From-Path of the last chunk: where REPORTs for the message go. */
  fromPath: readonly MsrpUri[];
  chunks: number;
  /** The sender's declared total, when it is not the number of bytes received. */
  declaredTotal?: number;
}

export type RejectReason = "no-message-id" | "message-too-large" | "too-many-in-flight" | "stopped";

export type ReassemblyOutcome =
  /** SEND without a body (bind, keep-alive): nothing to deliver. */
  | { kind: "empty" }
  | { kind: "partial"; messageId: string; receivedBytes: number }
  | { kind: "complete"; message: ReceivedMessage }
  /** `#`: the sender gave the message up; what was collected is dropped. */
  | { kind: "aborted"; messageId: string }
  | { kind: "rejected"; status: 400 | 413; reason: RejectReason; messageId?: string };

interface PartialMessage {
  pieces: { offset: number; data: Buffer }[];
  /** Merged [start, end) byte intervals received (0-based). */
  covered: [number, number][];
  stored: number;
  /** Exclusive end of the `$` chunk, once it has arrived. */
  lastEnd?: number;
  contentType?: string;
  declaredTotal?: number;
  chunks: number;
}

function insertInterval(list: [number, number][], s: number, e: number): void {
  if (e <= s) return;
  const out: [number, number][] = [];
  let placed = false;
  for (const [a, b] of list) {
    if (b < s) out.push([a, b]);
    else if (e < a) {
      if (!placed) {
        out.push([s, e]);
        placed = true;
      }
      out.push([a, b]);
    } else {
      s = Math.min(s, a);
      e = Math.max(e, b);
    }
  }
  if (!placed) out.push([s, e]);
  out.sort((x, y) => x[0] - y[0]);
  list.length = 0;
  list.push(...out);
}

/** Per-session reassembly of incoming SEND chunks. */
export class Reassembler {
  readonly limits: Readonly<ReassemblyLimits>;
  // Made on first use: an idle session holds no hash tables (RSS per idle session).
  private partialsMap: Map<string, PartialMessage> | undefined;
  private stoppedSet: Set<string> | undefined;
  private stored = 0;

  constructor(limits?: Partial<ReassemblyLimits>) {
    this.limits = mergeLimits(DEFAULT_REASSEMBLY_LIMITS, limits);
  }

  /** Bytes held for partially received messages. */
  get bufferedBytes(): number {
    return this.stored;
  }

  get messagesInFlight(): number {
    return this.partialsMap?.size ?? 0;
  }

  /** Nothing partially received and no refused message remembered: a fresh Reassembler would act the same. */
  get empty(): boolean {
    return (this.partialsMap?.size ?? 0) === 0 && (this.stoppedSet?.size ?? 0) === 0;
  }

  /** Drops everything (session closed). */
  clear(): void {
    this.partialsMap = undefined;
    this.stoppedSet = undefined;
    this.stored = 0;
  }

  /** Refuse the rest of a message whose chunk was answered 413 elsewhere (e.g. the parser's maxBodyBytes). */
  reject(messageId: string): void {
    this.drop(messageId);
    this.remember(messageId);
  }

  private get partials(): Map<string, PartialMessage> {
    this.partialsMap ??= new Map();
    return this.partialsMap;
  }

  accept(req: MsrpRequest): ReassemblyOutcome {
    const id = req.messageId;
    if (id === undefined) return req.body === undefined ? { kind: "empty" } : { kind: "rejected", status: 400, reason: "no-message-id" };
    if (this.stoppedSet?.has(id)) {
      if (req.continuation !== "+") this.stoppedSet.delete(id);
      return { kind: "rejected", status: 413, reason: "stopped", messageId: id };
    }
    if (req.continuation === "#") {
      this.drop(id);
      return { kind: "aborted", messageId: id };
    }
    if (req.body === undefined) return { kind: "empty" };

    const body = req.body;
    const offset = (req.byteRange?.start ?? 1) - 1;
    const end = offset + body.length;
    const total = req.byteRange?.total;
    const max = this.limits.maxMessageBytes;
    if ((typeof total === "number" && total > max) || end > max) return this.refuse(id, req, "message-too-large");

    let p = this.partialsMap?.get(id);
    if (p === undefined) {
      if (offset === 0 && req.continuation === "$") {
        // The whole message in one chunk: no copy, no state.
        return { kind: "complete", message: this.finish(id, req, body, 1, typeof total === "number" ? total : undefined) };
      }
      if (this.messagesInFlight >= this.limits.maxMessagesInFlight) return this.refuse(id, req, "too-many-in-flight");
      p = { pieces: [], covered: [], stored: 0, chunks: 0 };
      this.partials.set(id, p);
    }
    if (p.stored + body.length > max) {
      this.drop(id);
      return this.refuse(id, req, "message-too-large");
    }
    p.pieces.push({ offset, data: body });
    p.stored += body.length;
    this.stored += body.length;
    p.chunks++;
    insertInterval(p.covered, offset, end);
    if (req.continuation === "$") p.lastEnd = end;
    if (p.contentType === undefined && req.contentType !== undefined) p.contentType = req.contentType;
    if (typeof total === "number") p.declaredTotal = total;

    const first = p.covered[0];
    const lastEnd = p.lastEnd;
    if (lastEnd !== undefined && (lastEnd === 0 || (first !== undefined && first[0] === 0 && first[1] >= lastEnd))) {
      const whole = Buffer.alloc(lastEnd);
      for (const piece of p.pieces) {
        if (piece.offset < lastEnd) piece.data.copy(whole, piece.offset, 0, Math.min(piece.data.length, lastEnd - piece.offset));
      }
      const chunks = p.chunks;
      const declared = p.declaredTotal;
      const contentType = p.contentType;
      this.drop(id);
      const message = this.finish(id, req, whole, chunks, declared);
      if (contentType !== undefined) message.contentType = contentType;
      return { kind: "complete", message };
    }
    return { kind: "partial", messageId: id, receivedBytes: p.stored };
  }

  private finish(id: string, last: MsrpRequest, body: Buffer, chunks: number, declaredTotal: number | undefined): ReceivedMessage {
    const message: ReceivedMessage = {
      messageId: id,
      body,
      byteRange: { start: 1, end: body.length, total: body.length },
      successReport: last.successReport ?? "no",
      failureReport: last.failureReport ?? "yes",
      fromPath: last.fromPath,
      chunks,
    };
    if (last.contentType !== undefined) message.contentType = last.contentType;
    if (declaredTotal !== undefined && declaredTotal !== body.length) message.declaredTotal = declaredTotal;
    return message;
  }

  private refuse(id: string, req: MsrpRequest, reason: RejectReason): ReassemblyOutcome {
    this.drop(id);
    if (req.continuation === "+") this.remember(id);
    return { kind: "rejected", status: 413, reason, messageId: id };
  }

  private drop(id: string): void {
    const p = this.partialsMap?.get(id);
    if (p === undefined) return;
    this.stored -= p.stored;
    this.partialsMap?.delete(id);
  }

  private remember(id: string): void {
    this.stoppedSet ??= new Set();
    this.stoppedSet.add(id);
    if (this.stoppedSet.size > STOPPED_MEMORY) {
      const oldest = this.stoppedSet.values().next();
      if (!oldest.done) this.stoppedSet.delete(oldest.value);
    }
  }
}
