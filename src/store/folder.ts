// Message Store folder names for group sessions.
//
// Layout (cpm-facts 2.1; deployed RCS CMS, OMA CPM MS "Conversation History" ->
// "Session History" folders): <root>/<Conversation-ID>/<Contribution-ID>, with
// "/" as the hierarchy separator (RFC 9051 5.1.1 leaves it to the server; our
// Dovecot namespace uses "/").
//
// Component encoding, so that ANY string is one safe mailbox name level:
//   - bytes of [A-Za-z0-9] and "-_@+:=,!" stay as they are, so ordinary IDs
//     look exactly like deployed stores;
//   - every other byte of the string's UTF-8 form becomes "%XX" (uppercase hex).
//     Lone UTF-16 surrogates (not valid Unicode, but possible in a JS string)
//     are written as WTF-8, so every JS string round-trips;
//   - the empty string is "%FF". 0xFF never occurs in UTF-8/WTF-8, so the
//     marker cannot collide with an encoded value;
//   - an encoded component longer than MAX_COMPONENT_BYTES is cut at an escape
//     boundary and ends with "%FE" plus 16 hex digits of SHA-256 over the
//     original bytes (0xFE never occurs in UTF-8 either). Such names are
//     one-way: decodeFolderComponent() rejects them.
// So the output only has ASCII letters, digits, "-_@+:=,!" and "%"-escapes:
// no "/" (separator), "." (Dovecot maildir++ refuses it), "%"/"*" (LIST
// wildcards, RFC 9051 6.3.9), "&" (modified UTF-7, RFC 9051 5.1.3), "~"
// (home-dir prefix), quotes, backslash, spaces, control or non-ASCII chars.
//
// Why 120 bytes and not more: with Dovecot's default maildir layout (Maildir++)
// the WHOLE mailbox path becomes one directory name ".Default.<conv>.<contrib>",
// limited to 255 bytes (NAME_MAX). Two 200-byte components fail there (Dovecot
// answers a misleading "NO Not found"); two 120-byte ones under a root of up to
// 12 bytes fit.
import { createHash } from "node:crypto";
import { CpmError } from "../errors/catalogue.js";

/** Longest encoded component (bytes = chars, the encoding is ASCII). */
export const MAX_COMPONENT_BYTES = 120;

/** Encoded form of the empty string. */
export const EMPTY_COMPONENT = "%FF";

const SHORTENED_MARK = "%FE";
const HASH_HEX_CHARS = 16;
const SAFE_BYTE = new Uint8Array(128);
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_@+:=,!") SAFE_BYTE[c.charCodeAt(0)] = 1;
const HEX = "0123456789ABCDEF";

function isSafeByte(b: number): boolean {
  return b < 128 && SAFE_BYTE[b] === 1;
}

/** WTF-8: UTF-8 that also encodes lone surrogates (as 3-byte sequences). */
function toWtf8(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    let cp = s.charCodeAt(i);
    if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < s.length) {
      const lo = s.charCodeAt(i + 1);
      if (lo >= 0xdc00 && lo <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        i++;
      }
    }
    if (cp < 0x80) out.push(cp);
    else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
    else if (cp < 0x10000) out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
    else out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  }
  return Buffer.from(out);
}

function bad(name: string, why: string): never {
  throw new CpmError("CPM_ERR_BAD_REQUEST", `folder component ${JSON.stringify(name.slice(0, 64))}: ${why}`);
}

/** Strict WTF-8 decoder: rejects overlongs, > U+10FFFF, and surrogate pairs written as two 3-byte sequences. */
function fromWtf8(b: Uint8Array, name: string): string {
  let out = "";
  let prevHighSurrogate = false;
  for (let i = 0; i < b.length; ) {
    const b0 = b[i] as number;
    let cp: number;
    let len: number;
    if (b0 < 0x80) {
      cp = b0;
      len = 1;
    } else if (b0 >= 0xc2 && b0 <= 0xdf) {
      cp = b0 & 0x1f;
      len = 2;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
      cp = b0 & 0x0f;
      len = 3;
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      cp = b0 & 0x07;
      len = 4;
    } else {
      bad(name, "not UTF-8");
    }
    if (i + len > b.length) bad(name, "truncated UTF-8");
    for (let k = 1; k < len; k++) {
      const c = b[i + k] as number;
      if ((c & 0xc0) !== 0x80) bad(name, "not UTF-8");
      cp = (cp << 6) | (c & 0x3f);
    }
    if ((len === 3 && cp < 0x800) || (len === 4 && (cp < 0x10000 || cp > 0x10ffff))) bad(name, "overlong UTF-8");
    const isLow = cp >= 0xdc00 && cp <= 0xdfff;
    if (isLow && prevHighSurrogate) bad(name, "surrogate pair not in 4-byte form");
    prevHighSurrogate = cp >= 0xd800 && cp <= 0xdbff;
    out += String.fromCodePoint(cp);
    i += len;
  }
  return out;
}

/** Encodes one mailbox name level (see the header comment for the rule). */
export function encodeFolderComponent(value: string): string {
  if (value === "") return EMPTY_COMPONENT;
  const bytes = toWtf8(value);
  let out = "";
  for (const b of bytes) out += isSafeByte(b) ? String.fromCharCode(b) : `%${HEX[b >> 4]}${HEX[b & 15]}`;
  if (out.length <= MAX_COMPONENT_BYTES) return out;
  let cut = MAX_COMPONENT_BYTES - SHORTENED_MARK.length - HASH_HEX_CHARS;
  // do not split a %XX escape
  if (out[cut - 1] === "%") cut -= 1;
  else if (out[cut - 2] === "%") cut -= 2;
  const hash = createHash("sha256").update(bytes).digest("hex").slice(0, HASH_HEX_CHARS).toUpperCase();
  return `${out.slice(0, cut)}${SHORTENED_MARK}${hash}`;
}

/** True for a component that encodeFolderComponent() shortened with a hash (not reversible). */
export function isShortenedComponent(name: string): boolean {
  return /%FE[0-9A-F]{16}$/.test(name);
}

/**
 * Exact inverse of encodeFolderComponent() for every value whose encoding was
 * not shortened. Throws CPM_ERR_BAD_REQUEST for anything encodeFolderComponent()
 * cannot produce (stray or lowercase "%", an escaped safe byte, invalid UTF-8)
 * and for shortened names.
 */
export function decodeFolderComponent(name: string): string {
  if (name === EMPTY_COMPONENT) return "";
  if (name === "") bad(name, "empty (the empty value is encoded as %FF)");
  if (isShortenedComponent(name)) bad(name, "shortened with a hash; the original value is not recoverable");
  const bytes: number[] = [];
  for (let i = 0; i < name.length; ) {
    const c = name.charCodeAt(i);
    if (c === 0x25 /* % */) {
      const hex = name.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) bad(name, "malformed %-escape");
      const b = Number.parseInt(hex, 16);
      if (isSafeByte(b)) bad(name, "escaped byte that is never escaped");
      bytes.push(b);
      i += 3;
    } else if (isSafeByte(c)) {
      bytes.push(c);
      i += 1;
    } else {
      bad(name, "character outside the encoding alphabet");
    }
  }
  return fromWtf8(Uint8Array.from(bytes), name);
}

/**
 * The Session History folder of a group session:
 * `<rootFolder>/<enc(conversationId)>/<enc(contributionId)>`. The root is a
 * configured path taken as is (it may itself have "/" levels).
 */
export function groupSessionFolder(rootFolder: string, conversationId: string, contributionId: string): string {
  if (rootFolder === "" || rootFolder.startsWith("/") || rootFolder.endsWith("/") || rootFolder.includes("//")) {
    throw new CpmError("CPM_ERR_CONFIG", `store.rootFolder ${JSON.stringify(rootFolder)}: must be a non-empty "/"-separated path`);
  }
  return `${rootFolder}/${encodeFolderComponent(conversationId)}/${encodeFolderComponent(contributionId)}`;
}
