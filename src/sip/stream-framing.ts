// Framing of SIP over a stream transport (RFC 3261 18.3): a message is its
// start line and headers up to the first empty line (CRLFCRLF), then exactly
// Content-Length bytes of body; on a stream Content-Length is mandatory.
// CRLFs between messages are skipped (RFC 3261 7.5); a CRLFCRLF there is an
// RFC 5626 4.4.1 keep-alive ping, which the caller answers with a CRLF pong
// (a lone CRLF, a pong, is skipped). Hand-written, like ua.ts: no maintained
// npm package frames SIP without bringing a whole SIP stack along.
//
// Push byte slices of any size; each complete message comes back as an event
// from the push() that completed it. Limits keep memory bounded (at most
// maxHeaderBytes + maxBodyBytes held). A limit or framing violation is an
// error event, never an exception, and is final: framing is lost, the caller
// closes the connection; later pushes return nothing.
import { mergeLimits } from "../msrp/limits.js";

export interface SipStreamLimits {
  /** Start line and headers, the empty line included. */
  maxHeaderBytes: number;
  /** Content-Length of one message. */
  maxBodyBytes: number;
}

export const DEFAULT_STREAM_LIMITS: Readonly<SipStreamLimits> = Object.freeze({
  maxHeaderBytes: 16 * 1024,
  // the largest message a peer could have sent over UDP (RFC 3261 18.1.1)
  maxBodyBytes: 64 * 1024,
});

export type SipStreamErrorReason =
  | "header-too-large" // no empty line within maxHeaderBytes
  | "body-too-large" // Content-Length above maxBodyBytes
  | "no-content-length" // RFC 3261 18.3: mandatory on a stream
  | "bad-content-length"; // not a number, or two different values

export type SipStreamEvent =
  | { type: "message"; bytes: Buffer }
  /** RFC 5626 4.4.1 CRLFCRLF ping: answer with CRLF. */
  | { type: "ping" }
  | { type: "error"; reason: SipStreamErrorReason; detail: string };

const CR = 0x0d;
const LF = 0x0a;
const CRLFCRLF = Buffer.from("\r\n\r\n", "latin1");
const EMPTY = Buffer.alloc(0);
/** RFC 3261 20.14, with its compact form l (7.3.3). */
const CONTENT_LENGTH = /^(?:content-length|l)[ \t]*:(.*)$/i;

export class SipStreamFramer {
  private readonly limits: Readonly<SipStreamLimits>;
  private buf: Buffer = EMPTY;
  /** Bytes of buf already searched for the end of the head. */
  private scanned = 0;
  /** Total length (head + body) of the message whose head is read. */
  private need: number | undefined;
  private failed = false;

  constructor(limits?: Partial<SipStreamLimits>) {
    this.limits = mergeLimits(DEFAULT_STREAM_LIMITS, limits);
  }

  /** Bytes held for an incomplete message. */
  get buffered(): number {
    return this.buf.length;
  }

  push(chunk: Buffer): SipStreamEvent[] {
    if (this.failed || chunk.length === 0) return [];
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: SipStreamEvent[] = [];
    for (;;) {
      if (this.need === undefined) {
        if (!this.skipKeepAlives(out)) break;
        const head = this.readHead();
        if (head === undefined) break;
        if (typeof head !== "number") return this.fail(out, head);
        this.need = head;
      }
      if (this.buf.length < this.need) break;
      // a copy: the message outlives this connection's buffer
      out.push({ type: "message", bytes: Buffer.from(this.buf.subarray(0, this.need)) });
      this.buf = this.buf.subarray(this.need);
      this.need = undefined;
      this.scanned = 0;
    }
    return out;
  }

  /** CRLFs before a start line (7.5): false when nothing else is there yet (or it may still become a ping). */
  private skipKeepAlives(out: SipStreamEvent[]): boolean {
    let b = this.buf;
    for (;;) {
      if (b.length >= 4 && b.subarray(0, 4).equals(CRLFCRLF)) {
        out.push({ type: "ping" });
        b = b.subarray(4);
      } else if (b.length >= 2 && b[0] === CR && b[1] === LF) {
        if (b.length === 2 || (b.length === 3 && b[2] === CR)) break; // CRLF or CRLFCR so far
        b = b.subarray(2); // a pong, or a stray CRLF
      } else if (b.length === 1 && b[0] === CR) {
        break;
      } else {
        this.buf = b;
        return b.length > 0;
      }
    }
    this.buf = b;
    return false;
  }

  /** The whole length of the message whose head is in buf; undefined while the head is incomplete. */
  private readHead(): number | undefined | { reason: SipStreamErrorReason; detail: string } {
    const { maxHeaderBytes, maxBodyBytes } = this.limits;
    const end = this.buf.indexOf(CRLFCRLF, Math.max(0, this.scanned - 3));
    if (end < 0) {
      this.scanned = this.buf.length;
      if (this.buf.length > maxHeaderBytes) return { reason: "header-too-large", detail: `no empty line within ${maxHeaderBytes} bytes` };
      return undefined;
    }
    const headLength = end + CRLFCRLF.length;
    if (headLength > maxHeaderBytes)
      return { reason: "header-too-large", detail: `header of ${headLength} bytes, limit ${maxHeaderBytes}` };
    let length: number | undefined;
    for (const line of this.buf.subarray(0, end).toString("latin1").split("\r\n")) {
      const m = CONTENT_LENGTH.exec(line);
      if (!m) continue;
      const value = (m[1] ?? "").trim();
      if (!/^[0-9]{1,10}$/.test(value)) return { reason: "bad-content-length", detail: `Content-Length ${JSON.stringify(value)}` };
      if (length !== undefined && length !== Number(value))
        return { reason: "bad-content-length", detail: "two different Content-Length values" };
      length = Number(value);
    }
    if (length === undefined) return { reason: "no-content-length", detail: "no Content-Length on a stream transport (RFC 3261 18.3)" };
    if (length > maxBodyBytes) return { reason: "body-too-large", detail: `Content-Length ${length}, limit ${maxBodyBytes}` };
    return headLength + length;
  }

  private fail(out: SipStreamEvent[], error: { reason: SipStreamErrorReason; detail: string }): SipStreamEvent[] {
    this.failed = true;
    this.buf = EMPTY;
    out.push({ type: "error", ...error });
    return out;
  }
}
