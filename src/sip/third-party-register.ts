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
  /**
   * The registered user's public user identities: the P-Associated-URI
   * values (URIs, in order) of the registrar's 200 OK carried in the body
   * (TS 24.229 5.4.1.7 include-register-response); [] when the body has no
   * such 200 OK. Compare with sameUser (src/sip/public-identity.ts).
   */
  identities: string[];
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
  const identities: string[] = [];
  for (const part of bodyParts(header(msg, "content-type"), msg.body)) {
    if (part.contentType !== "message/sip") continue;
    let inner: SipMessage;
    try {
      inner = parseSipMessage(part.body);
    } catch (err) {
      throw new CpmError("CPM_ERR_BAD_SIP", "message/sip part is not a SIP message", { cause: err });
    }
    // TS 24.229 5.4.1.7: the registrar's 200 OK to the UE's REGISTER
    if (inner.kind === "response") {
      if (inner.statusCode === 200 && identities.length === 0) identities.push(...associatedUris(inner));
      continue;
    }
    // the UE's REGISTER request
    if (inner.method !== "REGISTER" || contact) continue;
    contact = liveContact(inner);
  }
  const instanceId = contact ? parseNameAddr(contact).params.get("+sip.instance")?.replace(/^"|"$/g, "") : undefined;
  return { servedUser, registered, contact, instanceId, identities };
}

/** TS 24.229 5.4.1.2.2 / RFC 7315 4.1: P-Associated-URI values, the URIs; CpmError for one that is not a URI. */
function associatedUris(ok: SipMessage): string[] {
  const out: string[] = [];
  for (const value of headerValues(ok, "p-associated-uri").flatMap(splitCommaList)) {
    if (value.trim() === "") continue;
    try {
      out.push(parseNameAddr(value).uri);
    } catch (err) {
      const shown = JSON.stringify(value.slice(0, 80));
      throw new CpmError("CPM_ERR_BAD_HEADER", `P-Associated-URI of the registrar's 200 OK is malformed: ${shown}`, { cause: err });
    }
  }
  return out;
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
