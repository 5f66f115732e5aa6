// 8.3.2.3 2.f (BYE-B10): the media of a dialog the BYE ended is released when
// Kamailio reports the clients' answer (ReportByeOutcome) — and also when that
// report never comes (Kamailio restarted, its task failed): no BYE end leaves
// an anchored session behind.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { buildConfig } from "../../../src/config/config.js";
import { silentLogger } from "../../../src/log/logger.js";
import { type ObjectStore, ParticipatingFunction } from "../../../src/pf/participating-function.js";
import { SessionRegistry } from "../../../src/session/registry.js";
import { bye, inviteFromFocus } from "../../fixtures/sip.js";
import { StubMediaPlane } from "../../fixtures/stub-media-plane.js";
import { waitFor } from "../../harness/wait.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "cpm-pf-outcome-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const env = (raw: Buffer) => ({ raw, source: "127.0.0.1:5070" });
const store: ObjectStore = { append: async (o) => ({ state: "stored", folder: o.folder, messageId: o.messageId }) };

async function pf(name: string) {
  const cfg = buildConfig({ pf: { mode: "b2bua", byeOutcomeTimeoutMs: 50 } });
  const sessions = new SessionRegistry(join(dir, name), cfg.session, silentLogger());
  await sessions.load();
  const media = new StubMediaPlane();
  const p = new ParticipatingFunction(cfg, sessions, store, media, silentLogger());
  const releases = () => media.calls.filter((c) => c.op === "release").length;
  return { pf: p, releases };
}

test("BYE-B10: the outcome report never comes -> the dialog's media is released after pf.byeOutcomeTimeoutMs, once, counted", async () => {
  const { pf: p, releases } = await pf("lost");
  await p.observe(env(inviteFromFocus({ callId: "lost-1" })));
  await p.handleBye(env(bye(["SIP;cause=480"], { callId: "lost-1" })));
  assert.equal(releases(), 0, "nothing released before the clients could answer");
  await waitFor(() => releases() === 1, 2000, 5, "media released by the watchdog");
  assert.equal(p.lostOutcomes, 1);
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(releases(), 1, "released once");
  p.close();
});

test("BYE-B10: the outcome reported in time -> released by the report; the watchdog stays quiet", async () => {
  const { pf: p, releases } = await pf("reported");
  await p.observe(env(inviteFromFocus({ callId: "rep-1" })));
  await p.handleBye(env(bye(["SIP;cause=410"], { callId: "rep-1" })));
  await p.byeOutcome("rep-1", 200);
  assert.equal(releases(), 1);
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(releases(), 1);
  assert.equal(p.lostOutcomes, 0);
  p.close();
});
