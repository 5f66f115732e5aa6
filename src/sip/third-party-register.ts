// The third-party REGISTER an S-CSCF sends to an application server such as
// the PF (3GPP TS 24.229 5.4.1.7; the registration event DD-1 starts from):
// Request-URI the AS, To the registered public user identity, Expires the
// registration's. The body may carry the UE's own REGISTER (and the 200 OK to
// it) as message/sip parts, which is where the client's contact is. Pure.
import { CpmError } from "../errors/catalogue.js";
import { header, headerValues, parseSipMessage, type SipMessage, splitCommaList } from "./message.js";
import { bodyParts } from "./multipart.js";
import { parseNameAddr } from "./name-addr.js";

export interface ThirdPartyRegistration {
  /** The public user identity that registered (the To URI): the served user. */
  servedUser: string;
  /** false for a de-registration (Expires: 0). */
  registered: boolean;
  /**
   * The client's contact from the UE's REGISTER in the body (first Contact
   * with a non-zero expiry), as a name-addr with its parameters; undefined
   * when the body does not carry it.
   */
  contact: string | undefined;
  /** +sip.instance of that contact (RFC 5626), without the quotes. */
  instanceId: string | undefined;
}

/** Reads a third-party REGISTER; CpmError for what is not one (bad start line, no To, bad body). */
export function readThirdPartyRegister(msg: SipMessage): ThirdPartyRegistration {
  if (msg.kind !== "request" || msg.method !== "REGISTER") throw new CpmError("CPM_ERR_BAD_REQUEST", "not a REGISTER request");
  const to = header(msg, "to");
  if (!to) throw new CpmError("CPM_ERR_BAD_SIP", "REGISTER without To");
  const servedUser = parseNameAddr(to).uri;
  const expires = header(msg, "expires");
  const registered = expires === undefined || Number(expires.trim()) !== 0;
  let contact: string | undefined;
  for (const part of bodyParts(header(msg, "content-type"), msg.body)) {
    if (part.contentType !== "message/sip") continue;
    let inner: SipMessage;
    try {
      inner = parseSipMessage(part.body);
    } catch (err) {
      throw new CpmError("CPM_ERR_BAD_SIP", "message/sip part is not a SIP message", { cause: err });
    }
    // TS 24.229 5.4.1.7: the UE's REGISTER request (a 200 OK part is skipped)
    if (inner.kind !== "request" || inner.method !== "REGISTER") continue;
    contact = liveContact(inner);
    if (contact) break;
  }
  const instanceId = contact ? parseNameAddr(contact).params.get("+sip.instance")?.replace(/^"|"$/g, "") : undefined;
  return { servedUser, registered, contact, instanceId };
}

/** The first Contact of the UE's REGISTER that is not being removed (RFC 3261 10.2.2: expires=0 removes). */
function liveContact(register: SipMessage): string | undefined {
  const defaultExpires = header(register, "expires");
  for (const value of headerValues(register, "contact").flatMap(splitCommaList)) {
    if (value.trim() === "*") continue;
    const c = parseNameAddr(value);
    const expires = c.params.get("expires") ?? defaultExpires;
    if (expires !== undefined && Number(expires.trim()) === 0) continue;
    return value.trim();
  }
  return undefined;
}
