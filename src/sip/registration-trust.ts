// Who may tell the PF that a user registered (OMA CPM 8.3.2.9.1.2 DD-1):
// only the S-CSCF sends third-party REGISTERs to an application server
// (TS 24.229 5.4.1.7), so one from any other source is refused (403) and one
// whose To is not among the registered user's own identities (the
// P-Associated-URI of the registrar's 200 OK, TS 24.229 5.4.1.7
// "include-register-response") starts nothing. Kamailio refuses untrusted
// sources first (CPM_PF_SCSCF_ADDRESSES); this is the sidecar's own check.
// Pure, but for a one-entry cache of the parsed list.
import { BlockList, isIP } from "node:net";
import { CpmError } from "../errors/catalogue.js";
import { parseSipMessage } from "./message.js";
import { sameUser } from "./public-identity.js";
import { readThirdPartyRegister } from "./third-party-register.js";

/** A parsed `delivery.trustedRegistrars`: IP addresses and CIDR ranges. */
export interface TrustedRegistrars {
  readonly list: BlockList;
  readonly entries: readonly string[];
}

/**
 * Reads a comma-separated list of IPv4/IPv6 addresses and CIDRs
 * ("127.0.0.1,::1", "10.0.0.0/24"). CpmError CPM_ERR_CONFIG naming the bad
 * entry; an empty list is refused too (every third-party REGISTER would be).
 */
export function parseTrustedRegistrars(value: string): TrustedRegistrars {
  const entries = value
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e !== "");
  if (entries.length === 0) throw new CpmError("CPM_ERR_CONFIG", "must list at least one IP address or CIDR (the S-CSCF's)");
  const list = new BlockList();
  for (const entry of entries) {
    const [address = "", prefix, ...extra] = entry.split("/");
    const family = isIP(address);
    const bits = prefix === undefined ? (family === 6 ? 128 : 32) : Number(prefix);
    const max = family === 6 ? 128 : 32;
    if (family === 0 || extra.length > 0 || (prefix !== undefined && !/^[0-9]{1,3}$/.test(prefix)) || bits > max) {
      throw new CpmError("CPM_ERR_CONFIG", `"${entry}" is not an IP address or CIDR`);
    }
    list.addSubnet(address, bits, family === 6 ? "ipv6" : "ipv4");
  }
  return { list, entries };
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
  if (ip === undefined) return false;
  return trusted.list.check(ip, isIP(ip) === 6 ? "ipv6" : "ipv4");
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
