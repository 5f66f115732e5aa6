// 8.3.2.3 2.f (BYE-B10): the media of a dialog the BYE ended is released when
// Kamailio reports the clients' answer (ReportByeOutcome) — and also when that
// report never comes (Kamailio restarted, its task failed): no BYE end leaves
// an anchored session behind.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { buildConfig } from "../../../src/config/config.js";
import { silentLogger } from "../../../src/log/logger.js";
import { ParticipatingFunction } from "../../../src/pf/participating-function.js";
import { SessionRegistry } from "../../../src/session/registry.js";
import { envelope, storesEverything, useTempDir } from "../../fixtures/pf.js";
import { bye, inviteFromFocus, SDP_OFFER } from "../../fixtures/sip.js";
import { StubMediaPlane } from "../../fixtures/stub-media-plane.js";
import { waitFor } from "../../harness/wait.js";

const tempDir = useTempDir("cpm-pf-outcome-");

const env = envelope;
const store = storesEverything;

async function pf(name: string, mode: "b2bua" | "proxy" = "b2bua") {
  const cfg = buildConfig({ pf: { mode, byeOutcomeTimeoutMs: 50 } });
  const sessions = new SessionRegistry(join(tempDir(), name), cfg.session, silentLogger());
  await sessions.load();
  const media = new StubMediaPlane();
  const p = new ParticipatingFunction(cfg, sessions, store, media, silentLogger());
  const releases = () => media.calls.filter((c) => c.op === "release").length;
  return { pf: p, media, releases };
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

test("BYE-P1: a proxy-mode BYE of a dialog without media asks for no outcome report and arms no watchdog", async () => {
  const { pf: p, releases } = await pf("proxy", "proxy");
  await p.observe(env(inviteFromFocus({ callId: "px-1" })));
  const r = await p.handleBye(env(bye(["Reason: SIP;cause=480"], { callId: "px-1" })));
  assert.equal(r.mode, "proxy");
  assert.equal(r.reportOutcome, false, "Kamailio sends no ReportByeOutcome");
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(releases(), 0);
  assert.equal(p.lostOutcomes, 0, "no outcome was awaited, none is lost");
  p.close();
});

test("BYE-B10: a client-side BYE of an anchored dialog asks for the outcome report (its media goes on the answer)", async () => {
  const { pf: p, media } = await pf("client-bye");
  await p.observe(env(inviteFromFocus({ callId: "cl-1" })));
  const session = {
    sessionKey: "cl-1",
    servedUser: "tel:+16135551200",
    conversationId: "conv-7f3a",
    contributionId: "contrib-1",
    focus: "sip:focus-7f3a@cf.example.net",
  };
  await media.anchorOffer({ session, offerSdp: SDP_OFFER, allowOfflineStorage: false });
  const r = await p.handleBye(env(bye([], { callId: "cl-1", fromTag: "client-tag" })));
  assert.equal(r.side, "client");
  assert.equal(r.reportOutcome, true);
  const plain = await p.handleBye(env(bye(["Reason: SIP;cause=480"], { callId: "unknown-1" })));
  assert.equal(plain.reportOutcome, false, "no record, no media: nothing waits for the report");
  p.close();
});
