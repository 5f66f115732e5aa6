// Public user identities (TS 23.003 13.4, TS 24.229 5.4.1.2.2: a SIP URI or a
// tel URI) compared as the same user: the To of a third-party REGISTER
// against the P-Associated-URI set of the registrar's 200 OK. Pure.
//
// Normal form (what sameUser compares):
//   - tel URI (RFC 3966): "tel:" + the number without visual separators
//     (RFC 3966 5.1.1), parameters dropped (a local number keeps its
//     phone-context);
//   - SIP URI with user=phone (RFC 3261 19.1.6) and a global number: the
//     tel form of its user part, so sip:+16135551210@h;user=phone equals
//     tel:+16135551210;
//   - other sip:/sips: URIs (RFC 3261 19.1.4): scheme and host lower-case,
//     user part case-sensitive with %-escapes decoded, port kept, URI
//     parameters and headers dropped. sip: and sips: stay different.

const VISUAL_SEPARATORS = /[-.()]/g;
const GLOBAL_NUMBER = /^\+[0-9]+$/;

function decode(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

/**
 * The tel form of a telephone-subscriber (RFC 3966 3): a global number
 * alone; a local number keeps its phone-context (RFC 3966 5.1.5: the number
 * means nothing without it). Undefined when it is no number.
 */
function telForm(subscriber: string): string | undefined {
  const [digits = "", ...params] = subscriber.split(";");
  const number = digits.replace(VISUAL_SEPARATORS, "").toUpperCase();
  if (GLOBAL_NUMBER.test(number)) return `tel:${number}`;
  if (!/^[0-9*#A-F]+$/.test(number)) return undefined;
  const context = params.map((p) => p.trim().toLowerCase()).find((p) => p.startsWith("phone-context="));
  return context ? `tel:${number};${context}` : undefined;
}

/**
 * The normal form of a public user identity (a URI, with or without <>), or
 * undefined when it is not a usable sip:, sips: or tel: URI.
 */
export function normaliseIdentity(identity: string): string | undefined {
  let text = identity.trim();
  if (text.startsWith("<") && text.endsWith(">")) text = text.slice(1, -1).trim();
  if (/[\s<>"]/.test(text)) return undefined;
  const colon = text.indexOf(":");
  if (colon <= 0) return undefined;
  const scheme = text.slice(0, colon).toLowerCase();
  const rest = text.slice(colon + 1);
  if (scheme === "tel") {
    const decoded = decode(rest);
    return decoded === undefined ? undefined : telForm(decoded);
  }
  if (scheme !== "sip" && scheme !== "sips") return undefined;
  // RFC 3261 19.1.1: sip:user@host:port;uri-parameters?headers
  // "@" cannot appear unescaped in host, parameters or headers: the last one ends the userinfo
  const at = rest.lastIndexOf("@");
  const userPart = at >= 0 ? rest.slice(0, at) : "";
  const afterUser = at >= 0 ? rest.slice(at + 1) : rest;
  const hostEnd = afterUser.search(/[;?]/);
  const hostPort = (hostEnd < 0 ? afterUser : afterUser.slice(0, hostEnd)).toLowerCase();
  if (!hostPort || !/^(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(:[0-9]{1,5})?$/.test(hostPort)) return undefined;
  const paramText = hostEnd < 0 ? "" : (afterUser.slice(hostEnd).split("?")[0] ?? "");
  const userPhone = paramText.split(";").some((p) => p.trim().toLowerCase().replace(/\s/g, "") === "user=phone");
  const user = decode(userPart.split(":")[0] ?? ""); // a password (user:pw) is no part of the identity
  if (user === undefined) return undefined;
  if (userPhone && user) {
    const tel = telForm(user);
    if (tel?.startsWith("tel:+")) return tel;
  }
  return user ? `${scheme}:${user}@${hostPort}` : `${scheme}:${hostPort}`;
}

/** True when both are public user identities of the same user (normal forms equal). */
export function sameUser(a: string, b: string): boolean {
  const na = normaliseIdentity(a);
  return na !== undefined && na === normaliseIdentity(b);
}
