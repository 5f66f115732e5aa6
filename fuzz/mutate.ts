// Byte-level mutations of a valid input (the AFL family: flips, inserts,
// deletes, duplicated ranges, dictionary tokens, truncation), applied a few
// at a time, plus fully random inputs now and then.
import type { Rng } from "./rng.js";

type Mutation = (rng: Rng, b: Buffer, dict: readonly Buffer[]) => Buffer;

const INTERESTING = [0x00, 0x0a, 0x0d, 0x20, 0x22, 0x25, 0x26, 0x2d, 0x3b, 0x3c, 0x3e, 0x5c, 0x7f, 0x80, 0xff];

const mutations: Mutation[] = [
  // flip one bit
  (rng, b) => {
    if (b.length === 0) return b;
    const c = Buffer.from(b);
    const i = rng.int(c.length);
    c[i] = (c[i] as number) ^ (1 << rng.int(8));
    return c;
  },
  // set one byte to an interesting value
  (rng, b) => {
    if (b.length === 0) return Buffer.from([rng.pick(INTERESTING)]);
    const c = Buffer.from(b);
    c[rng.int(c.length)] = rng.pick(INTERESTING);
    return c;
  },
  // insert random bytes
  (rng, b) => {
    const at = rng.int(b.length + 1);
    return Buffer.concat([b.subarray(0, at), rng.bytes(1 + rng.int(8)), b.subarray(at)]);
  },
  // delete a range
  (rng, b) => {
    if (b.length === 0) return b;
    const at = rng.int(b.length);
    return Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + rng.int(Math.min(32, b.length - at)))]);
  },
  // duplicate a range (repeated headers, nesting)
  (rng, b) => {
    if (b.length === 0) return b;
    const at = rng.int(b.length);
    const len = 1 + rng.int(Math.min(64, b.length - at));
    const piece = b.subarray(at, at + len);
    const times = 1 + rng.int(rng.int(4) === 0 ? 64 : 3);
    return Buffer.concat([b.subarray(0, at + len), ...Array.from({ length: times }, () => piece), b.subarray(at + len)]);
  },
  // insert or overwrite with a dictionary token
  (rng, b, dict) => {
    if (dict.length === 0) return b;
    const tok = rng.pick(dict);
    const at = rng.int(b.length + 1);
    const skip = rng.int(2) === 0 ? 0 : Math.min(tok.length, b.length - at);
    return Buffer.concat([b.subarray(0, at), tok, b.subarray(at + skip)]);
  },
  // truncate
  (rng, b) => b.subarray(0, rng.int(b.length + 1)),
];

/** One fuzz input from `seeds`: mostly 1–4 mutations of a seed, sometimes pure noise. */
export function nextInput(rng: Rng, seeds: readonly Buffer[], dict: readonly Buffer[]): Buffer {
  if (rng.int(50) === 0) return rng.bytes(rng.int(512));
  let b = rng.pick(seeds);
  const n = 1 + rng.int(4);
  for (let i = 0; i < n; i++) b = rng.pick(mutations)(rng, b, dict);
  return b;
}
