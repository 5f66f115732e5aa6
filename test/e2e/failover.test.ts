// Scale-out, the part that needs no ownership: one Kamailio, two sidecars
// sharing the group session records on Redis (session.store "redis"), one
// Dovecot; the bridge knows both (CPM_PF_GRPC_TARGET "a,b", in order of
// preference). The CF (SIPp) invites the served user through Kamailio and
// sidecar A observes it; A is SIGKILLed before the CF's BYE; the BYE is
// decided by B from the shared record within the deadline: no fail-safe, the
// GSO with the participants A learnt.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { openDialogs, startBurstClient, startByeBurst } from "../harness/bye-burst.js";
import { type DovecotInstance, startDovecot } from "../harness/dovecot.js";
import { groupChatCall, gsoXml, PARTICIPANTS, storedObjects, storeEnv } from "../harness/group-chat.js";
import { type KamailioInstance, startKamailio } from "../harness/kamailio.js";
import { type RedisInstance, startRedis } from "../harness/redis.js";
import { type SidecarInstance, startSidecar } from "../harness/sidecar.js";

const DEADLINE_MS = 1000;

describe("a sidecar SIGKILLed mid-traffic: the other decides from the shared record (Redis), within the deadline", () => {
  let dovecot: DovecotInstance | undefined;
  let redis: RedisInstance | undefined;
  let a: SidecarInstance | undefined;
  let b: SidecarInstance | undefined;
  let kamailio: KamailioInstance | undefined;

  before(async () => {
    dovecot = await startDovecot();
    redis = await startRedis();
    const env = { ...storeEnv(dovecot, "b2bua"), CPM_PF__SESSION__STORE: "redis", CPM_PF__SESSION__REDISURL: redis.url };
    a = await startSidecar(env);
    b = await startSidecar(env);
    kamailio = await startKamailio({ grpcTarget: `${a.target},${b.target}`, deadlineMs: DEADLINE_MS });
  });
  after(async () => {
    await kamailio?.stop();
    await a?.stop();
    await b?.stop();
    await redis?.stop();
    await dovecot?.stop();
  });

  test("BYE-B4 BYE-B9: sidecar A observed the INVITE and is SIGKILLed; the CF's BYE (cause 480) is decided by B as B2BUA: the client gets the PF's BYE, the GSO carries the participants, no fail-safe; the next call goes to B at once", async () => {
    const k = kamailio as KamailioInstance;
    const call = await groupChatCall(k, ["Reason: SIP;cause=480"], async () => {
      await (a as SidecarInstance).kill("SIGKILL");
    });
    assert.equal(await k.stat("cpm_pf_failsafe"), 0, "decided, not relayed as a fail-safe");
    assert.equal(await k.stat("cpm_pf_bye_b2bua"), 1);
    assert.match(call.clientBye.headers.get("reason")?.[0] ?? "", /^SIP;cause=480/);
    const [gso] = await storedObjects(dovecot as DovecotInstance, `Default/${call.conversationId}/${call.contributionId}`);
    const xml = gsoXml(gso as string);
    for (const p of PARTICIPANTS) assert.match(xml, new RegExp(`comm-addr="${p.replace(/\+/g, "\\+")}"`), `participant ${p}`);
    assert.match(k.logs(), /sidecar 127\.0\.0\.1:\d+ failed \((UNAVAILABLE|DEADLINE_EXCEEDED)[^)]*\): trying 127\.0\.0\.1:\d+/);
    // A is known to be down: the next decisions go to B first
    const next = await groupChatCall(k, ["Reason: SIP;cause=480"]);
    assert.equal(await k.stat("cpm_pf_failsafe"), 0);
    assert.equal(await k.stat("cpm_pf_bye_b2bua"), 2);
    assert.equal((await storedObjects(dovecot as DovecotInstance, `Default/${next.conversationId}/${next.contributionId}`)).length, 1);
  });
});

describe("two sidecars behind one Kamailio with CPM_PF_GRPC_AFFINITY call-id: the load is spread, each dialog stays with one sidecar", () => {
  let dovecot: DovecotInstance | undefined;
  let redis: RedisInstance | undefined;
  let a: SidecarInstance | undefined;
  let b: SidecarInstance | undefined;
  let kamailio: KamailioInstance | undefined;

  before(async () => {
    dovecot = await startDovecot();
    redis = await startRedis();
    const env = { ...storeEnv(dovecot, "b2bua"), CPM_PF__SESSION__STORE: "redis", CPM_PF__SESSION__REDISURL: redis.url };
    a = await startSidecar(env);
    b = await startSidecar(env);
    kamailio = await startKamailio({
      grpcTarget: `${a.target},${b.target}`,
      deadlineMs: DEADLINE_MS,
      defines: ['CPM_PF_GRPC_AFFINITY="call-id"'],
    });
  });
  after(async () => {
    await kamailio?.stop();
    await a?.stop();
    await b?.stop();
    await redis?.stop();
    await dovecot?.stop();
  });

  test("issue 13 BYE-B4: 40 group chats: both sidecars decide BYEs, and the sidecar that observed a dialog's INVITE decides its BYE", async () => {
    const k = kamailio as KamailioInstance;
    const dir = await mkdtemp(join(tmpdir(), "cpm-affinity-"));
    try {
      const sessions = Array.from({ length: 40 }, (_, i) => ({
        user: "+16135551200",
        conversationId: `conv-aff-${i}`,
        contributionId: `contrib-aff-${i}`,
      }));
      const client = await startBurstClient(dir, sessions.length);
      const opened = await openDialogs(k.address, dir, client.port, sessions, 5);
      assert.equal(opened.dialogs.length, sessions.length);
      const burst = await startByeBurst(k.address, dir, client.port, opened.dialogs, sessions.length, 5, { reason: "SIP;cause=480" });
      assert.equal(await burst.done, 0, "every BYE answered");
      await client.done;
      const byWho = (sc: SidecarInstance, msg: string) =>
        new Set(
          sc
            .logLines()
            .filter((l) => l.msg === msg && typeof l.callId === "string")
            .map((l) => l.callId as string),
        );
      const decidedA = byWho(a as SidecarInstance, "BYE decided");
      const decidedB = byWho(b as SidecarInstance, "BYE decided");
      assert.equal(decidedA.size + decidedB.size, sessions.length, "each BYE decided once");
      assert.ok(decidedA.size > 0 && decidedB.size > 0, `both sidecars decide (A ${decidedA.size}, B ${decidedB.size})`);
      const observedA = byWho(a as SidecarInstance, "group session lifecycle");
      for (const id of decidedA) assert.ok(observedA.has(id), `${id}: decided by the sidecar that observed its INVITE`);
      for (const id of decidedB) assert.ok(!observedA.has(id), `${id}: observed and decided by B`);
      assert.equal(await k.stat("cpm_pf_failsafe"), 0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
