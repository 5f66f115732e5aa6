// A shared record store (session.store "redis") refuses a record write made
// from a stale read (compare-and-set, CPM_ERR_RECORD_STALE): another sidecar
// wrote the record meanwhile. HandleBye then decides again from the fresh
// record, a bounded number of times, instead of failing the decision (which
// Kamailio would relay through the fail-safe). The store here is a real
// SessionRegistry whose put() refuses the first writes as Redis would.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { buildConfig } from "../../../src/config/config.js";
import { CpmError } from "../../../src/errors/catalogue.js";
import { ParticipatingFunction } from "../../../src/pf/participating-function.js";
import type { GroupSession } from "../../../src/session/group-session.js";
import { SessionRegistry } from "../../../src/session/registry.js";
import { envelope, storesEverything, useTempDir } from "../../fixtures/pf.js";
import { bye, inviteFromFocus } from "../../fixtures/sip.js";
import { capturedLog } from "../../fixtures/sip-ua.js";
import { StubMediaPlane } from "../../fixtures/stub-media-plane.js";

const tempDir = useTempDir("cpm-pf-stale-");

const env = envelope;
const store = storesEverything;

/** A ParticipatingFunction whose record store refuses the next `refusals` writes as stale once `arm()` was called. */
async function pfWithStaleWrites(name: string) {
  const cfg = buildConfig({ pf: { mode: "b2bua" } });
  const registry = new SessionRegistry(join(tempDir(), name), cfg.session, capturedLog().log);
  await registry.load();
  let refusals = 0;
  const sessions = new Proxy(registry, {
    get(target, key) {
      if (key === "put")
        return (s: GroupSession) => {
          if (refusals > 0) {
            refusals--;
            return Promise.reject(new CpmError("CPM_ERR_RECORD_STALE", "read at revision 3, now 4"));
          }
          return target.put(s);
        };
      const v = Reflect.get(target, key, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const { log, lines } = capturedLog();
  const pf = new ParticipatingFunction(cfg, sessions, store, new StubMediaPlane(), log);
  const arm = (n: number) => {
    refusals = n;
  };
  return { pf, registry, lines, arm };
}

test("BYE-B4 BYE-B5 scale-out: the record write of a BYE decision is refused as stale (another sidecar wrote it) -> decided again from the fresh record, answered, the record moved once", async () => {
  // the same BYE without a refusal: what the record becomes
  const control = await pfWithStaleWrites("control");
  await control.pf.observe(env(inviteFromFocus({ callId: "stale-1" })));
  const expected = await control.pf.handleBye(env(bye(["SIP;cause=480"], { callId: "stale-1" })));
  const lifecycle = control.registry.get("stale-1")?.lifecycle;
  control.pf.close();

  const { pf, registry, lines, arm } = await pfWithStaleWrites("once");
  await pf.observe(env(inviteFromFocus({ callId: "stale-1" })));
  const before = registry.get("stale-1")?.lifecycle;
  arm(1);
  const r = await pf.handleBye(env(bye(["SIP;cause=480"], { callId: "stale-1" })));
  assert.deepEqual([r.mode, r.side, r.clientReason], [expected.mode, expected.side, expected.clientReason], "the same decision");
  assert.notEqual(lifecycle, before, "the BYE moves the record");
  assert.equal(registry.get("stale-1")?.lifecycle, lifecycle, "the second decision's write went through");
  const again = lines.filter(
    (l) => l.message === "group session record changed by another writer while the BYE was decided: decided again",
  );
  assert.equal(again.length, 1);
  assert.equal(again[0]?.callId, "stale-1");
  pf.close();
});

test("BYE-B5 scale-out: a record write refused as stale on every attempt -> after a bounded number of decisions the error goes to the caller (the fail-safe then relays and journals the BYE)", async () => {
  const { pf, registry, arm } = await pfWithStaleWrites("always");
  await pf.observe(env(inviteFromFocus({ callId: "stale-2" })));
  const before = registry.get("stale-2")?.lifecycle;
  arm(100);
  await assert.rejects(
    pf.handleBye(env(bye(["SIP;cause=480"], { callId: "stale-2" }))),
    (err: unknown) => err instanceof CpmError && err.code === "CPM_ERR_RECORD_STALE",
  );
  assert.equal(registry.get("stale-2")?.lifecycle, before, "nothing written");
  pf.close();
});
