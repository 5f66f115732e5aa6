// The Message Store mailbox of a served user, and the IMAP login that opens it.
//
// mailboxNameOf(): the served user's URI without scheme, parameters and
// headers: sip:alice@Example.NET;transport=tcp -> alice@example.net (sips:
// the same), tel:+1-613-555-1210;phone-context=x -> +16135551210. The host is
// lowercased (RFC 3261 19.1.4), the user part keeps its case and has its
// %-escapes decoded; a tel number loses its visual separators (RFC 3966 5.1.1).
// A name that is empty or holds a character unsafe in an IMAP login (RFC 9051
// 6.2.3 / Dovecot's master-user separator "*", quotes, backslash, "/",
// whitespace, controls, non-ASCII) is refused with CPM_ERR_BAD_SERVED_USER.
//
// mailboxLogin(): store.user with "{user}" replaced by that name; with a Dovecot
// master user the template is "{user}*pfmaster".
import { CpmError } from "../errors/catalogue.js";

export const USER_PLACEHOLDER = "{user}";

/** Printable ASCII without space and without * " ' \ / %. */
const SAFE = /^[!#$&(-)+-.0-9:-[\]-~]+$/;

function refuse(servedUser: string, why: string): never {
  throw new CpmError("CPM_ERR_BAD_SERVED_USER", `${JSON.stringify(servedUser.slice(0, 200))}: ${why}`);
}

function decodeEscapes(servedUser: string, s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return refuse(servedUser, "bad %-escape");
  }
}

/** The mailbox name of a served user's sip:, sips: or tel: URI (see the header comment). */
export function mailboxNameOf(servedUser: string): string {
  if (typeof servedUser !== "string") refuse(String(servedUser), "not a string");
  let uri = servedUser.trim();
  if (uri.startsWith("<") && uri.endsWith(">")) uri = uri.slice(1, -1);
  const m = /^(sips?|tel):(.*)$/i.exec(uri);
  if (!m) return refuse(servedUser, "not a sip:, sips: or tel: URI");
  const scheme = (m[1] as string).toLowerCase();
  // URI parameters (;...) and headers (?...) are not part of the mailbox
  const rest = (m[2] as string).split(/[;?]/, 1)[0] as string;
  let name: string;
  if (scheme === "tel") {
    name = decodeEscapes(servedUser, rest).replace(/[-.()]/g, "");
  } else {
    const at = rest.lastIndexOf("@");
    if (at < 1) return refuse(servedUser, "no user part");
    const user = decodeEscapes(servedUser, rest.slice(0, at).split(":", 1)[0] as string);
    // host[:port]: the port is not part of the address of record
    const hostPort = rest.slice(at + 1);
    const host = (
      hostPort.startsWith("[") ? hostPort.slice(0, hostPort.indexOf("]") + 1) : (hostPort.split(":", 1)[0] as string)
    ).toLowerCase();
    if (user === "" || host === "") return refuse(servedUser, "empty user or host");
    name = `${user}@${host}`;
  }
  if (name === "") return refuse(servedUser, "empty mailbox name");
  if (!SAFE.test(name)) return refuse(servedUser, "mailbox name has a character unsafe in an IMAP login");
  return name;
}

/** True when the store.user template names a login per served user. */
export function isPerUserTemplate(template: string): boolean {
  return template.includes(USER_PLACEHOLDER);
}

/** The IMAP login of a mailbox: the template with every "{user}" replaced by the mailbox name. */
export function mailboxLogin(template: string, mailboxName: string): string {
  return template.split(USER_PLACEHOLDER).join(mailboxName);
}
