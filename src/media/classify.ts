// What an MSRP message of a group chat carries, from its Content-Type and, for
// message/cpim (RFC 3862), the Content-Type of the wrapped MIME content:
//   message/imdn+xml                    IMDN (RFC 5438), also any CPIM with Content-Disposition: notification
//   application/group-state-object+xml  Group State Object (OMA CPM; matched case-insensitively)
//   application/im-iscomposing+xml      isComposing (RFC 3994)
//   anything else (text/plain, file transfer, group data, ...)  a chat message
// Pure: no I/O, reads at most the first HEAD_SCAN_BYTES of the body.
import type { DeferredKind } from "./ports.js";

export type PayloadKind = DeferredKind | "isComposing";

/** CPIM message headers + MIME headers of the content stay well below this in practice. */
const HEAD_SCAN_BYTES = 8192;

const IMDN = "message/imdn+xml";
const GSO = "application/group-state-object+xml";
const IS_COMPOSING = "application/im-iscomposing+xml";
const CPIM = "message/cpim";

/** `type/subtype` of a Content-Type value, lower-case, parameters dropped. */
export function mediaType(contentType: string | undefined): string {
  return (contentType ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
}

function kindOf(type: string): PayloadKind | undefined {
  switch (type) {
    case IMDN:
      return "imdn";
    case GSO:
      return "gso";
    case IS_COMPOSING:
      return "isComposing";
    default:
      return undefined;
  }
}

/**
 * The header blocks at the start of a CPIM body (RFC 3862 2: message headers,
 * blank line, MIME headers of the content, blank line, content), as lower-case
 * name -> value. Lines may end in CRLF or a bare LF.
 */
export function cpimHeaderBlocks(body: Uint8Array, blocks = 2): Map<string, string>[] {
  const text = Buffer.from(body.buffer, body.byteOffset, Math.min(body.length, HEAD_SCAN_BYTES)).toString("latin1");
  const out: Map<string, string>[] = [];
  let current = new Map<string, string>();
  let lastName: string | undefined;
  for (const line of text.split("\n")) {
    const l = line.endsWith("\r") ? line.slice(0, -1) : line;
    if (l === "") {
      out.push(current);
      if (out.length === blocks) return out;
      current = new Map();
      lastName = undefined;
      continue;
    }
    if ((l.startsWith(" ") || l.startsWith("\t")) && lastName !== undefined) {
      current.set(lastName, `${current.get(lastName) ?? ""} ${l.trim()}`);
      continue;
    }
    const colon = l.indexOf(":");
    if (colon <= 0) continue;
    lastName = l.slice(0, colon).trim().toLowerCase();
    if (!current.has(lastName)) current.set(lastName, l.slice(colon + 1).trim());
  }
  if (current.size > 0) out.push(current);
  return out;
}

/** Decides the kind of one complete MSRP message (its Content-Type and body). */
export function classifyPayload(contentType: string | undefined, body: Uint8Array): PayloadKind {
  const outer = mediaType(contentType);
  if (outer !== CPIM) return kindOf(outer) ?? "message";
  const [, content] = cpimHeaderBlocks(body);
  const inner = mediaType(content?.get("content-type"));
  const direct = kindOf(inner);
  if (direct !== undefined) return direct;
  // RFC 5438 7.1.1: a CPIM-wrapped notification says so in its content headers.
  if (mediaType(content?.get("content-disposition")) === "notification") return "imdn";
  return "message";
}
