// A CPM object as the Message Store keeps it: one RFC 5322 message whose
// header block carries the CPM headers seen on deployed stores (cpm-facts 1.4,
// 2.3: Conversation-ID, Contribution-ID, IMDN-Message-ID, Message-Direction)
// and whose body is the object (e.g. a GSO, application/group-state-object+xml).
// Lines end in CRLF (RFC 5322 2.1); the body is sent as 8bit (RFC 2045 2.8,
// RFC 6532 for UTF-8 in From/To).
import { randomUUID } from "node:crypto";
import { CpmError } from "../errors/catalogue.js";

export interface CpmObjectInput {
  contentType: string;
  from: string;
  to: string;
  date: Date;
  conversationId: string;
  contributionId: string;
  /** Written as IMDN-Message-ID when given (GSOs: always; cpm-facts 1.4). */
  imdnMessageId?: string;
  /** RFC 5322 msg-id, with or without the angle brackets: `id-left@id-right`. */
  messageId: string;
  subject?: string;
  /** Written as Message-Direction when given. */
  direction?: "sent" | "received";
  /**
   * RFC 2045 6: "8bit" (default) sends the body as is, with bare CR or LF line
   * breaks turned into CRLF; "base64" keeps any bytes exactly (lines of 76).
   */
  transferEncoding?: "8bit" | "base64";
  /** Object body. */
  body: Buffer | string;
}

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
/** RFC 5322 2.1.1: a line MUST NOT exceed 998 characters (excluding CRLF). */
const MAX_LINE = 998;
/** RFC 2047 2: an encoded-word is at most 75 chars; 42 bytes -> 56 base64 chars + 12 framing. */
const ENCODED_WORD_BYTES = 42;

function reject(header: string, why: string): never {
  throw new CpmError("CPM_ERR_BAD_REQUEST", `CPM object header ${header}: ${why}`);
}

/** Header injection guard: a CR or LF would end the field and start another (RFC 5322 2.2). */
function checkValue(header: string, value: string): string {
  if (typeof value !== "string") reject(header, "must be a string");
  if (/[\r\n\0]/.test(value)) reject(header, "contains CR, LF or NUL");
  return value;
}

const pad2 = (n: number) => String(n).padStart(2, "0");

/** RFC 5322 3.3 date-time, in UTC ("+0000"). */
export function rfc5322Date(d: Date): string {
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) reject("Date", "invalid date");
  return (
    `${DAYS[d.getUTCDay()]}, ${pad2(d.getUTCDate())} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
    `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())} +0000`
  );
}

/** `<id-left@id-right>` (RFC 5322 3.6.4); accepts the id with or without brackets. */
export function formatMessageId(id: string): string {
  checkValue("Message-ID", id);
  const bare = id.startsWith("<") && id.endsWith(">") ? id.slice(1, -1) : id;
  if (!/^[^\s<>@"()\\,;:[\]]+@[^\s<>@"()\\,;:[\]]+$/.test(bare)) reject("Message-ID", "not of the form id-left@id-right");
  return `<${bare}>`;
}

/**
 * Subject as-is when it is short printable ASCII; otherwise RFC 2047 "B"
 * encoded-words of whole UTF-8 characters, folded with CRLF SP (RFC 5322 2.2.3).
 */
export function encodeSubject(subject: string): string {
  checkValue("Subject", subject);
  const plain = /^[\x20-\x7e]*$/.test(subject) && !subject.includes("=?") && subject.length + 9 <= 78;
  if (plain) return subject;
  const words: string[] = [];
  let chunk: number[] = [];
  const flush = () => {
    if (chunk.length) words.push(`=?UTF-8?B?${Buffer.from(chunk).toString("base64")}?=`);
    chunk = [];
  };
  for (const ch of subject) {
    const bytes = Buffer.from(ch, "utf8");
    if (chunk.length + bytes.length > ENCODED_WORD_BYTES) flush();
    chunk.push(...bytes);
  }
  flush();
  return words.join("\r\n ");
}

/** Turns bare CR and bare LF into CRLF (RFC 5322 2.3: CR and LF only appear together). */
export function toCrlf(body: Buffer): Buffer {
  let needs = false;
  for (let i = 0; i < body.length; i++) {
    const b = body[i];
    if ((b === 0x0d && body[i + 1] !== 0x0a) || (b === 0x0a && body[i - 1] !== 0x0d)) {
      needs = true;
      break;
    }
  }
  if (!needs) return body;
  const out: number[] = [];
  for (let i = 0; i < body.length; i++) {
    const b = body[i] as number;
    if (b === 0x0d) {
      out.push(0x0d, 0x0a);
      if (body[i + 1] === 0x0a) i++;
    } else if (b === 0x0a) out.push(0x0d, 0x0a);
    else out.push(b);
  }
  return Buffer.from(out);
}

/** Builds the RFC 5322 message of one CPM object. Throws CPM_ERR_BAD_REQUEST on unsafe input. */
export function buildCpmObject(o: CpmObjectInput): Buffer {
  const fields: [string, string][] = [
    ["Date", rfc5322Date(o.date)],
    ["From", checkValue("From", o.from)],
    ["To", checkValue("To", o.to)],
    ["Message-ID", formatMessageId(o.messageId)],
  ];
  if (o.subject !== undefined) fields.push(["Subject", encodeSubject(o.subject)]);
  fields.push(
    ["MIME-Version", "1.0"],
    ["Content-Type", checkValue("Content-Type", o.contentType)],
    ["Content-Transfer-Encoding", o.transferEncoding ?? "8bit"],
    ["Conversation-ID", checkValue("Conversation-ID", o.conversationId)],
    ["Contribution-ID", checkValue("Contribution-ID", o.contributionId)],
  );
  if (o.imdnMessageId !== undefined) fields.push(["IMDN-Message-ID", checkValue("IMDN-Message-ID", o.imdnMessageId)]);
  if (o.transferEncoding !== undefined && o.transferEncoding !== "8bit" && o.transferEncoding !== "base64") {
    reject("Content-Transfer-Encoding", "must be 8bit or base64");
  }
  if (o.direction !== undefined) {
    if (o.direction !== "sent" && o.direction !== "received") reject("Message-Direction", "must be sent or received");
    fields.push(["Message-Direction", o.direction]);
  }
  let head = "";
  for (const [name, value] of fields) {
    if (name !== "Subject" && value.trim() === "") reject(name, "empty");
    const line = `${name}: ${value}`;
    for (const physical of line.split("\r\n")) {
      if (Buffer.byteLength(physical, "utf8") > MAX_LINE) reject(name, `line longer than ${MAX_LINE} octets`);
    }
    head += `${line}\r\n`;
  }
  const body = typeof o.body === "string" ? Buffer.from(o.body, "utf8") : o.body;
  if (!Buffer.isBuffer(body)) reject("body", "must be a Buffer or string");
  const encoded = o.transferEncoding === "base64" ? base64Lines(body) : toCrlf(body);
  return Buffer.concat([Buffer.from(`${head}\r\n`, "utf8"), encoded]);
}

/** RFC 2045 6.8: base64 in lines of at most 76 characters, CRLF-terminated. */
export function base64Lines(body: Buffer): Buffer {
  const b64 = body.toString("base64");
  let out = "";
  for (let i = 0; i < b64.length; i += 76) out += `${b64.slice(i, i + 76)}\r\n`;
  return Buffer.from(out, "ascii");
}

/** A fresh RFC 5322 msg-id (without brackets): `<uuid>@<domain>`. */
export function newMessageId(domain: string): string {
  if (typeof domain !== "string" || !/^[^\s<>@"()\\,;:[\]]+$/.test(domain)) {
    throw new CpmError("CPM_ERR_BAD_REQUEST", `Message-ID domain ${JSON.stringify(domain)}: not a valid id-right`);
  }
  return `${randomUUID()}@${domain}`;
}
