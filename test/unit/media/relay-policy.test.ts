import assert from "node:assert/strict";
import { test } from "node:test";
import { legBroken, relayAction } from "../../../src/media/relay-policy.js";

test("media plane relay policy: up -> relay, pending -> wait, whatever the kind and direction", () => {
  for (const kind of ["message", "imdn", "gso", "isComposing"] as const) {
    for (const dir of ["from-network", "from-client"] as const) {
      assert.deepEqual(relayAction(dir, kind, "up"), { do: "relay" });
      assert.deepEqual(relayAction(dir, kind, "pending"), { do: "wait" });
    }
  }
});

test("media plane relay policy: client leg gone -> messages, IMDNs and GSOs from the CF are deferred; isComposing is answered and dropped", () => {
  assert.deepEqual(relayAction("from-network", "message", "gone"), { do: "defer", kind: "message" });
  assert.deepEqual(relayAction("from-network", "imdn", "gone"), { do: "defer", kind: "imdn" });
  assert.deepEqual(relayAction("from-network", "gso", "gone"), { do: "defer", kind: "gso" });
  assert.deepEqual(relayAction("from-network", "isComposing", "gone"), { do: "drop", code: 200 });
});

test("media plane relay policy: CF leg gone -> what the client sends gets 481", () => {
  for (const kind of ["message", "imdn", "gso", "isComposing"] as const) {
    assert.deepEqual(relayAction("from-client", kind, "gone"), { do: "refuse", code: 481 });
  }
});

test("media plane relay policy: 481 and 408 break the leg, other errors refuse one message", () => {
  assert.equal(legBroken(481), true);
  assert.equal(legBroken(408), true);
  for (const code of [200, 400, 403, 413, 415, 501, 506]) assert.equal(legBroken(code), false, String(code));
});
