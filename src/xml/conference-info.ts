// conference-info documents (RFC 4575 5) from the focus's NOTIFYs: who is in
// the group session now, and its subject. RFC 4575 4.1: a document with a
// version not above the last one seen is discarded by the caller.
import { CpmError } from "../errors/catalogue.js";
import { attr, children, childText, parseXml } from "./parse.js";

export interface ConferenceUser {
  entity: string;
  displayText: string;
  /** full | partial | deleted (RFC 4575 5.6). */
  state: string;
  /** True when every endpoint is disconnected (the user left). */
  disconnected: boolean;
  role: string | undefined;
}

export interface ConferenceInfo {
  entity: string;
  state: "full" | "partial" | "deleted";
  version: number;
  subject: string | undefined;
  /** Group icon, when the focus sends one (RCS extension; form unconfirmed). */
  icon: string | undefined;
  users: ConferenceUser[];
}

export function parseConferenceInfo(xml: string | Buffer): ConferenceInfo {
  const doc = parseXml(xml);
  const root = children(doc, "conference-info")[0];
  if (!root) throw new CpmError("CPM_ERR_BAD_XML", "no <conference-info> root");
  const version = Number(attr(root, "version") ?? "0");
  if (!Number.isInteger(version) || version < 0)
    throw new CpmError("CPM_ERR_BAD_XML", "conference-info version is not an unsigned integer");
  const stateAttr = (attr(root, "state") ?? "full").toLowerCase();
  if (stateAttr !== "full" && stateAttr !== "partial" && stateAttr !== "deleted") {
    throw new CpmError("CPM_ERR_BAD_XML", "conference-info state is not full|partial|deleted");
  }
  const description = children(root, "conference-description")[0];
  const iconNode = children(description, "icon")[0];
  const icon = iconNode
    ? (childText(iconNode, "icon-uri") ?? childText(iconNode, "file-info") ?? String(iconNode["#text"] ?? ""))
    : undefined;
  const users = children(children(root, "users")[0], "user").flatMap((u) => {
    const entity = attr(u, "entity");
    if (!entity) return [];
    const endpoints = children(u, "endpoint");
    const statuses = endpoints.map((e) => (childText(e, "status") ?? "").toLowerCase());
    const roleNode = children(children(u, "roles")[0], "entry")[0];
    return [
      {
        entity,
        displayText: childText(u, "display-text") ?? "",
        state: (attr(u, "state") ?? "full").toLowerCase(),
        disconnected: statuses.length > 0 && statuses.every((s) => s === "disconnected" || s === "disconnecting"),
        role: roleNode ? String(roleNode["#text"] ?? "") || undefined : undefined,
      },
    ];
  });
  return {
    entity: attr(root, "entity") ?? "",
    state: stateAttr,
    version,
    subject: description ? childText(description, "subject") : undefined,
    icon: icon || undefined,
    users,
  };
}
