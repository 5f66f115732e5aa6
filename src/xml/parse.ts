// The one way the PF reads XML from the network: fast-xml-parser with entity
// expansion off, DOCTYPE refused (no XXE, no billion laughs), a size cap, a
// nesting bound, names that would reach Object.prototype refused, and
// well-formedness checked before anything is read. Every failure, the
// library's own included, is CPM_ERR_BAD_XML. Namespace prefixes are
// dropped: CPM documents are read by local name (RFC 4826, RFC 4575 bodies are
// sent with varying prefixes in the wild).
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { asCpmError, CpmError } from "../errors/catalogue.js";

export const MAX_XML_BYTES = 64 * 1024;
/** Deepest element nesting read (the root is depth 1); CPM bodies need fewer than 8. */
export const MAX_XML_DEPTH = 32;
/** Element and attribute local names refused: as object keys they would reach Object.prototype. */
export const REFUSED_XML_NAMES: ReadonlySet<string> = new Set(["__proto__", "constructor", "prototype"]);

export type XmlNode = Record<string, unknown>;

const ATTRIBUTE_PREFIX = "@_";

/** Called by the parser for every element and attribute name, before it becomes a key. */
function refuseDangerousName(name: string, kind: "element" | "attribute"): string {
  const raw = kind === "attribute" && name.startsWith(ATTRIBUTE_PREFIX) ? name.slice(ATTRIBUTE_PREFIX.length) : name;
  const local = raw.slice(raw.lastIndexOf(":") + 1);
  if (REFUSED_XML_NAMES.has(raw) || REFUSED_XML_NAMES.has(local)) throw new CpmError("CPM_ERR_BAD_XML", `${kind} name "${raw}" is refused`);
  return name;
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: ATTRIBUTE_PREFIX,
  removeNSPrefix: true,
  processEntities: false,
  allowBooleanAttributes: true,
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  isArray: (_name, _jpath, _isLeaf, isAttribute) => !isAttribute,
  // the parser counts the elements enclosing the one it opens
  maxNestedTags: MAX_XML_DEPTH - 1,
  transformTagName: (name) => refuseDangerousName(name, "element"),
  transformAttributeName: (name) => refuseDangerousName(name, "attribute"),
});

export function parseXml(text: string | Buffer): XmlNode {
  const xml = typeof text === "string" ? text : text.toString("utf8");
  if (Buffer.byteLength(xml) > MAX_XML_BYTES) throw new CpmError("CPM_ERR_BAD_XML", `document larger than ${MAX_XML_BYTES} bytes`);
  if (/<!DOCTYPE|<!ENTITY/i.test(xml)) throw new CpmError("CPM_ERR_BAD_XML", "DOCTYPE/ENTITY declarations are refused");
  try {
    const valid = XMLValidator.validate(xml);
    if (valid !== true) throw new CpmError("CPM_ERR_BAD_XML", `not well-formed: ${valid.err.msg} (line ${valid.err.line})`);
    const doc = parser.parse(xml) as XmlNode;
    // The parser bounds open tags only; an empty element one level deeper gets here.
    if (depthOf(doc) > MAX_XML_DEPTH) throw new CpmError("CPM_ERR_BAD_XML", `elements nested deeper than ${MAX_XML_DEPTH}`);
    return doc;
  } catch (err) {
    throw asCpmError(err, "CPM_ERR_BAD_XML");
  }
}

/** Element nesting of a parsed document (a document's root element is depth 1). */
function depthOf(node: XmlNode): number {
  let deepest = 0;
  for (const [key, value] of Object.entries(node)) {
    if (key.startsWith(ATTRIBUTE_PREFIX) || key === "#text" || !Array.isArray(value)) continue;
    for (const child of value)
      deepest = Math.max(deepest, 1 + (typeof child === "object" && child !== null ? depthOf(child as XmlNode) : 0));
  }
  return deepest;
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
