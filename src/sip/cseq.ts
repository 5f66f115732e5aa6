// CSeq header value (RFC 3261 20.16): CSeq = "CSeq" HCOLON 1*DIGIT LWS Method.
import { CpmError } from "../errors/catalogue.js";
import { header, type SipMessage } from "./message.js";

export interface CSeq {
  /** The sequence number: less than 2**31 (RFC 3261 8.1.1.5). */
  seq: number;
  /** The method, upper case. */
  method: string;
}

/** Parses a CSeq value; throws CPM_ERR_BAD_HEADER when it is absent or malformed. */
export function parseCSeq(value: string | undefined): CSeq {
  const m = /^\s*(\d{1,10})\s+([A-Za-z0-9.!%*_+`'~-]+)\s*$/.exec(value ?? "");
  const seq = m ? Number(m[1]) : Number.NaN;
  if (!m || seq >= 2 ** 31) throw new CpmError("CPM_ERR_BAD_HEADER", `CSeq ${JSON.stringify(value ?? "")} is malformed`);
  return { seq, method: (m[2] as string).toUpperCase() };
}

/** The message's CSeq, or undefined when it is absent or malformed (for callers that skip such a message). */
export function cseqOfMessage(msg: SipMessage): CSeq | undefined {
  try {
    return parseCSeq(header(msg, "cseq"));
  } catch {
    return undefined;
  }
}
