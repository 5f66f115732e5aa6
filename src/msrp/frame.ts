// MSRP frame model (RFC 4975 9): requests (SEND, REPORT, AUTH, and any other
// method, kept as written), responses (code + comment), the headers the stack
// acts on as typed fields, every other header as written and in order, the
// body as bytes, and the continuation flag of the end-line.
import type { MsrpUri } from "./uri.js";

/** End-line flag (RFC 4975 5.1): `$` last chunk, `+` more chunks follow, `#` message aborted. */
export type ContinuationFlag = "$" | "+" | "#";

/** `Success-Report` values (RFC 4975 7.1.1); absent means "no". */
export type SuccessReport = "yes" | "no";

/** `Failure-Report` values (RFC 4975 7.1.1); absent means "yes". */
export type FailureReport = "yes" | "no" | "partial";

/** `Byte-Range: start-end/total`, 1-based and inclusive; `*` = not known when the chunk was sent. */
export interface ByteRange {
  start: number;
  end: number | "*";
  total: number | "*";
}

/** `Status: 000 <code> [comment]` of a REPORT (RFC 4975 9; namespace `000` for RFC 4975 codes). */
export interface MsrpStatus {
  namespace: string;
  code: number;
  comment?: string;
}

/** A header the stack does not model, kept exactly as received (name case, value). */
export interface HeaderField {
  name: string;
  value: string;
}

interface FrameCommon {
  transactionId: string;
  /** To-Path URIs, next hop first. */
  toPath: readonly MsrpUri[];
  /** From-Path URIs, previous hop first. */
  fromPath: readonly MsrpUri[];
  /** Every other header, in the order received (Use-Path, Expires, WWW-Authenticate, Content-ID, ...). */
  headers: HeaderField[];
  continuation: ContinuationFlag;
}

export interface MsrpRequest extends FrameCommon {
  kind: "request";
  /** SEND, REPORT, AUTH, or any other upper-case method. */
  method: string;
  messageId?: string;
  byteRange?: ByteRange;
  successReport?: SuccessReport;
  failureReport?: FailureReport;
  status?: MsrpStatus;
  contentType?: string;
  /** undefined: the request has no content-stuff at all; a Buffer (possibly empty): it has one. */
  body?: Buffer;
}

export interface MsrpResponse extends FrameCommon {
  kind: "response";
  code: number;
  comment?: string;
}

export type MsrpFrame = MsrpRequest | MsrpResponse;

/** A frame without its body: what the parser knows once the header block is read. */
export type MsrpRequestHead = Omit<MsrpRequest, "body">;

/** Response codes of RFC 4975 10 and RFC 4976 (401, 423). */
export const MsrpStatusCode = {
  OK: 200,
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  TIMEOUT: 408,
  STOP_SENDING: 413,
  UNSUPPORTED_MEDIA: 415,
  OUT_OF_BOUNDS: 423,
  NO_SESSION: 481,
  UNKNOWN_METHOD: 501,
  SESSION_IN_USE: 506,
} as const;

/** The comment this stack puts on its own responses (RFC 4975 10 words). */
export function defaultComment(code: number): string | undefined {
  switch (code) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 408:
      return "Request Timeout";
    case 413:
      return "Stop Sending Message";
    case 415:
      return "Unsupported Media Type";
    case 423:
      return "Parameter Out Of Bounds";
    case 481:
      return "Session Does Not Exist";
    case 501:
      return "Method Not Understood";
    case 506:
      return "Session Already Bound";
    default:
      return undefined;
  }
}

/** RFC 4975 9 `ident`: one alphanumeric, then 3-31 of alphanumerics and `. - + % =`. */
export const IDENT_RE = /^[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}$/;

export function isTransactionId(s: string): boolean {
  return IDENT_RE.test(s);
}

/** RFC 4975 9 `other-method = 1*UPALPHA`. */
export const METHOD_RE = /^[A-Z]+$/;

/** RFC 4975 9 `hname = ALPHA *token`. */
export const HEADER_NAME_RE = /^[A-Za-z][A-Za-z0-9!%*_+`'~.-]*$/;

export function isContinuationFlag(c: string | undefined): c is ContinuationFlag {
  return c === "$" || c === "+" || c === "#";
}
