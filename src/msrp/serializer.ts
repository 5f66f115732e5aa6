// MSRP frame serializer (RFC 4975 9). Header order: To-Path, From-Path, then
// Message-ID, Byte-Range, Success-Report, Failure-Report, Status, then other
// headers as given, then the MIME headers (Content-ID, ...) and Content-Type
// last; CRLF line ends; a body is framed by an empty line in front and CRLF +
// end-line after. Responses follow RFC 4975 7.2: same transaction-id, To-Path
// = the previous hop (first From-Path URI), From-Path = our own URI.
//
// Serializing throws CpmError CPM_ERR_MSRP_FRAME on a frame that could not be
// parsed back (bad ident, CR/LF inside a value, a body holding its own
// end-line): those are programming errors, unlike parse errors.
import { CpmError } from "../errors/catalogue.js";
import {
  defaultComment,
  HEADER_NAME_RE,
  type HeaderField,
  isTransactionId,
  METHOD_RE,
  type MsrpFrame,
  type MsrpRequest,
  type MsrpResponse,
} from "./frame.js";
import { formatByteRange, formatStatus, KNOWN_HEADERS } from "./headers.js";
import { formatMsrpPath, type MsrpUri } from "./uri.js";

export { newMessageId, newSessionId, newTransactionId } from "./ids.js";

const CRLF = "\r\n";

function invalid(detail: string): CpmError {
  return new CpmError("CPM_ERR_MSRP_FRAME", detail);
}

function checkValue(name: string, value: string): string {
  if (/[\r\n\0]/.test(value)) throw invalid(`${name} value holds CR, LF or NUL`);
  return value;
}

function headerLine(name: string, value: string): string {
  return `${name}: ${checkValue(name, value)}${CRLF}`;
}

function checkExtraHeaders(headers: readonly HeaderField[], isRequest: boolean): void {
  for (const h of headers) {
    if (!HEADER_NAME_RE.test(h.name)) throw invalid(`bad header name ${JSON.stringify(h.name)}`);
    const lname = h.name.toLowerCase();
    if (lname === "to-path" || lname === "from-path" || (isRequest && lname in KNOWN_HEADERS)) {
      throw invalid(`${h.name} belongs in its typed field, not in headers`);
    }
  }
}

/** Serializes a request or a response to wire bytes. */
export function serializeFrame(frame: MsrpFrame): Buffer {
  return frame.kind === "request" ? serializeRequest(frame) : serializeResponse(frame);
}

export function serializeRequest(req: MsrpRequest): Buffer {
  if (!isTransactionId(req.transactionId)) throw invalid(`bad transaction-id ${JSON.stringify(req.transactionId)}`);
  if (!METHOD_RE.test(req.method)) throw invalid(`bad method ${JSON.stringify(req.method)}`);
  if (req.toPath.length === 0 || req.fromPath.length === 0) throw invalid("To-Path and From-Path need at least one URI");
  checkExtraHeaders(req.headers, true);
  let head = `MSRP ${req.transactionId} ${req.method}${CRLF}`;
  head += headerLine("To-Path", formatMsrpPath(req.toPath));
  head += headerLine("From-Path", formatMsrpPath(req.fromPath));
  if (req.messageId !== undefined) head += headerLine("Message-ID", req.messageId);
  if (req.byteRange !== undefined) head += headerLine("Byte-Range", formatByteRange(req.byteRange));
  if (req.successReport !== undefined) head += headerLine("Success-Report", req.successReport);
  if (req.failureReport !== undefined) head += headerLine("Failure-Report", req.failureReport);
  if (req.status !== undefined) head += headerLine("Status", formatStatus(req.status));
  for (const h of req.headers) if (!/^content-/i.test(h.name)) head += headerLine(h.name, h.value);
  for (const h of req.headers) if (/^content-/i.test(h.name)) head += headerLine(h.name, h.value);
  if (req.contentType !== undefined) head += headerLine("Content-Type", req.contentType);
  const endLine = `-------${req.transactionId}${req.continuation}${CRLF}`;
  if (req.body === undefined) return Buffer.from(head + endLine, "utf8");
  if (req.contentType === undefined) throw invalid("a body needs a Content-Type");
  const tail = Buffer.from(CRLF + endLine, "latin1");
  const framed = Buffer.concat([req.body, tail]);
  if (firstEndLine(framed, req.transactionId) !== req.body.length) {
    throw invalid("the body holds its own end-line; pick another transaction-id (newTransactionId(body))");
  }
  return Buffer.concat([Buffer.from(head + CRLF, "utf8"), framed]);
}

/** Offset of the first CRLF + `-------<tid>` + flag + CRLF in `bytes`, as the parser finds it; -1 if none. */
export function firstEndLine(bytes: Buffer, transactionId: string): number {
  const p = Buffer.from(`\r\n-------${transactionId}`, "latin1");
  for (let from = 0; ; ) {
    const idx = bytes.indexOf(p, from);
    if (idx < 0) return -1;
    const flag = bytes[idx + p.length];
    if ((flag === 0x24 || flag === 0x2b || flag === 0x23) && bytes[idx + p.length + 1] === 0x0d && bytes[idx + p.length + 2] === 0x0a) {
      return idx;
    }
    from = idx + 1;
  }
}

export function serializeResponse(res: MsrpResponse): Buffer {
  if (!isTransactionId(res.transactionId)) throw invalid(`bad transaction-id ${JSON.stringify(res.transactionId)}`);
  if (!Number.isInteger(res.code) || res.code < 100 || res.code > 999) throw invalid(`bad status code ${res.code}`);
  if (res.toPath.length === 0 || res.fromPath.length === 0) throw invalid("To-Path and From-Path need at least one URI");
  checkExtraHeaders(res.headers, false);
  let head = `MSRP ${res.transactionId} ${res.code}`;
  if (res.comment !== undefined) head += ` ${checkValue("comment", res.comment)}`;
  head += CRLF;
  head += headerLine("To-Path", formatMsrpPath(res.toPath));
  head += headerLine("From-Path", formatMsrpPath(res.fromPath));
  for (const h of res.headers) head += headerLine(h.name, h.value);
  head += `-------${res.transactionId}${res.continuation}${CRLF}`;
  return Buffer.from(head, "utf8");
}

export interface ResponseOptions {
  /** Comment after the code; default: the RFC 4975 10 words for the code; null: none. */
  comment?: string | null;
  /** Our own URI; default: the first To-Path URI of the request (the hop it was sent to, us). */
  localUri?: MsrpUri;
  headers?: HeaderField[];
}

/** RFC 4975 7.2: a response goes back one hop, to the first From-Path URI, from our URI. */
export function makeResponse(
  req: Pick<MsrpRequest, "transactionId" | "toPath" | "fromPath">,
  code: number,
  options: ResponseOptions = {},
): MsrpResponse {
  const previousHop = req.fromPath[0];
  const local = options.localUri ?? req.toPath[0];
  if (previousHop === undefined || local === undefined) throw invalid("cannot answer a request without To-Path and From-Path");
  const res: MsrpResponse = {
    kind: "response",
    transactionId: req.transactionId,
    code,
    toPath: [previousHop],
    fromPath: [local],
    headers: options.headers ?? [],
    continuation: "$",
  };
  const comment = options.comment === undefined ? defaultComment(code) : options.comment;
  if (comment !== null && comment !== undefined) res.comment = comment;
  return res;
}
