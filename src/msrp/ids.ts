// Identifiers from the CSPRNG (node:crypto). RFC 4975 14.1: session-ids are
// the only protection against a third party injecting into a session, so
// they carry at least 80 bits of randomness; transaction-ids and Message-IDs
// are `ident`s (RFC 4975 9: 4-32 characters) drawn the same way.
import { randomBytes } from "node:crypto";

const ALNUM_CODES = Buffer.from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "latin1");
/** Bytes >= 248 are redrawn so that each of the 62 characters is equally likely. */
const UNBIASED_LIMIT = 248;

/** CSPRNG bytes drawn a block at a time (as node's randomUUID caches its entropy): two ids per SEND otherwise cost a call each. */
const POOL_BYTES = 4096;
let pool = Buffer.alloc(0);
let poolAt = 0;

function randomByte(): number {
  if (poolAt >= pool.length) {
    pool = randomBytes(POOL_BYTES);
    poolAt = 0;
  }
  return pool[poolAt++] as number;
}

/** `length` characters uniformly from [A-Za-z0-9]: log2(62) = 5.95 bits each. */
export function randomAlnum(length: number): string {
  // Written into bytes and decoded once: a flat string. Appending character by
  // character would leave a chain of V8 cons strings, ~250 bytes per id, held
  // as long as the id (RSS per idle anchored session).
  const out = Buffer.allocUnsafe(length);
  for (let n = 0; n < length; ) {
    const b = randomByte();
    if (b < UNBIASED_LIMIT) out[n++] = ALNUM_CODES[b % 62] as number;
  }
  return out.toString("latin1");
}

/** Bits of randomness in an id of `length` alphanumerics. */
export function alnumEntropyBits(length: number): number {
  return length * Math.log2(62);
}

/** Session-id for our a=path URI: 20 alphanumerics, about 119 bits (RFC 4975 14.1 asks for >= 80). */
export function newSessionId(): string {
  return randomAlnum(20);
}

/** Message-ID: 20 alphanumerics, a valid `ident`, unique for the session's life. */
export function newMessageId(): string {
  return randomAlnum(20);
}

/**
 * Transaction-id: 16 alphanumerics (about 95 bits). When the body is given, the
 * id is redrawn until `-------<id>` does not occur in it (RFC 4975 5.1: the
 * body must not contain its own end-line).
 */
export function newTransactionId(body?: Uint8Array): string {
  for (;;) {
    const tid = randomAlnum(16);
    if (body === undefined || Buffer.from(body.buffer, body.byteOffset, body.length).indexOf(`-------${tid}`, 0, "latin1") < 0) return tid;
  }
}
