// Who may tell the PF that a user registered (OMA CPM 8.3.2.9.1.2 DD-1):
// only the S-CSCF sends third-party REGISTERs to an application server
// (TS 24.229 5.4.1.7), so one from any other source is refused (403) and one
// whose To is not among the registered user's own identities (the
// P-Associated-URI of the registrar's 200 OK, TS 24.229 5.4.1.7
// "include-register-response") starts nothing. Kamailio refuses untrusted
// sources first (CPM_PF_SCSCF_ADDRESSES); this is the sidecar's own check.
// Pure, but for a one-entry cache of the parsed list.
import { isIP } from "node:net";
import { type AddressList, inAddressList, parseAddressList } from "./address-list.js";
import { parseSipMessage } from "./message.js";
import { sameUser } from "./public-identity.js";
import { readThirdPartyRegister } from "./third-party-register.js";

/** A parsed `delivery.trustedRegistrars`: IP addresses and CIDR ranges. */
export type TrustedRegistrars = AddressList;

/** Reads `delivery.trustedRegistrars` (src/sip/address-list.ts); CpmError CPM_ERR_CONFIG naming the bad entry. */
export function parseTrustedRegistrars(value: string): TrustedRegistrars {
  return parseAddressList(value, "the S-CSCF's");
}

/**
 * The IP address of an Envelope source: "ip:port" as Kamailio sends it
 * ($si:$sp; an IPv6 $si has no brackets), "[v6]:port", or a bare address.
 * An IPv4-mapped IPv6 address is read as the IPv4 one. Undefined when none.
 */
export function sourceAddress(source: string): string | undefined {
  let s = source.trim();
  const bracketed = /^\[([^\]]+)\](?::[0-9]+)?$/.exec(s);
  if (bracketed) s = bracketed[1] as string;
  else {
    const withPort = /^(.*):[0-9]+$/.exec(s);
    if (withPort && isIP(withPort[1] as string)) s = withPort[1] as string;
  }
  if (!isIP(s)) return undefined;
  const mapped = /^::ffff:([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)$/i.exec(s);
  return mapped ? mapped[1] : s;
}

let lastParsed: { value: string; trusted: TrustedRegistrars } | undefined;

/** parseTrustedRegistrars, remembering the last value (the config's, read once per REGISTER). */
export function trustedRegistrars(value: string): TrustedRegistrars {
  if (lastParsed?.value !== value) lastParsed = { value, trusted: parseTrustedRegistrars(value) };
  return lastParsed.trusted;
}

/** True when the source ("ip:port") is one of the trusted registrars. */
export function isTrustedRegistrar(source: string, trusted: TrustedRegistrars): boolean {
  const ip = sourceAddress(source);
  return ip !== undefined && inAddressList(ip, trusted);
}

/** What the PF answers a refused third-party REGISTER (the shape of a RegistrationResult). */
export interface RegistrationRefusal {
  accepted: false;
  deliveries: 0;
  notes: string[];
  /** SIP status Kamailio answers the REGISTER with instead of 200 OK; absent = 200 OK (nothing started). */
  rejectStatus?: number;
  rejectReason?: string;
}

/**
 * DD-1 trust, before anything is started: undefined when the REGISTER may go
 * on; otherwise why not. An untrusted source gets 403 without the REGISTER
 * being read; a To not among the P-Associated-URI identities gets 200 OK with
 * a note (the S-CSCF is trusted, the registration is just not this user's).
 * A REGISTER that does not parse throws CpmError (CPM_ERR_BAD_SIP / _HEADER).
 */
export function refuseRegistration(
  env: { raw: Uint8Array; source: string },
  trusted: TrustedRegistrars | string,
): RegistrationRefusal | undefined {
  if (!isTrustedRegistrar(env.source, typeof trusted === "string" ? trustedRegistrars(trusted) : trusted)) {
    return {
      accepted: false,
      deliveries: 0,
      notes: [`third-party REGISTER from ${env.source || "an unknown source"}, not a trusted registrar (delivery.trustedRegistrars)`],
      rejectStatus: 403,
      rejectReason: "Forbidden",
    };
  }
  const reg = readThirdPartyRegister(parseSipMessage(env.raw));
  if (reg.identities.length > 0 && !reg.identities.some((id) => sameUser(id, reg.servedUser))) {
    return {
      accepted: false,
      deliveries: 0,
      notes: [`${reg.servedUser} is not among the registered user's identities (P-Associated-URI): nothing started`],
    };
  }
  return undefined;
}
