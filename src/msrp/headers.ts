// Values of the MSRP headers the stack acts on (RFC 4975 9): Byte-Range,
// Status, Success-Report, Failure-Report, Message-ID. Parsers return
// undefined on a bad value; the frame parser turns that into a 400.
import type { ByteRange, FailureReport, MsrpStatus, SuccessReport } from "./frame.js";

/** Canonical spelling of the headers with typed fields, by lower-case name. */
export const KNOWN_HEADERS = {
  "to-path": "To-Path",
  "from-path": "From-Path",
  "message-id": "Message-ID",
  "byte-range": "Byte-Range",
  "success-report": "Success-Report",
  "failure-report": "Failure-Report",
  status: "Status",
  "content-type": "Content-Type",
} as const;

/** Largest byte position accepted in a Byte-Range (2^53 - 1 keeps arithmetic exact). */
const MAX_POSITION = Number.MAX_SAFE_INTEGER;

function parsePosition(s: string): number | undefined {
  if (!/^[0-9]{1,16}$/.test(s)) return undefined;
  const n = Number(s);
  return n <= MAX_POSITION ? n : undefined;
}

/** `range-start "-" range-end "/" total`; range-end and total may be `*`. */
export function parseByteRange(value: string): ByteRange | undefined {
  const m = /^([0-9]+)-([0-9]+|\*)\/([0-9]+|\*)$/.exec(value);
  if (!m) return undefined;
  const start = parsePosition(m[1] as string);
  const endText = m[2] as string;
  const totalText = m[3] as string;
  const end = endText === "*" ? "*" : parsePosition(endText);
  const total = totalText === "*" ? "*" : parsePosition(totalText);
  if (start === undefined || end === undefined || total === undefined) return undefined;
  if (start < 1) return undefined;
  return { start, end, total };
}

export function formatByteRange(r: ByteRange): string {
  return `${r.start}-${r.end}/${r.total}`;
}

/** `Status: namespace SP status-code [SP text-reason]`. */
export function parseStatus(value: string): MsrpStatus | undefined {
  const m = /^([0-9]{3}) ([0-9]{3})(?: (.*))?$/.exec(value);
  if (!m) return undefined;
  const status: MsrpStatus = { namespace: m[1] as string, code: Number(m[2]) };
  if (m[3] !== undefined && m[3].length > 0) status.comment = m[3];
  return status;
}

export function formatStatus(s: MsrpStatus): string {
  const code = String(s.code).padStart(3, "0");
  return s.comment === undefined ? `${s.namespace} ${code}` : `${s.namespace} ${code} ${s.comment}`;
}

export function parseSuccessReport(value: string): SuccessReport | undefined {
  return value === "yes" || value === "no" ? value : undefined;
}

export function parseFailureReport(value: string): FailureReport | undefined {
  return value === "yes" || value === "no" || value === "partial" ? value : undefined;
}

/**
 * Message-ID is an `ident` in RFC 4975 9. Deployed peers are looser (the RFC's
 * own examples include short ones), so any 1-64 characters of the ident set
 * are accepted here; ids this stack generates are always valid idents.
 */
export function isAcceptableMessageId(value: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9.\-+%=_]{0,63}$/.test(value);
}
