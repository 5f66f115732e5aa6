// CPM feature tags (OMA CPM ICSIs, reference/cpm-facts.md 3.1) and their
// coding in SIP headers (TS 24.229 7.2A.8.2 "Coding of the ICSI"): inside the
// `+g.3gpp.icsi-ref` media feature tag (RFC 3840 tag-value) the URN is
// percent-encoded (RFC 3986) and quoted; P-Asserted-Service carries it plain.

/** CPM session feature tag (1-1 and group chat sessions). */
export const CPM_SESSION_ICSI = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session";

/** Percent-encodes what RFC 3840's quoted tag-value does not allow as is (`:` → `%3A`, …). */
export function encodeIcsi(icsi: string): string {
  return icsi.replace(/[^A-Za-z0-9\-._~!$&'()*+,;=@/]/g, (c) =>
    [...Buffer.from(c, "utf8")].map((b) => `%${b.toString(16).toUpperCase().padStart(2, "0")}`).join(""),
  );
}

/** `+g.3gpp.icsi-ref="urn%3Aurn-7%3A…"`: the media feature tag for Contact / Accept-Contact. */
export function icsiRefParam(icsi: string): string {
  return `+g.3gpp.icsi-ref="${encodeIcsi(icsi)}"`;
}

/** Accept-Contact value (RFC 3841 10) asking for a UA that supports `icsi`. */
export function acceptContactFor(icsi: string): string {
  return `*;${icsiRefParam(icsi)}`;
}
