// name-addr / addr-spec values (RFC 3261 20.10, 25.1) as used in Contact,
// From/To and Referred-By (RFC 3892 3). Header parameters follow the address.
import { CpmError } from "../errors/catalogue.js";
import { parseParams } from "./params.js";

export interface NameAddr {
  displayName: string;
  uri: string;
  /** Header parameters (after the address), lower-case names. */
  params: Map<string, string>;
}

const URI_SCHEME = /^(sips?|tel|urn|im|pres|mailto):/i;

export function parseNameAddr(value: string): NameAddr {
  const text = value.trim();
  if (!text) throw new CpmError("CPM_ERR_BAD_HEADER", "empty address");
  let displayName = "";
  let rest = text;
  if (text.startsWith('"')) {
    let i = 1;
    let name = "";
    for (; i < text.length; i++) {
      const ch = text[i] as string;
      if (ch === "\\" && i + 1 < text.length) name += text[++i];
      else if (ch === '"') break;
      else name += ch;
    }
    if (i >= text.length) throw new CpmError("CPM_ERR_BAD_HEADER", "unterminated display name");
    displayName = name;
    rest = text.slice(i + 1).trim();
    if (!rest.startsWith("<")) throw new CpmError("CPM_ERR_BAD_HEADER", "display name without <uri>");
  }
  const lt = rest.indexOf("<");
  if (lt >= 0) {
    const gt = rest.indexOf(">", lt);
    if (gt < 0) throw new CpmError("CPM_ERR_BAD_HEADER", "missing '>' in name-addr");
    if (!displayName) displayName = rest.slice(0, lt).trim();
    const uri = rest.slice(lt + 1, gt).trim();
    checkUri(uri);
    return { displayName, uri, params: parseParams(rest.slice(gt + 1)) };
  }
  // addr-spec: RFC 3261 20: parameters after an addr-spec are header params.
  const semi = rest.indexOf(";");
  const uri = (semi < 0 ? rest : rest.slice(0, semi)).trim();
  checkUri(uri);
  return { displayName: "", uri, params: parseParams(semi < 0 ? "" : rest.slice(semi)) };
}

function checkUri(uri: string): void {
  if (!URI_SCHEME.test(uri) || /[\s<>"]/.test(uri)) {
    throw new CpmError("CPM_ERR_BAD_HEADER", "not a SIP/TEL URI");
  }
}

/** Parameters of the URI itself (`sip:a@b;isfocus;transport=udp`). */
export function uriParams(uri: string): Map<string, string> {
  const semi = uri.indexOf(";");
  if (semi < 0) return new Map();
  const q = uri.indexOf("?");
  return parseParams(uri.slice(semi, q > semi ? q : undefined));
}

/** The tag parameter of a From / To value (RFC 3261 19.3); "" when absent or unreadable. */
export function tagOf(value: string | undefined): string {
  if (!value) return "";
  try {
    return parseNameAddr(value).params.get("tag") ?? "";
  } catch {
    return "";
  }
}
