// RJ-1 at the PF (OMA CPM 8.3.2.9.1.3): ObserveSession answers answer_by_pf
// for the served user's client re-joining a group session the delivery side
// takes (takesRejoin), never for the focus's INVITE, and not with
// delivery.answerRejoins off or while draining; the re-join the PF answers
// leaves the record's dialogs towards the CF as they were.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { buildConfig } from "../../../src/config/config.js";
import { silentLogger } from "../../../src/log/logger.js";
import { NoMediaPlane } from "../../../src/media/media-plane.js";
import { ParticipatingFunction, type RegistrationHandler } from "../../../src/pf/participating-function.js";
import type { GroupSession } from "../../../src/session/group-session.js";
import { SessionRegistry } from "../../../src/session/registry.js";
import { inviteFromClient, inviteFromFocus } from "../../fixtures/sip.js";
import { capturedLog } from "../../fixtures/sip-ua.js";

const env = (raw: Buffer) => ({ raw, source: "127.0.0.1:5060", transport: "udp" });

/** The client's re-join of the focus's group session (8.2.2.7): same IDs, to the focus, from the served user. */
function rejoinInvite(callId: string): Buffer {
  return Buffer.from(
    inviteFromClient({ callId, conversationId: "conv-7f3a" })
      .toString("utf8")
      .replace("Contribution-ID: contrib-c1", "Contribution-ID: contrib-1")
      .replace("INVITE sip:chat-factory@cf.example.net", "INVITE sip:focus-7f3a@cf.example.net"),
  );
}

const OWN_UA = "sip:127.0.0.1:5097";

/** `takes`: the delivery side answers the re-join, here (true) or at another sidecar's UA (its address). */
async function pfWith(
  t: { after: (fn: () => Promise<void>) => void },
  takes: boolean | string,
  answerRejoins = true,
  log = silentLogger(),
) {
  const dir = await mkdtemp(join(tmpdir(), "cpm-pf-rj-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const cfg = buildConfig({ delivery: { answerRejoins } });
  const sessions = new SessionRegistry(dir, cfg.session, silentLogger());
  await sessions.load();
  t.after(() => sessions.close());
  const asked: GroupSession[] = [];
  const registrations: RegistrationHandler = {
    onRegistration: async () => ({ accepted: true, deliveries: 0, notes: [] }),
    rejoinTarget: async (s) => {
      asked.push(s);
      if (takes === false) return undefined;
      return takes === true ? {} : { ua: takes };
    },
  };
  const store = { append: async (o: { folder: string; messageId: string }) => ({ state: "stored" as const, ...o }) };
  const pf = new ParticipatingFunction(cfg, sessions, store, new NoMediaPlane(), log, {
    registrations,
    anchorMedia: true,
    uaAddress: OWN_UA,
  });
  return { pf, sessions, asked };
}

test("RJ-1: the served user's client re-joining a group the delivery side takes -> answer_by_pf, not anchored; the record's CF dialog unchanged", async (t) => {
  const { pf, sessions, asked } = await pfWith(t, true);
  const cf = await pf.observe(env(inviteFromFocus()));
  assert.equal(cf.answerByPf, false, "the focus's INVITE is never the PF's to answer");
  assert.equal(asked.length, 0);
  const r = await pf.observe(env(rejoinInvite("rejoin-1@ue")));
  assert.equal(r.answerByPf, true);
  assert.equal(r.uaAddress, OWN_UA, "this sidecar's UA answers it");
  assert.equal(r.anchorMedia, false);
  assert.equal(asked[0]?.key, "call-1@cf");
  const record = sessions.get("call-1@cf");
  assert.equal(record?.key, "call-1@cf", "the group's current dialog is still the CF's");
  assert.deepEqual(
    record?.dialogs.map((d) => d.callId),
    ["call-1@cf"],
  );
});

test("RJ-1: a re-join the delivery side does not take, or with delivery.answerRejoins off, goes to the focus as a new dialog of the record (8.2.2.7)", async (t) => {
  for (const [takes, answerRejoins] of [
    [false, true],
    [true, false],
  ] as const) {
    const { pf, sessions } = await pfWith(t, takes, answerRejoins);
    await pf.observe(env(inviteFromFocus()));
    const r = await pf.observe(env(rejoinInvite("rejoin-2@ue")));
    assert.equal(r.answerByPf, false);
    assert.equal(r.anchorMedia, true, "anchored like any client INVITE of a b2bua session");
    assert.equal(sessions.get("rejoin-2@ue")?.key, "rejoin-2@ue", "the re-join is the record's current dialog");
  }
});

test("RJ-1 scale-out: a re-join the served user's slot holder takes -> answer_by_pf naming that sidecar's UA, not this one's", async (t) => {
  const holder = "sip:127.0.0.1:6097";
  const { pf, asked } = await pfWith(t, holder);
  await pf.observe(env(inviteFromFocus()));
  const r = await pf.observe(env(rejoinInvite("rejoin-3@ue")));
  assert.equal(r.answerByPf, true);
  assert.equal(r.uaAddress, holder);
  assert.equal(r.anchorMedia, false);
  assert.equal(asked.length, 1);
});

test("RJ-1 bad input: a re-join naming a focus the record does not know is still that group session's (its IDs): answered by the PF, the other focus logged; a client INVITE for a group chat with no record is relayed as a new session, logged", async (t) => {
  const { log, lines } = capturedLog();
  const { pf, asked } = await pfWith(t, true, true, log);
  await pf.observe(env(inviteFromFocus()));
  const stale = Buffer.from(rejoinInvite("rejoin-stale@ue").toString("utf8").replace("INVITE sip:focus-7f3a@", "INVITE sip:focus-old@"));
  const r = await pf.observe(env(stale));
  assert.equal(r.answerByPf, true);
  assert.equal(asked.length, 1);
  const rj = lines.find((l) => String(l.message).startsWith("re-join of a group session"));
  assert.equal(rj?.requestUri, "sip:focus-old@cf.example.net");
  assert.match(String(rj?.recordFocus), /^sip:focus-7f3a@cf\.example\.net/);

  const unknown = Buffer.from(
    rejoinInvite("rejoin-unknown@ue").toString("utf8").replace("Conversation-ID: conv-7f3a", "Conversation-ID: conv-never-seen"),
  );
  const u = await pf.observe(env(unknown));
  assert.equal(u.answerByPf, false, "nothing of the PF's: the focus it names answers");
  assert.equal(asked.length, 1);
  const relayed = lines.find((l) => String(l.message).startsWith("client INVITE for a group chat the PF has no record of"));
  assert.equal(relayed?.conversationId, "conv-never-seen");
  assert.equal(relayed?.requestUri, "sip:focus-7f3a@cf.example.net");
});
