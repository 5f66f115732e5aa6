// Anchored sessions live for hours, so what they keep must not pin the text it
// was parsed from: a peer's a=path parsed out of an SDP body is made of V8
// sliced strings that keep the whole SDP alive. compactPath() copies each URI
// onto flat strings and shares the few values every URI repeats (scheme,
// transport, the peers' hosts) - for RSS per idle anchored session.
import type { MsrpUri } from "../msrp/uri.js";

/** Bounded: peer hosts are a handful of CF and SBC addresses, never one per session. */
const MAX_SHARED = 4096;
const shared = new Map<string, string>();
/** URIs without parameters (nearly all) share one empty, frozen list. */
const NO_PARAMS: MsrpUri["params"] = Object.freeze([]) as unknown as MsrpUri["params"];

/** A flat copy of `s` (no reference to the string it was sliced from). */
function flat(s: string): string {
  return Buffer.from(s, "utf8").toString("utf8");
}

function share(s: string): string {
  const hit = shared.get(s);
  if (hit !== undefined) return hit;
  const copy = flat(s);
  if (shared.size < MAX_SHARED) shared.set(copy, copy);
  return copy;
}

export function compactUri(uri: MsrpUri): MsrpUri {
  const out: MsrpUri = {
    scheme: uri.scheme === "msrps" ? "msrps" : "msrp",
    host: share(uri.host),
    transport: share(uri.transport),
    params:
      uri.params.length === 0
        ? NO_PARAMS
        : uri.params.map((p) => (p.value === undefined ? { name: share(p.name) } : { name: share(p.name), value: flat(p.value) })),
  };
  if (uri.user !== undefined) out.user = flat(uri.user);
  if (uri.port !== undefined) out.port = uri.port;
  if (uri.sessionId !== undefined) out.sessionId = flat(uri.sessionId);
  return out;
}

export function compactPath(path: readonly MsrpUri[]): MsrpUri[] {
  return path.map(compactUri);
}
