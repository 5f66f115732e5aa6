// Group State Object (OMA CPM Message Storage 5.2.8), in the form deployed
// clients write and parse (reference/cpm-facts.md 1): root <groupstate>, no
// namespace, attributes timestamp / lastfocussessionid / group-type /
// contributionid, one <participant name comm-addr [role]/> per participant.
//
// The CR behind 8.3.2.3 adds <status>, <referred-by> and, with Group Session
// Data management, subject and icon. No public schema shows their form, so
// they are child elements placed AFTER all <participant> elements:
//   <status>removed</status>
//   <referred-by>sip:admin@example.net</referred-by>
//   <subject>Weekend trip</subject>
//   <icon>https://…/icon.png</icon>
// Readers that only look for <participant> children (Orange, Sony, Samsung)
// ignore unknown elements and keep working.
import { CpmError } from "../errors/catalogue.js";
import { attr, children, childText, escapeXml, parseXml } from "./parse.js";

export const GSO_CONTENT_TYPE = "application/group-state-object+xml";

export interface Participant {
  name: string;
  commAddr: string;
  role?: string | undefined;
}

export interface GroupStateObject {
  timestamp: Date;
  lastFocusSessionId: string;
  groupType: "Open" | "Closed";
  contributionId?: string | undefined;
  participants: Participant[];
  status?: "removed" | undefined;
  referredBy?: string | undefined;
  subject?: string | undefined;
  icon?: string | undefined;
}

/** xs:dateTime with an explicit offset (`+00:00`), as the client parsers expect. */
export function xmlDateTime(d: Date): string {
  return `${d.toISOString().slice(0, 19)}+00:00`;
}

export function serializeGso(gso: GroupStateObject): string {
  // Clients reject a GSO without timestamp or lastfocussessionid.
  if (!gso.lastFocusSessionId) throw new CpmError("CPM_ERR_BAD_REQUEST", "GSO needs lastfocussessionid");
  const a = (name: string, value: string) => ` ${name}="${escapeXml(value)}"`;
  let xml = '<?xml version="1.0" encoding="UTF-8"?>\n<groupstate';
  xml += a("timestamp", xmlDateTime(gso.timestamp));
  xml += a("lastfocussessionid", gso.lastFocusSessionId);
  xml += a("group-type", gso.groupType);
  if (gso.contributionId) xml += a("contributionid", gso.contributionId);
  xml += ">\n";
  for (const p of gso.participants) {
    xml += `  <participant${a("name", p.name)}${a("comm-addr", p.commAddr)}${p.role ? a("role", p.role) : ""}/>\n`;
  }
  if (gso.status) xml += `  <status>${escapeXml(gso.status)}</status>\n`;
  if (gso.referredBy) xml += `  <referred-by>${escapeXml(gso.referredBy)}</referred-by>\n`;
  if (gso.subject !== undefined) xml += `  <subject>${escapeXml(gso.subject)}</subject>\n`;
  if (gso.icon !== undefined) xml += `  <icon>${escapeXml(gso.icon)}</icon>\n`;
  return `${xml}</groupstate>\n`;
}

/** Reads a GSO back (stored objects, interim GSOs); rejects what clients reject. */
export function parseGso(xml: string | Buffer): GroupStateObject {
  const root = children(parseXml(xml), "groupstate")[0];
  if (!root) throw new CpmError("CPM_ERR_BAD_XML", "no <groupstate> root");
  const ts = attr(root, "timestamp");
  const focus = attr(root, "lastfocussessionid");
  if (!ts || Number.isNaN(Date.parse(ts))) throw new CpmError("CPM_ERR_BAD_XML", "GSO without a valid timestamp");
  if (!focus) throw new CpmError("CPM_ERR_BAD_XML", "GSO without lastfocussessionid");
  const status = childText(root, "status");
  return {
    timestamp: new Date(ts),
    lastFocusSessionId: focus,
    groupType: (attr(root, "group-type") ?? "").toLowerCase() === "open" ? "Open" : "Closed",
    contributionId: attr(root, "contributionid"),
    participants: children(root, "participant").map((p) => ({
      name: attr(p, "name") ?? "",
      commAddr: attr(p, "comm-addr") ?? "",
      role: attr(p, "role"),
    })),
    status: status === "removed" ? "removed" : undefined,
    referredBy: childText(root, "referred-by"),
    subject: childText(root, "subject"),
    icon: childText(root, "icon"),
  };
}
