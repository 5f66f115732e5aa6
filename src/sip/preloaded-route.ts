// A Route the PF pre-loads for the S-CSCF (TS 24.229 5.7.3: an application
// server originating a request sends it to the S-CSCF): the URI with the
// loose-routing parameter (RFC 3261 19.1.1 lr) and, where the PF acts for
// the served user (originating processing), "orig" (TS 24.229 5.4.3.2, 5.7.3).
// Parameters the operator's URI already has are kept as they are.

function hasParam(uri: string, name: string): boolean {
  return new RegExp(`;${name}(?=[;=?>]|$)`, "i").test(uri);
}

/** `<uri;lr[;orig]>` for a Route header. */
export function preloadedRoute(uri: string, opts: { orig?: boolean } = {}): string {
  let out = uri;
  if (!hasParam(out, "lr")) out += ";lr";
  if (opts.orig && !hasParam(out, "orig")) out += ";orig";
  return `<${out}>`;
}
