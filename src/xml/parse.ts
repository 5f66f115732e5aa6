// The one way the PF reads XML from the network: fast-xml-parser with entity
// expansion off, DOCTYPE refused (no XXE, no billion laughs), a size cap, and
// well-formedness checked before anything is read. Namespace prefixes are
// dropped: CPM documents are read by local name (RFC 4826, RFC 4575 bodies are
// sent with varying prefixes in the wild).
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { CpmError } from "../errors/catalogue.js";

export const MAX_XML_BYTES = 64 * 1024;

export type XmlNode = Record<string, unknown>;

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: "@_",
  removeNSPrefix: true,
  processEntities: false,
  allowBooleanAttributes: true,
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  isArray: (_name, _jpath, _isLeaf, isAttribute) => !isAttribute,
});

export function parseXml(text: string | Buffer): XmlNode {
  const xml = typeof text === "string" ? text : text.toString("utf8");
  if (Buffer.byteLength(xml) > MAX_XML_BYTES) throw new CpmError("CPM_ERR_BAD_XML", `document larger than ${MAX_XML_BYTES} bytes`);
  if (/<!DOCTYPE|<!ENTITY/i.test(xml)) throw new CpmError("CPM_ERR_BAD_XML", "DOCTYPE/ENTITY declarations are refused");
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw new CpmError("CPM_ERR_BAD_XML", `not well-formed: ${valid.err.msg} (line ${valid.err.line})`);
  return parser.parse(xml) as XmlNode;
}

/** Child elements by local name (always an array with isArray above). */
export function children(node: unknown, name: string): XmlNode[] {
  if (!node || typeof node !== "object") return [];
  const v = (node as XmlNode)[name];
  return Array.isArray(v)
    ? (v as unknown[]).map((x) => (typeof x === "object" && x !== null ? (x as XmlNode) : { "#text": String(x) }))
    : [];
}

/**
 * Entity expansion is off in the parser; the five predefined entities and
 * character references (XML 1.0 4.1, 4.6) are decoded here, nothing else.
 */
export function decodeXmlText(text: string): string {
  return text.replace(/&(lt|gt|amp|quot|apos|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});/g, (_m, ref: string) => {
    switch (ref) {
      case "lt":
        return "<";
      case "gt":
        return ">";
      case "amp":
        return "&";
      case "quot":
        return '"';
      case "apos":
        return "'";
    }
    const code = ref.startsWith("#x") ? Number.parseInt(ref.slice(2), 16) : Number.parseInt(ref.slice(1), 10);
    return code <= 0x10ffff ? String.fromCodePoint(code) : "";
  });
}

export function attr(node: XmlNode | undefined, name: string): string | undefined {
  const v = node?.[`@_${name}`];
  return v === undefined || v === null ? undefined : decodeXmlText(String(v));
}

/** Text content of the first child with that name. */
export function childText(node: XmlNode | undefined, name: string): string | undefined {
  const c = children(node, name)[0];
  if (!c) return undefined;
  const t = c["#text"];
  return t === undefined ? "" : decodeXmlText(String(t));
}

/** XML 1.0 escaping for text and attribute values; drops characters XML 1.0 forbids. */
export function escapeXml(text: string): string {
  return text
    .replace(/[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu, "")
    .replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c] as string);
}
