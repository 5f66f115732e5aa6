// DD-10 (in order, once): the item tracker against a plain list model, for
// any order of reads and confirmations.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { emptyTracker, type ItemTracker, inFlight, inFlightCount, settle, takeBatch } from "../../../src/procedures/delivery-items.js";
import { item } from "../../fixtures/delivery.js";

test("property: in flight is what was taken and not confirmed, in send order; nothing is taken twice", () => {
  const op = fc.oneof(
    fc.record({ read: fc.array(fc.integer({ min: 1, max: 60 }), { maxLength: 12 }) }),
    fc.record({ confirm: fc.integer({ min: 0, max: 40 }) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
      let t: ItemTracker = emptyTracker;
      let model: number[] = [];
      const taken = new Set<number>();
      for (const o of ops) {
        if ("read" in o) {
          const b = takeBatch(
            t,
            o.read.map((u) => item(u)),
            true,
          );
          t = b.tracker;
          for (const i of b.deliver) {
            assert.ok(!taken.has(i.handle.uid), `uid ${i.handle.uid} taken twice`);
            taken.add(i.handle.uid);
            model.push(i.handle.uid);
          }
        } else {
          // the oldest mostly, sometimes one further on, sometimes one not in flight
          const uid =
            model.length > 0 && o.confirm % 4 !== 3
              ? (model[o.confirm % 2 === 0 ? 0 : o.confirm % model.length] as number)
              : o.confirm + 100;
          const r = settle(t, item(uid).handle);
          assert.equal(r.known, model.includes(uid));
          model = model.filter((u) => u !== uid);
          t = r.tracker;
        }
        assert.deepEqual(
          inFlight(t).map((i) => i.handle.uid),
          model,
        );
        assert.equal(inFlightCount(t), model.length);
      }
    }),
    { numRuns: 1000 },
  );
});
