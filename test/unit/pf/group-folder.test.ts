// The group session's folder is CREATEd when the PF first sees the session
// (off the BYE path), so that the BYE's GSO (8.3.2.3 2.b) needs no CREATE.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { buildConfig, type Config } from "../../../src/config/config.js";
import { silentLogger } from "../../../src/log/logger.js";
import { NoMediaPlane } from "../../../src/media/media-plane.js";
import { type ObjectStore, ParticipatingFunction } from "../../../src/pf/participating-function.js";
import { SessionRegistry } from "../../../src/session/registry.js";
import { groupSessionFolder } from "../../../src/store/folder.js";
import { bye, inviteFromFocus } from "../../fixtures/sip.js";
import { waitFor } from "../../harness/wait.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "cpm-pf-folder-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
async function pfWith(mode: "b2bua" | "proxy", prepareFolder: ObjectStore["prepareFolder"]) {
  const cfg: Config = buildConfig({ pf: { mode } });
  const sessions = new SessionRegistry(join(dir, `s${n++}`), cfg.session, silentLogger());
  await sessions.load();
  const store: ObjectStore = { append: async (o) => ({ state: "stored", folder: o.folder, messageId: o.messageId }), prepareFolder };
  return { pf: new ParticipatingFunction(cfg, sessions, store, new NoMediaPlane(), silentLogger()), cfg };
}

const env = (raw: Buffer) => ({ raw, source: "127.0.0.1:5070" });

test("BYE-B4: as B2BUA the group folder is created when the session is first observed, once, in the served user's mailbox", async () => {
  const prepared: { owner: string; folder: string }[] = [];
  const { pf } = await pfWith("b2bua", async (o) => {
    prepared.push(o);
  });
  await pf.observe(env(inviteFromFocus({ callId: "f1", conversationId: "conv-f1" })));
  await waitFor(() => prepared.length === 1, 1000, 5, "prepareFolder called");
  assert.equal(prepared[0]?.folder, groupSessionFolder("Default", "conv-f1", "contrib-1"));
  assert.equal(prepared[0]?.owner, "tel:+16135551200");
  // the same session again (the INVITE retransmitted, a conference NOTIFY): no second CREATE
  await pf.observe(env(inviteFromFocus({ callId: "f1", conversationId: "conv-f1" })));
  await pf.handleBye(env(bye(["SIP;cause=480"], { callId: "f1" })));
  assert.equal(prepared.length, 1);
});

test("a folder that cannot be created ahead is only logged: the INVITE and the BYE go on", async () => {
  const { pf } = await pfWith("b2bua", async () => {
    throw new Error("store down");
  });
  assert.equal((await pf.observe(env(inviteFromFocus({ callId: "f2", conversationId: "conv-f2" })))).updated, true);
  assert.equal((await pf.handleBye(env(bye(["SIP;cause=480"], { callId: "f2" })))).mode, "b2bua");
});

test("as a proxy (no GSO to store) no folder is created ahead", async () => {
  let calls = 0;
  const { pf } = await pfWith("proxy", async () => {
    calls++;
  });
  await pf.observe(env(inviteFromFocus({ callId: "f3", conversationId: "conv-f3" })));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(calls, 0);
});
