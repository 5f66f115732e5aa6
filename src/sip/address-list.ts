// Lists of peers trusted by source address: comma-separated IPv4/IPv6
// addresses and CIDRs ("127.0.0.1,::1", "10.0.0.0/24"), as Kamailio's ipops
// is_in_subnet takes them. Used for the S-CSCFs (registration-trust.ts) and
// for the Kamailio instances the PF's SIP UA takes datagrams from (ua.ts).
import { BlockList, isIP } from "node:net";
import { CpmError } from "../errors/catalogue.js";

export interface AddressList {
  readonly list: BlockList;
  readonly entries: readonly string[];
}

/**
 * CpmError CPM_ERR_CONFIG naming the bad entry; an empty list is refused too
 * (nobody would be trusted). `who` says whose addresses are missing.
 */
export function parseAddressList(value: string, who: string): AddressList {
  const entries = value
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e !== "");
  if (entries.length === 0) throw new CpmError("CPM_ERR_CONFIG", `must list at least one IP address or CIDR (${who})`);
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

/** True when `ip` (an IPv4-mapped IPv6 address counts as the IPv4 one) is in the list; false for anything that is no IP address. */
export function inAddressList(ip: string, trusted: AddressList): boolean {
  const mapped = /^::ffff:([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)$/i.exec(ip);
  const address = mapped ? (mapped[1] as string) : ip;
  const family = isIP(address);
  return family !== 0 && trusted.list.check(address, family === 6 ? "ipv6" : "ipv4");
}
