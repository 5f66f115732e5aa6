// A short seeded run of `npm run fuzz` over every network-input parser:
// random and mutated MSRP frames, SIP messages and header values, CPIM and
// XML bodies (XXE, billion laughs, deep nesting, prototype names among
// them). Whatever the input, a parser accepts it or refuses it with
// CpmError; any other exception, or an MSRP parser holding more than its
// limits allow, is an escape and fails the test with the input to replay.
import assert from "node:assert/strict";
import { test } from "node:test";
import { runTarget } from "../../../fuzz/engine.js";
import { TARGETS } from "../../../fuzz/targets.js";

const SEED = 20261203;

for (const target of TARGETS) {
  const count = target.name === "msrp-parser" ? 5000 : 1500;
  test(`fuzz ${target.name}: ${count} seeded inputs, every one accepted or refused with CpmError, none escapes`, () => {
    const r = runTarget(target, { seed: SEED, count });
    assert.equal(r.inputs, count);
    assert.equal(r.escapes, 0, `escapes: ${JSON.stringify(r.samples, null, 1)}`);
    // the inputs reach both sides of the parser: some accepted, some refused
    assert.ok(Object.keys(r.outcomes).length >= 2, `one outcome only: ${JSON.stringify(r.outcomes)}`);
  });
}
