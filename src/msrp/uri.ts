// MSRP URIs (RFC 4975 6 and 9): `msrp://host:port/session-id;tcp` and
// `msrps://` for TLS. RFC 4976 relays also use URIs with userinfo and without
// a session-id (`msrps://alice@intra.example.com;tcp`).
//   MSRP-URI   = msrp-scheme "://" authority ["/" session-id] ";" transport *( ";" URI-parameter)
//   session-id = 1*( unreserved / "+" / "=" / "/" )
//   transport  = "tcp" / 1*ALPHANUM
import { CpmError } from "../errors/catalogue.js";

export type MsrpScheme = "msrp" | "msrps";

export interface MsrpUriParam {
  name: string;
  value?: string;
}

export interface MsrpUri {
  scheme: MsrpScheme;
  /** userinfo before `@` (RFC 4976 relay URIs), as written. */
  user?: string;
  /** Host as written: a name, an IPv4 address or a bracketed IPv6 literal. */
  host: string;
  port?: number;
  /** Opaque; compared case-sensitively (RFC 4975 6.1). */
  sessionId?: string;
  /** `tcp` for RFC 4975 (and TLS over TCP for msrps), as written. */
  transport: string;
  params: MsrpUriParam[];
}

const USER_RE = /^[A-Za-z0-9\-._~%!$&'()*+,=:]+$/;
const REG_NAME_RE = /^[A-Za-z0-9\-._~%!$&'()*+,=]+$/;
const IPV6_RE = /^\[[0-9A-Fa-f:.]+\]$/;
const SESSION_ID_RE = /^[A-Za-z0-9\-._~+=/]+$/;
const TRANSPORT_RE = /^[A-Za-z0-9]+$/;
/** RFC 3261 token, as RFC 4975 9 uses it for URI-parameter. */
const TOKEN_RE = /^[A-Za-z0-9\-.!%*_+`'~]+$/;

function bad(text: string, why: string): CpmError {
  return new CpmError("CPM_ERR_MSRP_URI", `${why}: ${JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}...` : text)}`);
}

/** Parses one MSRP URI. Throws CpmError CPM_ERR_MSRP_URI. */
export function parseMsrpUri(text: string): MsrpUri {
  const sep = text.indexOf("://");
  if (sep < 0) throw bad(text, "missing scheme");
  const scheme = text.slice(0, sep).toLowerCase();
  if (scheme !== "msrp" && scheme !== "msrps") throw bad(text, "scheme is not msrp or msrps");
  const rest = text.slice(sep + 3);
  let authEnd = rest.length;
  for (let i = 0; i < rest.length; i++) {
    const c = rest[i];
    if (c === "/" || c === ";") {
      authEnd = i;
      break;
    }
  }
  const authority = rest.slice(0, authEnd);
  let tail = rest.slice(authEnd);

  let user: string | undefined;
  let hostPort = authority;
  const at = authority.lastIndexOf("@");
  if (at >= 0) {
    user = authority.slice(0, at);
    hostPort = authority.slice(at + 1);
    if (!USER_RE.test(user)) throw bad(text, "bad userinfo");
  }
  let host: string;
  let portText: string | undefined;
  if (hostPort.startsWith("[")) {
    const close = hostPort.indexOf("]");
    if (close < 0) throw bad(text, "unterminated IPv6 literal");
    host = hostPort.slice(0, close + 1);
    const after = hostPort.slice(close + 1);
    if (after.length > 0) {
      if (!after.startsWith(":")) throw bad(text, "junk after IPv6 literal");
      portText = after.slice(1);
    }
    if (!IPV6_RE.test(host)) throw bad(text, "bad IPv6 literal");
  } else {
    const colon = hostPort.indexOf(":");
    host = colon >= 0 ? hostPort.slice(0, colon) : hostPort;
    if (colon >= 0) portText = hostPort.slice(colon + 1);
    if (!REG_NAME_RE.test(host)) throw bad(text, "bad host");
  }
  let port: number | undefined;
  if (portText !== undefined) {
    if (!/^[0-9]{1,5}$/.test(portText)) throw bad(text, "bad port");
    port = Number(portText);
    if (port > 65535) throw bad(text, "port out of range");
  }

  let sessionId: string | undefined;
  if (tail.startsWith("/")) {
    const semi = tail.indexOf(";");
    sessionId = tail.slice(1, semi < 0 ? tail.length : semi);
    if (!SESSION_ID_RE.test(sessionId)) throw bad(text, "bad session-id");
    tail = semi < 0 ? "" : tail.slice(semi);
  }
  if (!tail.startsWith(";")) throw bad(text, "missing ;transport");
  const parts = tail.slice(1).split(";");
  const transport = parts[0] ?? "";
  if (!TRANSPORT_RE.test(transport)) throw bad(text, "bad transport");
  const params: MsrpUriParam[] = [];
  for (const p of parts.slice(1)) {
    const eq = p.indexOf("=");
    const name = eq < 0 ? p : p.slice(0, eq);
    if (!TOKEN_RE.test(name)) throw bad(text, "bad URI parameter");
    if (eq < 0) params.push({ name });
    else {
      const value = p.slice(eq + 1);
      if (!TOKEN_RE.test(value)) throw bad(text, "bad URI parameter value");
      params.push({ name, value });
    }
  }
  const uri: MsrpUri = { scheme, host, transport, params };
  if (user !== undefined) uri.user = user;
  if (port !== undefined) uri.port = port;
  if (sessionId !== undefined) uri.sessionId = sessionId;
  return uri;
}

/** Like parseMsrpUri, but returns undefined instead of throwing. */
export function tryParseMsrpUri(text: string): MsrpUri | undefined {
  try {
    return parseMsrpUri(text);
  } catch {
    return undefined;
  }
}

export function formatMsrpUri(uri: MsrpUri): string {
  let s = `${uri.scheme}://`;
  if (uri.user !== undefined) s += `${uri.user}@`;
  s += uri.host;
  if (uri.port !== undefined) s += `:${uri.port}`;
  if (uri.sessionId !== undefined) s += `/${uri.sessionId}`;
  s += `;${uri.transport}`;
  for (const p of uri.params) s += p.value === undefined ? `;${p.name}` : `;${p.name}=${p.value}`;
  return s;
}

/**
 * RFC 4975 6.1 comparison: scheme and host case-insensitive, ports equal (an
 * explicit port never equals an absent one), session-id case-sensitive,
 * transport case-insensitive. userinfo and URI parameters do not take part.
 */
export function msrpUriEquals(a: MsrpUri, b: MsrpUri): boolean {
  return (
    a.scheme === b.scheme &&
    a.host.toLowerCase() === b.host.toLowerCase() &&
    a.port === b.port &&
    a.sessionId === b.sessionId &&
    a.transport.toLowerCase() === b.transport.toLowerCase()
  );
}

/** A To-Path / From-Path / a=path value: one or more URIs separated by spaces. Throws CPM_ERR_MSRP_URI. */
export function parseMsrpPath(text: string): MsrpUri[] {
  const parts = text.split(/[ \t]+/).filter((p) => p.length > 0);
  if (parts.length === 0) throw bad(text, "empty path");
  return parts.map(parseMsrpUri);
}

/**
 * Paths of received frames, by text: every frame of a session repeats the
 * same To-Path and From-Path, so they are parsed once. The result is frozen
 * (shared by every frame that carries the text); short texts only, a bounded
 * number of them.
 */
const framePaths = new Map<string, readonly MsrpUri[]>();
const FRAME_PATHS = 512;
const FRAME_PATH_MAX_TEXT = 512;

export function parseFramePath(text: string): readonly MsrpUri[] {
  const hit = framePaths.get(text);
  if (hit) return hit;
  const path = parseMsrpPath(text);
  if (text.length > FRAME_PATH_MAX_TEXT) return path;
  if (framePaths.size >= FRAME_PATHS) framePaths.clear();
  for (const uri of path) Object.freeze(Object.freeze(uri).params);
  const frozen = Object.freeze(path);
  framePaths.set(text, frozen);
  return frozen;
}

export function formatMsrpPath(path: readonly MsrpUri[]): string {
  return path.map(formatMsrpUri).join(" ");
}
