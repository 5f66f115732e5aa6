// message/cpim (RFC 3862) reader: what the PF needs out of a CPIM body without
// touching its bytes (the body is relayed and stored as received).
//
// A CPIM message is (RFC 3862 2): message headers, a blank line, then one
// MIME entity: its MIME headers (RFC 2045), a blank line, its content.
//   - Message header (3.6): `Header-name ":" *(";" Parameter) SP Header-value`,
//     one line each, no folding (3.2); `Header-name` is `[prefix "."] Name`,
//     the prefix bound to a namespace URN by an `NS: prefix <urn>` header (3.4),
//     no prefix = urn:ietf:params:cpim-headers:. Names are compared
//     case-insensitively here (deployed stacks differ in case); the escape
//     mechanism of 2.3 is not undone (the values we read, URIs and IDs, never
//     use it).
//   - MIME headers follow RFC 5322 2.2 (folding allowed).
// Bare LF line ends are accepted as well as CRLF (seen in public fixtures).
//
// Anything that does not parse is a CpmError CPM_ERR_BAD_CPIM with the reason;
// nothing here throws anything else or reads past the given buffer. The header
// blocks together are bounded by maxHeaderBytes.
import { isAscii } from "node:buffer";
import { CpmError } from "../errors/catalogue.js";

/** RFC 3862 3.4: the namespace of header names without a prefix. */
export const CPIM_HEADERS_URN = "urn:ietf:params:cpim-headers:";
/** RFC 5438 9.1 (IMDN): `NS: imdn <urn:ietf:params:imdn>`, `imdn.Message-ID`. */
export const IMDN_URN = "urn:ietf:params:imdn";
/** Default bound of the header blocks (message + MIME headers). */
export const DEFAULT_MAX_HEADER_BYTES = 64 * 1024;
const MAX_HEADERS = 256;

export interface HeaderField {
  /** The name as written (for CPIM: with its prefix, e.g. `imdn.Message-ID`). */
  name: string;
  /** The value with surrounding white space removed (folded lines joined with one space). */
  value: string;
  /** CPIM header parameters (`;lang=fr`), as written without the `;`. */
  params: string[];
}

export interface HeaderBlock {
  fields: HeaderField[];
  /** Offset of the first byte after the blank line that ends the block. */
  end: number;
}

export interface CpimMessage {
  /** Message headers (RFC 3862 3), in order. */
  headers: HeaderField[];
  /** Namespace prefix -> URN, from the NS headers ("" = default namespace). */
  namespaces: Map<string, string>;
  /** MIME headers of the encapsulated entity. */
  contentHeaders: HeaderField[];
  /** Offset of the encapsulated content in the buffer. */
  contentOffset: number;
  /** The encapsulated content (a view into the buffer). */
  content: Uint8Array;
}

function fail(what: string, why: string): never {
  throw new CpmError("CPM_ERR_BAD_CPIM", `${what}: ${why}`);
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });
const NAME_RE = /^[!-9;-~]+$/; // RFC 5322 ftext: printable ASCII except ":"
const CPIM_PARAM_RE = /^;([^;\s]+)/;

/**
 * Reads one header block starting at `start` up to and including its blank
 * line. `folding`: RFC 5322 continuation lines (MIME) or none (CPIM 3.2).
 * `cpimParams`: CPIM `;param` syntax between the colon and the value.
 */
export function parseHeaderBlock(
  buf: Uint8Array,
  start: number,
  opts: { what: string; folding: boolean; cpimParams?: boolean; maxBytes?: number },
): HeaderBlock {
  const { what } = opts;
  const limit = Math.min(buf.length, start + (opts.maxBytes ?? DEFAULT_MAX_HEADER_BYTES));
  const lines = blockLines(buf, start, limit, opts);
  const fields: HeaderField[] = [];
  for (const text of lines.raw) {
    const colon = text.indexOf(":");
    if (colon <= 0) fail(what, `header line without a name: ${JSON.stringify(text.slice(0, 40))}`);
    const name = text.slice(0, colon);
    if (!NAME_RE.test(name)) fail(what, `bad header name ${JSON.stringify(name.slice(0, 40))}`);
    let rest = text.slice(colon + 1);
    const params: string[] = [];
    if (opts.cpimParams) {
      for (let m = CPIM_PARAM_RE.exec(rest); m; m = CPIM_PARAM_RE.exec(rest)) {
        params.push(m[1] as string);
        rest = rest.slice(m[0].length);
      }
    }
    fields.push({ name, value: rest.trim(), params });
  }
  return { fields, end: lines.end };
}

const UTF8_BOM = Buffer.from([0xef, 0xbb, 0xbf]);
const LF_LF = Buffer.from("\n\n", "latin1");
const LF_CRLF = Buffer.from("\n\r\n", "latin1");

/** A CR not followed by LF. */
function hasLoneCr(text: string): boolean {
  for (let cr = text.indexOf("\r"); cr >= 0; cr = text.indexOf("\r", cr + 2)) if (text.charCodeAt(cr + 1) !== 0x0a) return true;
  return false;
}

/** Offset after the first empty line ("\n" or "\r\n") at or after `start` whose LF is below `limit`; -1 when none. */
function blockEnd(b: Buffer, start: number, limit: number): number {
  if (b[start] === 0x0a) return start < limit ? start + 1 : -1;
  if (b[start] === 0x0d && b[start + 1] === 0x0a) return start + 1 < limit ? start + 2 : -1;
  // an empty line starts right after an LF; nothing at or past `limit` is looked at
  const head = b.subarray(0, limit);
  const crlf = head.indexOf(LF_CRLF, start);
  // an LF LF before it ends at or before its LF
  const lf = (crlf >= 0 ? head.subarray(0, crlf + 1) : head).indexOf(LF_LF, start);
  const end = lf >= 0 && (crlf < 0 || lf < crlf) ? lf + 2 : crlf >= 0 ? crlf + 3 : -1;
  return end;
}

/** The logical lines of a header block (continuations joined) and the offset after its blank line. */
function blockLines(
  buf: Uint8Array,
  start: number,
  limit: number,
  opts: { what: string; folding: boolean; maxBytes?: number },
): { raw: string[]; end: number } {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  // The usual block: CRLF or LF line ends, no NUL, UTF-8 (mostly ASCII), read with one
  // decode. Anything else takes the line-by-line reader, which names the first fault.
  const end = blockEnd(b, start, limit);
  if (end < 0) return blockLinesByLine(b, start, limit, opts);
  const block = b.subarray(start, end);
  let text: string;
  if (isAscii(block)) {
    text = block.toString("latin1");
    if (text.includes("\0") || hasLoneCr(text)) return blockLinesByLine(b, start, limit, opts);
  } else {
    if (block.indexOf(0x00) >= 0 || block.indexOf(UTF8_BOM) >= 0) return blockLinesByLine(b, start, limit, opts);
    for (let cr = block.indexOf(0x0d); cr >= 0; cr = block.indexOf(0x0d, cr + 1)) {
      if (block[cr + 1] !== 0x0a) return blockLinesByLine(b, start, limit, opts);
    }
    try {
      text = UTF8.decode(block);
    } catch {
      return blockLinesByLine(b, start, limit, opts);
    }
  }
  // an LF is never part of a multi-byte UTF-8 sequence: the text's lines are the block's;
  // the last one is the blank line ("\n" or "\r\n")
  const stop = text.length - (text.charCodeAt(text.length - 2) === 0x0d ? 2 : 1);
  const raw: string[] = [];
  for (let p = 0; p < stop; ) {
    const nl = text.indexOf("\n", p);
    addLine(raw, text.slice(p, text.charCodeAt(nl - 1) === 0x0d ? nl - 1 : nl), opts);
    p = nl + 1;
  }
  return { raw, end };
}

/** One physical line of a header block: a new header or (folding) a continuation of the last one. */
function addLine(raw: string[], text: string, opts: { what: string; folding: boolean }): void {
  if (text[0] === " " || text[0] === "\t") {
    if (!opts.folding) fail(opts.what, "continuation line (CPIM headers are not folded, RFC 3862 3.2)");
    if (raw.length === 0) fail(opts.what, "continuation line before the first header");
    raw[raw.length - 1] += ` ${text.trim()}`;
    return;
  }
  if (raw.length >= MAX_HEADERS) fail(opts.what, `more than ${MAX_HEADERS} headers`);
  raw.push(text);
}

/** blockLines() one line at a time: each line checked for CR, NUL and UTF-8 before the next is read. */
function blockLinesByLine(
  buf: Buffer,
  start: number,
  limit: number,
  opts: { what: string; folding: boolean; maxBytes?: number },
): { raw: string[]; end: number } {
  const { what } = opts;
  const raw: string[] = [];
  let pos = start;
  for (;;) {
    const found = buf.indexOf(0x0a, pos);
    const nl = found >= limit ? -1 : found;
    if (nl < 0) {
      fail(
        what,
        limit < buf.length
          ? `header block longer than ${opts.maxBytes ?? DEFAULT_MAX_HEADER_BYTES} bytes`
          : "no blank line after the headers",
      );
    }
    const lineEnd = nl > pos && buf[nl - 1] === 0x0d ? nl - 1 : nl;
    const line = buf.subarray(pos, lineEnd);
    pos = nl + 1;
    if (line.length === 0) break;
    if (line.includes(0x0d) || line.includes(0x00)) fail(what, "CR or NUL inside a header line");
    let text: string;
    try {
      text = UTF8.decode(line);
    } catch {
      fail(what, "header line is not UTF-8");
    }
    addLine(raw, text, opts);
  }
  return { raw, end: pos };
}

/** Parses a message/cpim body. Throws CpmError CPM_ERR_BAD_CPIM; never reads past `buf`. */
export function parseCpim(buf: Uint8Array, opts: { maxHeaderBytes?: number } = {}): CpimMessage {
  if (!(buf instanceof Uint8Array)) fail("message/cpim", "body is not bytes");
  const maxBytes = opts.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  const msg = parseHeaderBlock(buf, 0, { what: "message/cpim headers", folding: false, cpimParams: true, maxBytes });
  if (msg.fields.length === 0) fail("message/cpim headers", "empty (RFC 3862 2: From, To, ... expected)");
  const namespaces = new Map<string, string>();
  for (const f of msg.fields) {
    if (f.name.toLowerCase() !== "ns") continue;
    const m = /^(?:([^\s<>]+)\s+)?<([^<>\s]+)>$/.exec(f.value);
    if (!m) fail("message/cpim headers", `bad NS header ${JSON.stringify(f.value.slice(0, 60))}`);
    namespaces.set(m[1] ?? "", m[2] as string);
  }
  const mime = parseHeaderBlock(buf, msg.end, {
    what: "message/cpim MIME headers",
    folding: true,
    maxBytes: Math.max(0, maxBytes - msg.end),
  });
  return {
    headers: msg.fields,
    namespaces,
    contentHeaders: mime.fields,
    contentOffset: mime.end,
    content: buf.subarray(mime.end),
  };
}

/** The namespace URN of a CPIM header name and its local name (RFC 3862 3.4). */
function resolveName(msg: CpimMessage, name: string): { urn: string | undefined; local: string } {
  const dot = name.lastIndexOf(".");
  if (dot < 0) return { urn: msg.namespaces.get("") ?? CPIM_HEADERS_URN, local: name };
  return { urn: msg.namespaces.get(name.slice(0, dot)), local: name.slice(dot + 1) };
}

/** Values of a CPIM message header in namespace `urn` (default: the CPIM headers). */
export function cpimHeaders(msg: CpimMessage, local: string, urn: string = CPIM_HEADERS_URN): string[] {
  const want = local.toLowerCase();
  const out: string[] = [];
  for (const f of msg.headers) {
    const r = resolveName(msg, f.name);
    if (r.urn === urn && r.local.toLowerCase() === want) out.push(f.value);
  }
  return out;
}

/** First value of a CPIM message header, or undefined. */
export function cpimHeader(msg: CpimMessage, local: string, urn: string = CPIM_HEADERS_URN): string | undefined {
  return cpimHeaders(msg, local, urn)[0];
}

/** RFC 5438 6.3: `imdn.Message-ID` (the prefix bound to urn:ietf:params:imdn by NS). */
export function imdnMessageId(msg: CpimMessage): string | undefined {
  const v = cpimHeader(msg, "Message-ID", IMDN_URN);
  return v === undefined || v === "" ? undefined : v;
}

/** A MIME header of the encapsulated entity (case-insensitive, RFC 2045 1). */
export function contentHeader(msg: CpimMessage, name: string): string | undefined {
  const want = name.toLowerCase();
  return msg.contentHeaders.find((f) => f.name.toLowerCase() === want)?.value;
}

/** `type/subtype` of a Content-Type value, lower-case, without parameters. */
export function mediaType(contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined;
  const t = contentType.split(";", 1)[0]?.trim().toLowerCase();
  return t ? t : undefined;
}

/**
 * The URI of a CPIM From/To value (RFC 3862 4.1: `[Formal-name] "<" URI ">"`);
 * a bare URI is accepted too. Undefined when there is none.
 */
export function addressUri(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const m = /<([^<>\s]+)>\s*$/.exec(value);
  if (m) return m[1];
  const bare = value.trim();
  return bare !== "" && !/[\s<>"]/.test(bare) ? bare : undefined;
}
