// multipart/mixed bodies (RFC 2046 5.1) as CPM uses them: an INVITE carries
// application/sdp and application/resource-lists+xml (RFC 5366) together.
import { CpmError } from "../errors/catalogue.js";
import { parseParams } from "./params.js";

export interface BodyPart {
  contentType: string;
  headers: Map<string, string>;
  body: Buffer;
}

export const MAX_PARTS = 16;

/** Splits a body by the Content-Type's boundary; a non-multipart body is one part. */
export function bodyParts(contentType: string | undefined, body: Buffer): BodyPart[] {
  const ct = contentType ?? "";
  const semi = ct.indexOf(";");
  const type = (semi < 0 ? ct : ct.slice(0, semi)).trim().toLowerCase();
  if (!type.startsWith("multipart/")) {
    return body.length ? [{ contentType: type, headers: new Map([["content-type", ct]]), body }] : [];
  }
  const boundary = parseParams(semi < 0 ? "" : ct.slice(semi)).get("boundary");
  if (!boundary) throw new CpmError("CPM_ERR_BAD_SIP", "multipart body without boundary");
  const delim = Buffer.from(`--${boundary}`);
  const parts: BodyPart[] = [];
  let pos = body.indexOf(delim);
  if (pos < 0) throw new CpmError("CPM_ERR_BAD_SIP", "multipart boundary not found in body");
  while (pos >= 0) {
    let start = pos + delim.length;
    if (body.subarray(start, start + 2).toString() === "--") break; // close-delimiter
    start = body.indexOf("\n", start) + 1;
    if (start <= 0) break;
    const next = body.indexOf(delim, start);
    if (next < 0) throw new CpmError("CPM_ERR_BAD_SIP", "multipart part without closing boundary");
    // The CRLF before the delimiter belongs to the delimiter (RFC 2046 5.1.1).
    let end = next;
    if (body[end - 1] === 0x0a) end--;
    if (body[end - 1] === 0x0d) end--;
    parts.push(parsePart(body.subarray(start, Math.max(start, end))));
    if (parts.length > MAX_PARTS) throw new CpmError("CPM_ERR_BAD_SIP", "too many multipart parts");
    pos = next;
  }
  return parts;
}

function parsePart(part: Buffer): BodyPart {
  let sep = part.indexOf("\r\n\r\n");
  let sepLen = 4;
  if (sep < 0) {
    sep = part.indexOf("\n\n");
    sepLen = 2;
  }
  const head = sep < 0 ? "" : part.subarray(0, sep).toString("utf8");
  const headers = new Map<string, string>();
  for (const line of head.split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  const contentType = (headers.get("content-type") ?? "text/plain").split(";")[0]?.trim().toLowerCase() ?? "";
  return { contentType, headers, body: sep < 0 ? part : part.subarray(sep + sepLen) };
}

/**
 * The body with the first part of media type `type` replaced by `replacement`
 * (its part headers kept; RFC 2046 5.1); a non-multipart body of that type is
 * replaced whole. Undefined when no such part exists.
 */
export function replaceBodyPart(contentType: string | undefined, body: Buffer, type: string, replacement: Buffer): Buffer | undefined {
  const part = bodyParts(contentType, body).find((p) => p.contentType === type);
  if (!part) return undefined;
  // bodyParts returns views into `body`: their offsets locate the part.
  const start = part.body.byteOffset - body.byteOffset;
  const end = start + part.body.length;
  return Buffer.concat([body.subarray(0, start), replacement, body.subarray(end)]);
}

export interface OutgoingPart {
  contentType: string;
  /** Further part headers, e.g. ["Content-Disposition", "recipient-list"]. */
  headers?: readonly (readonly [string, string])[];
  body: string;
}

/**
 * A multipart/mixed body (RFC 2046 5.1.1) and its Content-Type value. The
 * boundary is `base`, suffixed with a counter while it occurs in a part (a
 * deterministic choice, so pure callers stay pure). Parses back with bodyParts.
 */
export function buildMultipart(parts: readonly OutgoingPart[], base = "cpm-pf-boundary"): { contentType: string; body: string } {
  let boundary = base;
  for (let n = 1; parts.some((p) => p.body.includes(`--${boundary}`)); n++) boundary = `${base}-${n}`;
  let body = "";
  for (const p of parts) {
    body += `--${boundary}\r\nContent-Type: ${p.contentType}\r\n`;
    for (const [name, value] of p.headers ?? []) body += `${name}: ${value}\r\n`;
    body += `\r\n${p.body.endsWith("\r\n") ? p.body.slice(0, -2) : p.body}\r\n`;
  }
  return { contentType: `multipart/mixed;boundary=${boundary}`, body: `${body}--${boundary}--\r\n` };
}
