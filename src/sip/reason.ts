// Reason header (RFC 3326 2): `Reason: SIP ;cause=410 ;text="Gone"`, several
// reason-values per header or per line, protocol and parameter names
// case-insensitive, `text` a quoted-string.
import { CpmError } from "../errors/catalogue.js";
import { splitCommaList } from "./message.js";
import { parseParams } from "./params.js";

export interface ReasonValue {
  /** Upper-case protocol: "SIP", "Q.850", or another token. */
  protocol: string;
  cause: number | undefined;
  text: string | undefined;
}

export interface ParsedReasons {
  values: ReasonValue[];
  /** Each of `values` as received (trimmed), same order. */
  raw: string[];
  /** One line per value that could not be parsed, for the log. */
  errors: string[];
}

const TOKEN = /^[A-Za-z0-9.!%*_+`'~-]+$/;

export function parseReasonValue(text: string): ReasonValue {
  const semi = text.indexOf(";");
  const protocol = (semi < 0 ? text : text.slice(0, semi)).trim();
  if (!TOKEN.test(protocol)) throw new CpmError("CPM_ERR_BAD_HEADER", "Reason protocol is not a token");
  const params = parseParams(semi < 0 ? "" : text.slice(semi));
  const causeText = params.get("cause");
  let cause: number | undefined;
  if (causeText !== undefined) {
    if (!/^\d{1,5}$/.test(causeText)) throw new CpmError("CPM_ERR_BAD_HEADER", "Reason cause is not 1*DIGIT");
    cause = Number(causeText);
  }
  return { protocol: protocol.toUpperCase(), cause, text: params.get("text") };
}

/** Parses every Reason header line; bad values are reported, not thrown. */
export function parseReasonHeaders(lines: readonly string[]): ParsedReasons {
  const out: ParsedReasons = { values: [], raw: [], errors: [] };
  for (const line of lines) {
    for (const item of splitCommaList(line)) {
      try {
        out.values.push(parseReasonValue(item));
        out.raw.push(item.trim());
      } catch (err) {
        out.errors.push(`${err instanceof CpmError ? err.detail : String(err)}: ${JSON.stringify(item.slice(0, 120))}`);
      }
    }
  }
  return out;
}

function quote(text: string): string {
  return `"${text.replace(/[\\"]/g, (c) => `\\${c}`).replace(/[\r\n]/g, " ")}"`;
}

export function formatReason(value: { protocol: string; cause: number; text?: string | undefined }): string {
  return `${value.protocol};cause=${value.cause}${value.text ? `;text=${quote(value.text)}` : ""}`;
}

/**
 * The Reason towards the client when the PF decided the SIP value itself
 * (RFC 3326 2: one reason-value per protocol): that SIP value, with a text
 * only when one is given (none is made up), then the first value of each
 * other protocol (Q.850, ...) exactly as received.
 */
export function formatClientReason(sip: { cause: number; text?: string | undefined }, received: ParsedReasons): string {
  const out = [formatReason({ protocol: "SIP", cause: sip.cause, text: sip.text })];
  const protocols = new Set(["SIP"]);
  received.values.forEach((v, i) => {
    if (protocols.has(v.protocol)) return;
    protocols.add(v.protocol);
    out.push((received.raw[i] as string).replace(/[\r\n]+/g, " "));
  });
  return out.join(", ");
}
