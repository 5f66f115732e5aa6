// The RFC 5322 objects of the deferred queue and of session recording, and
// their reading back. Pure functions: no I/O.
//
// Object layout (cpm-facts 2.2, 2.3; as deployed CMS stores keep them):
//   chat message / IMDN   Content-Type: message/cpim, the MSRP body unchanged as
//                         the object body; From = the CPIM From URI, To = the
//                         served user; IMDN-Message-ID = CPIM imdn.Message-ID
//                         (RFC 5438 6.3) when present; Message-Direction.
//   GSO                   Content-Type: application/group-state-object+xml,
//                         body = the GSO document (a CPIM wrapper is removed:
//                         the object is then like every other GSO in the store
//                         and is delivered with the GSO MIME type, DD-11 / RJ-3);
//                         From: sip:anonymous@anonymous.invalid (cpm-facts 1.4).
// Common headers: Date (arrival at the PF), Message-ID, MIME-Version,
// Content-Transfer-Encoding, Conversation-ID, Contribution-ID.
//
// Bodies go as "8bit" when that keeps them byte for byte (every line ends in
// CRLF, no NUL, lines <= 998 octets, RFC 5322 2.1.1 / RFC 2045 2.8), otherwise
// as "base64" (RFC 2045 6.8), so any MSRP body reads back exactly.
//
// Message-ID (RFC 5322 3.6.4) is derived from the MSRP Message-ID (RFC 4975
// 7.1.1), so that a retried SEND maps to the same object and duplicates are
// found by Message-ID (also by MessageStore's spool drain, which uses IMAP
// SEARCH HEADER, a case-insensitive substring match, RFC 9051 6.4.4):
//   <KIND.HEX.TAG@cpm-pf.invalid>
//   KIND  "d" deferred item, "rn" / "rc" recorded from the network / client,
//         "s" session-info object (HEX = its start time in ms)
//   HEX   lower-case hex of the MSRP Message-ID's UTF-8 bytes (case-preserving
//         under a case-insensitive search; no id is a substring of another)
//   TAG   16 hex digits of SHA-256 over the folder name (one group session)
import { createHash } from "node:crypto";
import {
  addressUri,
  contentHeader,
  cpimHeader,
  type HeaderField,
  imdnMessageId,
  mediaType,
  parseCpim,
  parseHeaderBlock,
} from "../cpim/cpim.js";
import { CpmError } from "../errors/catalogue.js";
import type { DeferredItem, DeferredKind, GroupSessionRef } from "../media/ports.js";
import { buildCpmObject, formatMessageId } from "./cpm-object.js";

export const CPIM_CONTENT_TYPE = "message/cpim";
export const GSO_OBJECT_CONTENT_TYPE = "application/group-state-object+xml";
export const IMDN_CONTENT_TYPE = "message/imdn+xml";
export const ANONYMOUS_URI = "sip:anonymous@anonymous.invalid";
/** RFC 6761 6.4: ".invalid" never resolves, so these ids cannot clash with real hosts. */
export const STORED_ID_DOMAIN = "cpm-pf.invalid";
/** Longest MSRP Message-ID accepted (RFC 4975 9 allows 32 characters; we take more). */
const MAX_MSRP_ID_BYTES = 256;
const MAX_LINE = 998;

export type StoredIdKind = "d" | "rn" | "rc" | "s";

let lastTag: { folder: string; tag: string } | undefined;

/** 16 hex digits of SHA-256 over a folder name (the last one is memoised: items come in runs per session). */
export function folderTag(folder: string): string {
  if (lastTag?.folder === folder) return lastTag.tag;
  const tag = createHash("sha256").update(folder, "utf8").digest("hex").slice(0, 16);
  lastTag = { folder, tag };
  return tag;
}

/** The object Message-ID (bare, without brackets) for one MSRP message in one folder. */
export function storedMessageId(kind: StoredIdKind, folder: string, msrpMessageId: string): string {
  if (typeof msrpMessageId !== "string" || msrpMessageId === "") {
    throw new CpmError("CPM_ERR_BAD_REQUEST", "MSRP Message-ID missing");
  }
  const bytes = Buffer.from(msrpMessageId, "utf8");
  if (bytes.length > MAX_MSRP_ID_BYTES) throw new CpmError("CPM_ERR_BAD_REQUEST", `MSRP Message-ID longer than ${MAX_MSRP_ID_BYTES} bytes`);
  return `${kind}.${bytes.toString("hex")}.${folderTag(folder)}@${STORED_ID_DOMAIN}`;
}

/** Inverse of storedMessageId: the MSRP Message-ID, or undefined for any other Message-ID. */
export function msrpIdOfStoredMessageId(messageId: string): { kind: StoredIdKind; msrpMessageId: string; tag: string } | undefined {
  const m = /^<?(d|rn|rc|s)\.((?:[0-9a-f]{2})+)\.([0-9a-f]{16})@cpm-pf\.invalid>?$/.exec(messageId.trim());
  if (!m) return undefined;
  const text = Buffer.from(m[2] as string, "hex").toString("utf8");
  if (Buffer.from(text, "utf8").toString("hex") !== m[2]) return undefined; // not UTF-8
  return { kind: m[1] as StoredIdKind, msrpMessageId: text, tag: m[3] as string };
}

/** "8bit" when the body survives as is (CRLF lines only, no NUL, lines <= 998), else "base64". */
export function transferEncodingFor(body: Uint8Array): "8bit" | "base64" {
  let lineStart = 0;
  for (let i = 0; i < body.length; i++) {
    const b = body[i];
    if (b === 0x00) return "base64";
    if (b === 0x0d) {
      if (body[i + 1] !== 0x0a) return "base64";
      if (i - lineStart > MAX_LINE) return "base64";
      i++;
      lineStart = i + 1;
    } else if (b === 0x0a) return "base64";
  }
  return body.length - lineStart > MAX_LINE ? "base64" : "8bit";
}

/** What the PF reads out of a CPIM body for the object headers; undefined fields when it does not parse. */
export interface CpimFacts {
  ok: boolean;
  /** Why the CPIM headers could not be read (for the log). */
  error?: string;
  fromUri?: string;
  toUri?: string;
  imdnMessageId?: string;
  /** Media type of the encapsulated content (`text/plain`, `message/imdn+xml`, ...). */
  contentType?: string;
  content?: Uint8Array;
}

/** Reads the CPIM headers of a body; never throws (a malformed body is stored anyway). */
export function cpimFacts(contentType: string, body: Uint8Array): CpimFacts {
  if (mediaType(contentType) !== CPIM_CONTENT_TYPE) return { ok: false, error: `not ${CPIM_CONTENT_TYPE}` };
  try {
    const msg = parseCpim(body);
    return {
      ok: true,
      fromUri: addressUri(cpimHeader(msg, "From")),
      toUri: addressUri(cpimHeader(msg, "To")),
      imdnMessageId: imdnMessageId(msg),
      contentType: mediaType(contentHeader(msg, "Content-Type")),
      content: msg.content,
    };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
}

/** A header value usable on the object (no CR/LF/NUL, fits a line), else undefined. */
function safe(v: string | undefined): string | undefined {
  return v !== undefined && v !== "" && !/[\r\n\0]/.test(v) && v.length < 900 ? v : undefined;
}

export interface BuiltObject {
  raw: Buffer;
  /** Bare Message-ID. */
  messageId: string;
  imdnMessageId: string | undefined;
  cpim: CpimFacts;
}

/** Input of one MSRP message's object (deferred item or recorded message). */
export interface MessageObjectInput {
  folder: string;
  idKind: StoredIdKind;
  session: GroupSessionRef;
  contentType: string;
  body: Uint8Array;
  msrpMessageId: string;
  at: Date;
  direction: "sent" | "received";
  /** From / To when the CPIM headers do not give them. */
  defaultFrom: string;
  to: string;
  /** "gso": stored as application/group-state-object+xml, unwrapped from CPIM. */
  gso: boolean;
}

/** The RFC 5322 object of one MSRP message (see the header comment). */
export function buildMessageObject(o: MessageObjectInput): BuiltObject {
  const body = Buffer.from(o.body.buffer, o.body.byteOffset, o.body.byteLength);
  const cpim = cpimFacts(o.contentType, body);
  const isGso = o.gso || cpim.contentType === GSO_OBJECT_CONTENT_TYPE;
  let contentType = o.contentType;
  let objectBody: Buffer = body;
  let from = safe(cpim.fromUri) ?? safe(o.defaultFrom) ?? ANONYMOUS_URI;
  if (isGso) {
    from = ANONYMOUS_URI;
    if (cpim.ok && cpim.content && cpim.contentType === GSO_OBJECT_CONTENT_TYPE) {
      contentType = GSO_OBJECT_CONTENT_TYPE;
      objectBody = Buffer.from(cpim.content);
    } else if (mediaType(o.contentType) === GSO_OBJECT_CONTENT_TYPE) contentType = GSO_OBJECT_CONTENT_TYPE;
  }
  const messageId = storedMessageId(o.idKind, o.folder, o.msrpMessageId);
  const imdnId = safe(cpim.imdnMessageId);
  const raw = buildCpmObject({
    contentType,
    from,
    to: safe(o.to) ?? safe(cpim.toUri) ?? ANONYMOUS_URI,
    date: o.at,
    conversationId: o.session.conversationId,
    contributionId: o.session.contributionId,
    imdnMessageId: imdnId,
    messageId,
    direction: o.direction,
    transferEncoding: transferEncodingFor(objectBody),
    body: objectBody,
  });
  return { raw, messageId, imdnMessageId: imdnId, cpim };
}

/** The object of one deferred item: received, From = CPIM From (else the focus), To = the served user. */
export function buildDeferredObject(folder: string, session: GroupSessionRef, item: DeferredItem): BuiltObject {
  return buildMessageObject({
    folder,
    idKind: "d",
    session,
    contentType: item.contentType,
    body: item.body,
    msrpMessageId: item.msrpMessageId,
    at: item.receivedAt,
    direction: "received",
    defaultFrom: session.focus,
    to: session.servedUser,
    gso: item.kind === "gso",
  });
}

/** An RFC 5322 object as read back: header fields and the decoded body. */
export interface ParsedObject {
  fields: HeaderField[];
  header(name: string): string | undefined;
  body: Buffer;
}

/** Splits a stored object into headers and the body decoded per Content-Transfer-Encoding. */
export function parseStoredObject(raw: Uint8Array): ParsedObject {
  let block: ReturnType<typeof parseHeaderBlock>;
  try {
    block = parseHeaderBlock(raw, 0, { what: "stored object", folding: true, maxBytes: raw.length });
  } catch (err) {
    throw new CpmError("CPM_ERR_BAD_REQUEST", err instanceof CpmError ? err.detail : String(err), { cause: err });
  }
  const header = (name: string) => {
    const want = name.toLowerCase();
    return block.fields.find((f) => f.name.toLowerCase() === want)?.value;
  };
  const encoded = Buffer.from(raw.buffer, raw.byteOffset + block.end, raw.length - block.end);
  const cte = (header("Content-Transfer-Encoding") ?? "7bit").toLowerCase();
  let body: Buffer;
  if (cte === "base64") {
    const text = encoded.toString("ascii").replace(/\r\n/g, "");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw new CpmError("CPM_ERR_BAD_REQUEST", "stored object: bad base64 body");
    body = Buffer.from(text, "base64");
  } else if (cte === "8bit" || cte === "7bit" || cte === "binary") body = Buffer.from(encoded);
  else throw new CpmError("CPM_ERR_BAD_REQUEST", `stored object: unsupported Content-Transfer-Encoding ${cte}`);
  return { fields: block.fields, header, body };
}

/** RFC 5322 3.3 date (as written by rfc5322Date) -> Date; invalid -> undefined. */
function parseDate(v: string | undefined): Date | undefined {
  if (v === undefined) return undefined;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

/** Kind of an object's content, as the media plane decides it (from the CPIM payload's type). */
export function kindOf(contentType: string, body: Uint8Array): DeferredKind {
  const t = mediaType(contentType);
  if (t === GSO_OBJECT_CONTENT_TYPE) return "gso";
  let inner: string | undefined;
  try {
    // the encapsulated type only: From/To/IMDN facts are not needed here
    inner = t === CPIM_CONTENT_TYPE ? mediaType(contentHeader(parseCpim(body), "Content-Type")) : undefined;
  } catch {
    inner = undefined;
  }
  if (inner === GSO_OBJECT_CONTENT_TYPE) return "gso";
  return inner === IMDN_CONTENT_TYPE ? "imdn" : "message";
}

export interface ReadBackItem extends DeferredItem {
  /** The object's Message-ID (bare). */
  messageId: string;
  imdnMessageId: string | undefined;
}

/**
 * A deferred item from its stored object. The body, content type and MSRP
 * Message-ID are as stored; receivedAt has the Date header's 1 s resolution.
 * Throws CPM_ERR_BAD_REQUEST for an object the queue did not write.
 */
export function deferredItemFromObject(raw: Uint8Array): ReadBackItem {
  const obj = parseStoredObject(raw);
  const messageId = obj.header("Message-ID");
  const id = messageId ? msrpIdOfStoredMessageId(messageId) : undefined;
  if (!messageId || !id || id.kind !== "d")
    throw new CpmError("CPM_ERR_BAD_REQUEST", `stored object: Message-ID ${JSON.stringify(messageId)} is not a deferred item's`);
  const contentType = obj.header("Content-Type") ?? "text/plain";
  return {
    kind: kindOf(contentType, obj.body),
    contentType,
    body: obj.body,
    msrpMessageId: id.msrpMessageId,
    receivedAt: parseDate(obj.header("Date")) ?? new Date(0),
    messageId: formatMessageId(messageId).slice(1, -1),
    imdnMessageId: obj.header("IMDN-Message-ID"),
  };
}
