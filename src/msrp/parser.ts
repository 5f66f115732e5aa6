// Streaming MSRP frame parser (RFC 4975 5.1, 9). Push byte slices of any size
// (down to one byte); each complete frame comes back as an event from the
// push() that completed it. A body ends at the first CRLF + `-------<tid>` +
// flag + CRLF of ITS transaction-id, so bodies may hold anything, end-lines
// of other transactions included.
//
// Limits keep memory bounded: the parser never holds more than
// maxHeaderBytes + maxBodyBytes + one end-line (MAX_END_LINE_BYTES). A limit
// or syntax violation becomes an error event, never an exception: when the
// transaction-id is known the event says which status to answer (400 / 413)
// and the parser skips to that transaction's end-line by itself ("resync");
// when it is not (garbage start line, wrong end-line), or when that end-line
// does not come within maxSkipBytes, the event is fatal, framing is lost, and
// the caller should close the connection: a parser never skips for ever.
import type { ContinuationFlag, HeaderField, MsrpFrame, MsrpRequestHead, MsrpResponse } from "./frame.js";
import { HEADER_NAME_RE } from "./frame.js";
import { isAcceptableMessageId, parseByteRange, parseFailureReport, parseStatus, parseSuccessReport } from "./headers.js";
import { mergeLimits } from "./limits.js";
import { type MsrpUri, parseFramePath } from "./uri.js";

export interface MsrpParserLimits {
  /** Start line and header block, CRLFs included (and the end-line of a body-less frame). */
  maxHeaderBytes: number;
  /** Body of one chunk (one SEND), before its end-line. */
  maxBodyBytes: number;
  /** Bytes skipped looking for the end-line of a frame refused mid-way (RFC 4975 9); past them framing counts as lost. */
  maxSkipBytes: number;
}

export const DEFAULT_PARSER_LIMITS: Readonly<MsrpParserLimits> = Object.freeze({
  maxHeaderBytes: 16 * 1024,
  maxBodyBytes: 256 * 1024,
  maxSkipBytes: 1024 * 1024,
});

/** CRLF + `-------` + a 32-character transaction-id + flag + CRLF. */
export const MAX_END_LINE_BYTES = 2 + 7 + 32 + 1 + 2;

export type MsrpParseErrorReason =
  | "start-line" // not `MSRP <tid> <METHOD>` / `MSRP <tid> <code> [comment]`: fatal
  | "end-line" // a `-------` line with another transaction-id: fatal
  | "header" // a header that does not parse, or a missing To-Path / From-Path / Content-Type: 400
  | "header-too-large" // maxHeaderBytes: 400
  | "body-too-large" // maxBodyBytes: 413
  | "resync-lost" // no end-line of the skipped frame within maxSkipBytes: fatal
  | "internal"; // a bug in this parser: fatal

export interface MsrpParseError {
  reason: MsrpParseErrorReason;
  /** The limit that was exceeded, for the two *-too-large reasons. */
  limit?: keyof MsrpParserLimits;
  /** The response a request should get (when it gets one at all: see reports.ts). */
  status: 400 | 413;
  /** Framing is lost: nothing more will be parsed; close the connection. */
  fatal: boolean;
  detail: string;
  transactionId?: string;
  /** The offending frame is a response (responses are never answered). */
  isResponse: boolean;
  method?: string;
  /** Whatever header fields did parse (From-Path for addressing the answer, Message-ID, Byte-Range, Failure-Report...). */
  head?: Partial<MsrpRequestHead>;
}

export type MsrpParseEvent =
  | { type: "frame"; frame: MsrpFrame }
  | { type: "error"; error: MsrpParseError }
  /** The parser found the end-line of a frame it had been skipping after a non-fatal error. */
  | { type: "resync"; transactionId: string; continuation: ContinuationFlag };

const CR = 0x0d;
const LF = 0x0a;
const EMPTY = Buffer.alloc(0);
const START_RE = /^MSRP ([A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}) (?:([A-Z]+)|([0-9]{3})(?: (.*))?)$/;
const MSRP_SP = Buffer.from("MSRP ", "latin1");
const IDENT_CHAR = /[A-Za-z0-9.\-+%=]/;
const INITIAL_HEAD_CAPACITY = 1024;

interface StartLine {
  transactionId: string;
  method?: string;
  code?: number;
  comment?: string;
}

type State = "head" | "body" | "skip" | "failed";

interface BuiltHead {
  head: Partial<MsrpRequestHead> & { toPath?: readonly MsrpUri[]; fromPath?: readonly MsrpUri[] };
  errors: string[];
}

export class MsrpParser {
  readonly limits: Readonly<MsrpParserLimits>;
  private state: State = "head";
  /** Header bytes of the frame in progress; allocated with the first byte (an idle parser holds none). */
  private head: Buffer = EMPTY;
  private headLen = 0;
  private lineStart = 0;
  private start: StartLine | undefined;
  private rawHeaders: HeaderField[] = [];
  private lineErrors: string[] = [];
  private pending: MsrpRequestHead | undefined;
  private bodyChunks: Buffer[] = [];
  private bodyLen = 0;
  private carry: Buffer = EMPTY;
  private pattern: Buffer = EMPTY;
  /** Bytes discarded in "skip" state since the refused frame's error. */
  private skipped = 0;

  constructor(limits?: Partial<MsrpParserLimits>) {
    this.limits = mergeLimits(DEFAULT_PARSER_LIMITS, limits);
  }

  /** Bytes held for the frame in progress; never above maxHeaderBytes + maxBodyBytes + MAX_END_LINE_BYTES. */
  get bufferedBytes(): number {
    return this.headLen + this.bodyLen + this.carry.length;
  }

  /** Between frames with nothing buffered: dropping the parser now loses nothing. */
  get idle(): boolean {
    return this.state === "head" && this.start === undefined && this.headLen === 0 && this.carry.length === 0;
  }

  /** A fatal error happened; further input is ignored until reset(). */
  get failed(): boolean {
    return this.state === "failed";
  }

  /** Drops any partial frame and starts afresh. */
  reset(): void {
    this.state = "head";
    this.clearFrame();
  }

  /** Feeds bytes; returns the events they completed. Never throws. */
  push(chunk: Uint8Array): MsrpParseEvent[] {
    const events: MsrpParseEvent[] = [];
    if (this.state === "failed" || chunk.length === 0) return events;
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    try {
      let off = 0;
      while (off < buf.length && !this.failed) {
        off = this.state === "head" ? this.feedHead(buf, off, events) : this.feedBody(buf, off, events);
      }
    } catch (err) {
      this.fail(events, "internal", `parser bug: ${err instanceof Error ? err.message : String(err)}`);
    }
    return events;
  }

  // ---- header block -------------------------------------------------------

  private feedHead(buf: Buffer, off: number, events: MsrpParseEvent[]): number {
    const lf = buf.indexOf(LF, off);
    const end = lf < 0 ? buf.length : lf + 1;
    if (this.headLen + (end - off) > this.limits.maxHeaderBytes) {
      this.headOverflow(events);
      return off;
    }
    this.appendHead(buf, off, end);
    if (lf < 0) {
      if (this.start === undefined && !this.startPrefixOk())
        this.fail(events, "start-line", "input does not start with an MSRP start line");
      return end;
    }
    this.onLine(events);
    return end;
  }

  private appendHead(buf: Buffer, from: number, to: number): void {
    const need = this.headLen + (to - from);
    if (need > this.head.length) {
      let cap = Math.max(this.head.length * 2, INITIAL_HEAD_CAPACITY);
      while (cap < need) cap *= 2;
      // Not zero-filled (only bytes below headLen are ever read); small ones come from Node's buffer pool.
      const grown = Buffer.allocUnsafe(Math.min(Math.max(cap, need), Math.max(this.limits.maxHeaderBytes, need)));
      this.head.copy(grown, 0, 0, this.headLen);
      this.head = grown;
    }
    buf.copy(this.head, this.headLen, from, to);
    this.headLen = need;
  }

  /** Early rejection of garbage: the partial first line must look like `MSRP <ident-chars>`. */
  private startPrefixOk(): boolean {
    const len = this.headLen;
    if (len === 1 && this.head[0] === CR) return true; // maybe a stray CRLF between frames
    for (let i = 0; i < Math.min(len, 5); i++) if (this.head[i] !== MSRP_SP[i]) return false;
    for (let i = 5; i < Math.min(len, 5 + 33); i++) {
      const c = String.fromCharCode(this.head[i] as number);
      if (c === " ") return i - 5 >= 4;
      if (!IDENT_CHAR.test(c) || i - 5 >= 32) return false;
    }
    return true;
  }

  private onLine(events: MsrpParseEvent[]): void {
    const lineEnd = this.headLen;
    const crlf = lineEnd - this.lineStart >= 2 && this.head[lineEnd - 2] === CR;
    const text = this.head.toString("utf8", this.lineStart, lineEnd - (crlf ? 2 : 1));
    this.lineStart = lineEnd;

    if (this.start === undefined) {
      if (text === "" && crlf) {
        // A stray CRLF between frames: tolerated and forgotten.
        this.headLen = 0;
        this.lineStart = 0;
        return;
      }
      const m = crlf ? START_RE.exec(text) : null;
      if (!m) {
        this.fail(events, "start-line", "malformed start line");
        return;
      }
      const transactionId = m[1] as string;
      this.start = m[2] !== undefined ? { transactionId, method: m[2] } : { transactionId, code: Number(m[3]) };
      if (m[4] !== undefined && m[4].length > 0) this.start.comment = m[4];
      this.pattern = Buffer.from(`\r\n-------${transactionId}`, "latin1");
      return;
    }
    if (!crlf) this.lineErrors.push("line ends in a bare LF");
    if (text.startsWith("-------")) {
      const tid = this.start.transactionId;
      const flag = text.slice(7 + tid.length);
      if (text.slice(7, 7 + tid.length) === tid && (flag === "$" || flag === "+" || flag === "#") && crlf) {
        this.endWithoutBody(events, flag);
      } else {
        this.fail(events, "end-line", "end-line does not match the transaction-id");
      }
      return;
    }
    if (text === "") {
      this.beginBody(events);
      return;
    }
    const colon = text.indexOf(":");
    const name = colon > 0 ? text.slice(0, colon) : "";
    if (!HEADER_NAME_RE.test(name)) {
      this.lineErrors.push(`malformed header line`);
      return;
    }
    this.rawHeaders.push({
      name,
      value: text
        .slice(colon + 1)
        .replace(/^[ \t]+/, "")
        .replace(/[ \t]+$/, ""),
    });
  }

  private buildHead(): BuiltHead {
    const start = this.start as StartLine;
    const isRequest = start.method !== undefined;
    const errors = [...this.lineErrors];
    const head: BuiltHead["head"] = { transactionId: start.transactionId, headers: [] };
    const seen = new Set<string>();
    for (const h of this.rawHeaders) {
      const lname = h.name.toLowerCase();
      const typed = lname === "to-path" || lname === "from-path" || (isRequest && REQUEST_TYPED.has(lname));
      if (!typed) {
        (head.headers as HeaderField[]).push(h);
        continue;
      }
      if (seen.has(lname)) {
        errors.push(`duplicate ${h.name}`);
        continue;
      }
      seen.add(lname);
      switch (lname) {
        case "to-path":
        case "from-path":
          try {
            head[lname === "to-path" ? "toPath" : "fromPath"] = parseFramePath(h.value);
          } catch (err) {
            errors.push(err instanceof Error ? err.message : String(err));
          }
          break;
        case "message-id":
          if (isAcceptableMessageId(h.value)) head.messageId = h.value;
          else errors.push("bad Message-ID");
          break;
        case "byte-range": {
          const r = parseByteRange(h.value);
          if (r) head.byteRange = r;
          else errors.push("bad Byte-Range");
          break;
        }
        case "success-report": {
          const v = parseSuccessReport(h.value);
          if (v) head.successReport = v;
          else errors.push("bad Success-Report");
          break;
        }
        case "failure-report": {
          const v = parseFailureReport(h.value);
          if (v) head.failureReport = v;
          else errors.push("bad Failure-Report");
          break;
        }
        case "status": {
          const v = parseStatus(h.value);
          if (v) head.status = v;
          else errors.push("bad Status");
          break;
        }
        case "content-type":
          if (/^[^\s/;]+\/[^\s;]+/.test(h.value)) head.contentType = h.value;
          else errors.push("bad Content-Type");
          break;
      }
    }
    if (!head.toPath && !seen.has("to-path")) errors.push("missing To-Path");
    if (!head.fromPath && !seen.has("from-path")) errors.push("missing From-Path");
    return { head, errors };
  }

  private endWithoutBody(events: MsrpParseEvent[], flag: ContinuationFlag): void {
    const { head, errors } = this.buildHead();
    if (errors.length > 0) this.frameError(events, "header", errors.join("; "), head);
    else events.push({ type: "frame", frame: this.makeFrame(head, flag, undefined) });
    this.clearFrame();
  }

  private beginBody(events: MsrpParseEvent[]): void {
    const { head, errors } = this.buildHead();
    const start = this.start as StartLine;
    if (start.method === undefined) errors.push("a response cannot carry a body");
    else if (head.contentType === undefined) errors.push("a body without Content-Type");
    if (errors.length > 0) {
      this.frameError(events, "header", errors.join("; "), head);
      this.toSkip(this.carry);
      return;
    }
    this.pending = this.makeFrame(head, "$", undefined) as MsrpRequestHead;
    this.state = "body";
    this.carry = EMPTY;
  }

  private headOverflow(events: MsrpParseEvent[]): void {
    if (this.start === undefined) {
      this.fail(events, "start-line", `start line longer than maxHeaderBytes (${this.limits.maxHeaderBytes})`);
      return;
    }
    const { head } = this.buildHead();
    this.frameError(
      events,
      "header-too-large",
      `header block exceeds maxHeaderBytes (${this.limits.maxHeaderBytes})`,
      head,
      "maxHeaderBytes",
    );
    // Keep the last two bytes: they may be the CRLF in front of the end-line.
    this.toSkip(Buffer.from(this.head.subarray(Math.max(0, this.headLen - 2), this.headLen)));
  }

  // ---- body and skipping ----------------------------------------------------

  private feedBody(buf: Buffer, off: number, events: MsrpParseEvent[]): number {
    const keep = this.state === "body";
    const carried = this.carry.length;
    const data = carried > 0 ? Buffer.concat([this.carry, buf.subarray(off)]) : buf.subarray(off);
    const p = this.pattern;
    const endLen = p.length + 3;
    let from = 0;
    for (;;) {
      const idx = data.indexOf(p, from);
      if (idx < 0) {
        const keepFrom = Math.max(0, data.length - (p.length - 1));
        if (!this.confirm(data.subarray(0, keepFrom), keep, events)) return this.skipRest(off, data, keepFrom, carried);
        if (!keep && !this.discard(keepFrom, events)) return buf.length;
        this.carry = Buffer.from(data.subarray(keepFrom));
        return buf.length;
      }
      if (data.length < idx + endLen) {
        if (!this.confirm(data.subarray(0, idx), keep, events)) return this.skipRest(off, data, idx, carried);
        if (!keep && !this.discard(idx, events)) return buf.length;
        this.carry = Buffer.from(data.subarray(idx));
        return buf.length;
      }
      const flag = String.fromCharCode(data[idx + p.length] as number);
      if ((flag === "$" || flag === "+" || flag === "#") && data[idx + p.length + 1] === CR && data[idx + p.length + 2] === LF) {
        if (!this.confirm(data.subarray(0, idx), keep, events)) return this.skipRest(off, data, idx, carried);
        const consumed = idx + endLen - carried;
        this.endBody(events, flag);
        return off + consumed;
      }
      from = idx + 1;
    }
  }

  /** Skip state: `bytes` more are dropped; false (and fatal) once maxSkipBytes is passed without the end-line. */
  private discard(bytes: number, events: MsrpParseEvent[]): boolean {
    this.skipped += bytes;
    if (this.skipped <= this.limits.maxSkipBytes) return true;
    this.fail(
      events,
      "resync-lost",
      `no end-line of transaction ${(this.start as StartLine).transactionId} within maxSkipBytes (${this.limits.maxSkipBytes})`,
    );
    return false;
  }

  /** Body limit hit inside this push: drop what was kept and continue scanning from `at` in skip mode. */
  private skipRest(off: number, data: Buffer, at: number, carried: number): number {
    // Bytes of data before `at` are body, now discarded; rescan the rest as skip input.
    this.carry = EMPTY;
    const consumedFromBuf = at - carried;
    if (consumedFromBuf >= 0) return off + consumedFromBuf;
    // `at` lies inside the old carry: keep that tail as carry and resume at the same offset.
    this.carry = Buffer.from(data.subarray(at, carried));
    return off;
  }

  /** Accepts body bytes; false when maxBodyBytes is exceeded (the parser has switched to skipping). */
  private confirm(bytes: Buffer, keep: boolean, events: MsrpParseEvent[]): boolean {
    if (!keep || bytes.length === 0) return true;
    if (this.bodyLen + bytes.length > this.limits.maxBodyBytes) {
      // The end-line flag is not known yet: the head is reported without one.
      const head: Partial<MsrpRequestHead> = { ...(this.pending as MsrpRequestHead) };
      delete head.continuation;
      this.frameError(events, "body-too-large", `chunk body exceeds maxBodyBytes (${this.limits.maxBodyBytes})`, head, "maxBodyBytes");
      this.bodyChunks = [];
      this.bodyLen = 0;
      this.pending = undefined;
      this.state = "skip";
      return false;
    }
    this.bodyChunks.push(Buffer.from(bytes));
    this.bodyLen += bytes.length;
    return true;
  }

  private endBody(events: MsrpParseEvent[], flag: ContinuationFlag): void {
    if (this.state === "body" && this.pending) {
      const frame = { ...this.pending, continuation: flag, body: Buffer.concat(this.bodyChunks, this.bodyLen) };
      events.push({ type: "frame", frame });
    } else {
      events.push({ type: "resync", transactionId: (this.start as StartLine).transactionId, continuation: flag });
    }
    this.clearFrame();
  }

  private toSkip(carry: Buffer): void {
    this.headLen = 0;
    this.lineStart = 0;
    this.rawHeaders = [];
    this.lineErrors = [];
    this.shrinkHead();
    this.carry = carry;
    this.state = "skip";
  }

  // ---- helpers -------------------------------------------------------------

  private makeFrame(head: BuiltHead["head"], flag: ContinuationFlag, body: Buffer | undefined): MsrpFrame {
    const start = this.start as StartLine;
    const toPath = head.toPath ?? [];
    const fromPath = head.fromPath ?? [];
    const headers = head.headers ?? [];
    if (start.method === undefined) {
      const res: MsrpResponse = {
        kind: "response",
        transactionId: start.transactionId,
        code: start.code as number,
        toPath,
        fromPath,
        headers,
        continuation: flag,
      };
      if (start.comment !== undefined) res.comment = start.comment;
      return res;
    }
    const req = {
      ...head,
      kind: "request" as const,
      method: start.method,
      transactionId: start.transactionId,
      toPath,
      fromPath,
      headers,
      continuation: flag,
    };
    return body === undefined ? req : { ...req, body };
  }

  private frameError(
    events: MsrpParseEvent[],
    reason: MsrpParseErrorReason,
    detail: string,
    head: Partial<MsrpRequestHead> | undefined,
    limit?: keyof MsrpParserLimits,
  ): void {
    const start = this.start as StartLine;
    const error: MsrpParseError = {
      reason,
      status: reason === "body-too-large" ? 413 : 400,
      fatal: false,
      detail,
      transactionId: start.transactionId,
      isResponse: start.method === undefined,
    };
    if (limit !== undefined) error.limit = limit;
    if (start.method !== undefined) error.method = start.method;
    if (head !== undefined) error.head = head;
    events.push({ type: "error", error });
  }

  private fail(events: MsrpParseEvent[], reason: MsrpParseErrorReason, detail: string): void {
    const error: MsrpParseError = { reason, status: 400, fatal: true, detail, isResponse: false };
    if (this.start !== undefined) {
      error.transactionId = this.start.transactionId;
      error.isResponse = this.start.method === undefined;
      if (this.start.method !== undefined) error.method = this.start.method;
    }
    events.push({ type: "error", error });
    this.clearFrame();
    this.state = "failed";
  }

  private clearFrame(): void {
    if (this.state !== "failed") this.state = "head";
    this.headLen = 0;
    this.lineStart = 0;
    this.start = undefined;
    this.rawHeaders = [];
    this.lineErrors = [];
    this.pending = undefined;
    this.bodyChunks = [];
    this.bodyLen = 0;
    this.carry = EMPTY;
    this.pattern = EMPTY;
    this.skipped = 0;
    this.shrinkHead();
  }

  private shrinkHead(): void {
    if (this.head.length > 4 * INITIAL_HEAD_CAPACITY) this.head = EMPTY;
  }
}

const REQUEST_TYPED = new Set(["message-id", "byte-range", "success-report", "failure-report", "status", "content-type"]);

/** Parses a buffer that holds whole frames; convenience for tests and tools. */
export function parseFrames(bytes: Uint8Array, limits?: Partial<MsrpParserLimits>): { events: MsrpParseEvent[]; leftover: number } {
  const p = new MsrpParser(limits);
  const events = p.push(bytes);
  return { events, leftover: p.bufferedBytes };
}
