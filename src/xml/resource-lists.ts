// resource-lists bodies (RFC 4826 3.2; RFC 5366 for the INVITE's recipient
// list): the participants the INVITE names. Nested <list>s are walked.
import { attr, children, childText, escapeXml, parseXml, type XmlNode } from "./parse.js";

export interface ListEntry {
  uri: string;
  displayName: string;
}

export const MAX_ENTRIES = 1000;

export function parseResourceLists(xml: string | Buffer): ListEntry[] {
  const doc = parseXml(xml);
  const root = children(doc, "resource-lists")[0];
  const out: ListEntry[] = [];
  const walk = (list: XmlNode, depth: number) => {
    if (depth > 8) return;
    for (const entry of children(list, "entry")) {
      const uri = attr(entry, "uri");
      if (uri && out.length < MAX_ENTRIES) out.push({ uri, displayName: childText(entry, "display-name") ?? "" });
    }
    for (const sub of children(list, "list")) walk(sub, depth + 1);
  };
  for (const list of children(root, "list")) walk(list, 0);
  return out;
}

/**
 * A resource-lists document (RFC 4826 3.2) with one <list> of `entries`, as
 * the INVITE of a group session carries it (RFC 5366 2, multipart part with
 * Content-Disposition: recipient-list). An empty list is still a valid
 * document. Round-trips through parseResourceLists.
 */
export function buildResourceLists(entries: readonly ListEntry[]): string {
  let xml = '<?xml version="1.0" encoding="UTF-8"?>\n<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">\n <list>\n';
  for (const e of entries) {
    const uri = ` uri="${escapeXml(e.uri)}"`;
    xml += e.displayName ? `  <entry${uri}><display-name>${escapeXml(e.displayName)}</display-name></entry>\n` : `  <entry${uri}/>\n`;
  }
  return `${xml} </list>\n</resource-lists>\n`;
}
