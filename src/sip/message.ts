// A minimal SIP message reader for what Kamailio hands the sidecar ($mb).
// Kamailio has already parsed and validated the message for routing; the
// sidecar only needs the start line, header values by name (RFC 3261 7.3:
// case-insensitive names, compact forms, line folding, comma-joined values)
// and the body. No maintained npm SIP parser fits a sidecar (the candidates
// bundle a transport stack), so this small reader is ours.
import { CpmError } from "../errors/catalogue.js";

/** RFC 3261 7.3.3 compact forms, plus RFC 3892 (b) and RFC 3515 (r). */
const COMPACT: Record<string, string> = {
  i: "call-id",
  m: "contact",
  e: "content-encoding",
  l: "content-length",
  c: "content-type",
  f: "from",
  s: "subject",
  k: "supported",
  t: "to",
  v: "via",
  b: "referred-by",
  r: "refer-to",
  o: "event",
  u: "allow-events",
  a: "accept-contact",
};

export interface SipHeader {
  /** Lower-case full name. */
  name: string;
  value: string;
}

export interface SipMessage {
  kind: "request" | "response";
  method: string;
  requestUri: string;
  statusCode: number;
  reasonPhrase: string;
  headers: SipHeader[];
  body: Buffer;
}

/** Upper bound on what the sidecar accepts from Kamailio for one message. */
export const MAX_SIP_MESSAGE_BYTES = 256 * 1024;

export function parseSipMessage(raw: Uint8Array): SipMessage {
  if (raw.length === 0) throw new CpmError("CPM_ERR_BAD_SIP", "empty message");
  if (raw.length > MAX_SIP_MESSAGE_BYTES) throw new CpmError("CPM_ERR_BAD_SIP", `message of ${raw.length} bytes is too large`);
  const buf = Buffer.from(raw.buffer, raw.byteOffset, raw.length);
  let headEnd = buf.indexOf("\r\n\r\n");
  let sepLen = 4;
  if (headEnd < 0) {
    // Tolerate bare LF (RFC 3261 7: implementations SHOULD accept it).
    headEnd = buf.indexOf("\n\n");
    sepLen = 2;
  }
  const head = (headEnd < 0 ? buf : buf.subarray(0, headEnd)).toString("utf8");
  const body = headEnd < 0 ? Buffer.alloc(0) : buf.subarray(headEnd + sepLen);
  const lines = head.split(/\r?\n/);
  const start = lines.shift() ?? "";
  const msg: SipMessage = { kind: "request", method: "", requestUri: "", statusCode: 0, reasonPhrase: "", headers: [], body };
  const status = /^SIP\/2\.0 (\d{3}) ?(.*)$/i.exec(start);
  const request = /^([A-Za-z]+) (\S+) SIP\/2\.0$/i.exec(start);
  if (status) {
    msg.kind = "response";
    msg.statusCode = Number(status[1]);
    msg.reasonPhrase = status[2] ?? "";
  } else if (request) {
    msg.method = (request[1] ?? "").toUpperCase();
    msg.requestUri = request[2] ?? "";
  } else {
    throw new CpmError("CPM_ERR_BAD_SIP", "start line is neither a request nor a status line");
  }
  for (const line of lines) {
    if (/^[ \t]/.test(line)) {
      // RFC 3261 7.3.1: a line starting with whitespace continues the previous one.
      const last = msg.headers[msg.headers.length - 1];
      if (last) last.value = `${last.value} ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue; // not a header line: skip, Kamailio let it through
    const rawName = line.slice(0, colon).trim().toLowerCase();
    const name = COMPACT[rawName] ?? rawName;
    msg.headers.push({ name, value: line.slice(colon + 1).trim() });
  }
  return msg;
}

/** All values of a header, in order (one entry per header line). */
export function headerValues(msg: SipMessage, name: string): string[] {
  const wanted = name.toLowerCase();
  return msg.headers.filter((h) => h.name === wanted).map((h) => h.value);
}

export function header(msg: SipMessage, name: string): string | undefined {
  return headerValues(msg, name)[0];
}

/** Content-Type media type, lower-case, without parameters. */
export function mediaType(contentType: string | undefined): string {
  return (contentType ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
}

/**
 * Splits a header value on commas that are not inside a quoted string or
 * <...> (RFC 3261 7.3.1: several values may share one header line).
 */
export function splitCommaList(value: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  let angle = 0;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i] as string;
    if (quoted) {
      cur += ch;
      if (ch === "\\" && i + 1 < value.length) cur += value[++i];
      else if (ch === '"') quoted = false;
      continue;
    }
    if (ch === '"') quoted = true;
    else if (ch === "<") angle++;
    else if (ch === ">" && angle > 0) angle--;
    else if (ch === "," && angle === 0) {
      if (cur.trim()) out.push(cur.trim());
      cur = "";
      continue;
    }
    cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}
