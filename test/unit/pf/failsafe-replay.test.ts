// The fail-safe journal (docs/adr/0003): Kamailio's records replayed in
// order, each once; what can never be replayed is quarantined, never lost,
// never blocking the records after it; a store that is down keeps the
// record and the ones after it for the next pass.
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { CpmError } from "../../../src/errors/catalogue.js";
import { HandleByeRequestSchema } from "../../../src/gen/cpm/pf/v1/pf_pb.js";
import { silentLogger } from "../../../src/log/logger.js";
import { FailsafeReplay, type ReplayTarget } from "../../../src/pf/failsafe-replay.js";
import type { ByeResult, Envelope } from "../../../src/pf/participating-function.js";
import { bye } from "../../fixtures/sip.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "cpm-pf-replay-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** One record as the bridge writes it: <unix ms>-<pid>-<seq>.bye holding a HandleByeRequest. */
async function journal(d: string, ms: number, seq: number, callId: string): Promise<string> {
  const name = `${String(ms).padStart(13, "0")}-4242-${seq}.bye`;
  const bytes = toBinary(
    HandleByeRequestSchema,
    create(HandleByeRequestSchema, { bye: { raw: bye(["SIP;cause=480"], { callId }), source: "127.0.0.1:5070" } }),
  );
  await writeFile(join(d, name), bytes);
  return name;
}

/** A PF that records what it was asked and fails on the Call-IDs it is told to. */
function target(fail: Record<string, CpmError> = {}) {
  const seen: { callId: string; at: number; replayed: boolean | undefined }[] = [];
  const outcomes: string[] = [];
  const pf: ReplayTarget = {
    async handleBye(env: Envelope, now?: Date, opts?: { replayed?: boolean }): Promise<ByeResult> {
      const callId = /^Call-ID:\s*(\S+)/im.exec(Buffer.from(env.raw).toString("utf8"))?.[1] ?? "";
      seen.push({ callId, at: now?.getTime() ?? 0, replayed: opts?.replayed });
      const err = fail[callId];
      if (err) throw err;
      return { sessionKey: callId, gso: { state: "not-required" } } as unknown as ByeResult;
    },
    async byeOutcome(sessionKey: string): Promise<boolean> {
      outcomes.push(sessionKey);
      return true;
    },
  };
  return { pf, seen, outcomes };
}

test("BYE-B3 fail-safe journal: records replayed oldest first, at their received time, then deleted; the media released", async () => {
  const d = await mkdtemp(join(dir, "order-"));
  await journal(d, 1_800_000_000_200, 1, "second@cf");
  await journal(d, 1_800_000_000_100, 7, "first@cf");
  await writeFile(join(d, "1800000000300-4242-9.tmp"), "half written");
  const { pf, seen, outcomes } = target();
  const replay = new FailsafeReplay(d, pf, silentLogger(), 60_000);
  await replay.start();
  await replay.close();
  assert.deepEqual(
    seen.map((s) => [s.callId, s.at, s.replayed]),
    [
      ["first@cf", 1_800_000_000_100, true],
      ["second@cf", 1_800_000_000_200, true],
    ],
  );
  assert.deepEqual(outcomes, ["first@cf", "second@cf"]);
  assert.deepEqual((await readdir(d)).sort(), ["1800000000300-4242-9.tmp", "bad"], "replayed records gone, a .tmp never read");
  assert.equal(replay.counts.replayed, 2);
});

test("fail-safe journal: a corrupt record, a BYE the PF refuses and a GSO the store refuses are quarantined; the records after them go on", async () => {
  const d = await mkdtemp(join(dir, "bad-"));
  await writeFile(join(d, "1800000000100-1-1.bye"), Buffer.from([0x0a, 0xff, 0xff, 0xff]));
  await journal(d, 1_800_000_000_200, 2, "refused@cf");
  await journal(d, 1_800_000_000_300, 3, "store-no@cf");
  await journal(d, 1_800_000_000_400, 4, "fine@cf");
  const { pf, outcomes } = target({
    "refused@cf": new CpmError("CPM_ERR_BAD_HEADER", "BYE From header is malformed"),
    "store-no@cf": new CpmError("CPM_ERR_STORE_REJECTED", "Mailbox name too long"),
  });
  const replay = new FailsafeReplay(d, pf, silentLogger(), 60_000);
  await replay.start();
  await replay.close();
  assert.deepEqual(outcomes, ["fine@cf"]);
  assert.equal(replay.counts.quarantined, 3);
  assert.deepEqual((await readdir(join(d, "bad"))).length, 3, "kept for an operator");
  assert.deepEqual(
    (await readdir(d)).filter((n) => n.endsWith(".bye")),
    [],
  );
});

test("fail-safe journal: with the store down the record and the ones after it wait for the next pass, in order", async () => {
  const d = await mkdtemp(join(dir, "down-"));
  await journal(d, 1_800_000_000_100, 1, "a@cf");
  await journal(d, 1_800_000_000_200, 2, "b@cf");
  const down = { "a@cf": new CpmError("CPM_ERR_STORE_UNAVAILABLE", "connect ECONNREFUSED") };
  const t = target(down);
  const replay = new FailsafeReplay(d, t.pf, silentLogger(), 60_000);
  await replay.start();
  await replay.drain(); // joins the first pass
  assert.deepEqual(
    t.seen.map((s) => s.callId),
    ["a@cf"],
    "b waits behind a",
  );
  assert.equal(replay.counts.retried, 1);
  assert.equal((await readdir(d)).filter((n) => n.endsWith(".bye")).length, 2);
  // the store is back
  delete (down as Record<string, CpmError>)["a@cf"];
  await replay.drain();
  await replay.close();
  assert.deepEqual(
    t.seen.map((s) => s.callId),
    ["a@cf", "a@cf", "b@cf"],
  );
  assert.deepEqual(t.outcomes, ["a@cf", "b@cf"]);
});

test("fail-safe journal: start() does not wait for the first pass (readiness is not held back by a long journal); close() waits for it", async () => {
  const d = await mkdtemp(join(dir, "behind-"));
  await journal(d, 1_800_000_000_100, 1, "slow@cf");
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => {
    release = r;
  });
  const t = target();
  const pf: ReplayTarget = {
    handleBye: async (env, now, opts) => {
      await gate;
      return t.pf.handleBye(env, now, opts);
    },
    byeOutcome: (key, status) => t.pf.byeOutcome(key, status),
  };
  const replay = new FailsafeReplay(d, pf, silentLogger(), 60_000);
  await replay.start();
  assert.deepEqual(t.outcomes, [], "started while the first record is still being decided");
  release();
  await replay.close();
  assert.deepEqual(t.outcomes, ["slow@cf"]);
});
