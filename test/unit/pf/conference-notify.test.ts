// The PF's side of its own conference subscription: every lifecycle
// transition reaches the listener (client-absent starts the subscription),
// and the NOTIFYs' documents go into the record with the shared rules, only
// while the group session is going on.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { buildConfig } from "../../../src/config/config.js";
import { silentLogger } from "../../../src/log/logger.js";
import { type LifecycleListener, ParticipatingFunction } from "../../../src/pf/participating-function.js";
import { recordIdOf } from "../../../src/session/group-session.js";
import { SessionRegistry } from "../../../src/session/registry.js";
import { parseConferenceInfo } from "../../../src/xml/conference-info.js";
import { envelope, storesEverything, useTempDir } from "../../fixtures/pf.js";
import { bye, inviteFromFocus } from "../../fixtures/sip.js";
import { StubMediaPlane } from "../../fixtures/stub-media-plane.js";

const tempDir = useTempDir("cpm-pf-conf-");

const env = envelope;
const store = storesEverything;
const info = (version: number, users: string) =>
  parseConferenceInfo(`<conference-info entity="sip:focus" state="partial" version="${version}"><users>${users}</users></conference-info>`);

test("DD-11: client-absent reaches the lifecycle listener; the PF's NOTIFY adds a participant to the record (persisted, whatever the record's older version); the served user's own removal is not applied; an ended group takes nothing", async () => {
  const cfg = buildConfig({ pf: { mode: "b2bua", byeOutcomeTimeoutMs: 50 } });
  const sessions = new SessionRegistry(join(tempDir(), "s"), cfg.session, silentLogger());
  await sessions.load();
  const seen: string[] = [];
  const listener: LifecycleListener = (_r, ev, tr) => seen.push(`${ev.type}: ${tr.from} -> ${tr.to}`);
  const pf = new ParticipatingFunction(cfg, sessions, store, new StubMediaPlane(), silentLogger(), { lifecycleListener: listener });
  await pf.observe(env(inviteFromFocus({ callId: "c-1" })));
  const record = sessions.get("c-1");
  assert.ok(record);
  await pf.deferredStored({ sessionKey: "c-1", servedUser: record.servedUser, conversationId: "", contributionId: "", focus: "" });
  assert.deepEqual(seen.at(-1), "deferred: active -> client-absent");
  const id = recordIdOf(record);
  const r = await pf.applyConferenceNotify(id, info(1, '<user entity="tel:+16135551213"><display-text>Dave</display-text></user>'));
  assert.equal(r.applied, true);
  assert.ok(sessions.get("c-1")?.participants.some((p) => p.commAddr === "tel:+16135551213" && p.name === "Dave"));
  const self = await pf.applyConferenceNotify(id, info(2, `<user entity="${record.servedUser}" state="deleted"/>`));
  assert.match(self.notes.join(), /served user; kept/);
  await pf.handleBye(env(bye(["Reason: SIP;cause=480"], { callId: "c-1" })));
  assert.deepEqual(seen.at(-1), "networkBye: client-absent -> inactive");
  const late = await pf.applyConferenceNotify(id, info(3, '<user entity="tel:+16135551299"/>'));
  assert.equal(late.applied, false);
  assert.match(late.notes[0] ?? "", /group session is inactive/);
  assert.equal((await pf.applyConferenceNotify("nobody", info(1, ""))).applied, false);
  pf.close();
});

test("a listener that throws does not break the lifecycle step", async () => {
  const cfg = buildConfig({ pf: { mode: "b2bua" } });
  const sessions = new SessionRegistry(join(tempDir(), "t"), cfg.session, silentLogger());
  await sessions.load();
  const pf = new ParticipatingFunction(cfg, sessions, store, new StubMediaPlane(), silentLogger(), {
    lifecycleListener: () => {
      throw new Error("boom");
    },
  });
  await pf.observe(env(inviteFromFocus({ callId: "c-2" })));
  const record = sessions.get("c-2");
  assert.ok(record);
  await pf.deferredStored({ sessionKey: "c-2", servedUser: record.servedUser, conversationId: "", contributionId: "", focus: "" });
  assert.equal(sessions.get("c-2")?.lifecycle, "client-absent");
  pf.close();
});
