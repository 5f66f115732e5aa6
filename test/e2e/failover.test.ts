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
import { type KamailioInstance, startKamailio, waitServing } from "../harness/kamailio.js";
import { type RedisInstance, startRedis } from "../harness/redis.js";
import { type SidecarInstance, startSidecar } from "../harness/sidecar.js";
import { waitFor } from "../harness/wait.js";

const DEADLINE_MS = 1000;

interface TwoSidecars {
  dovecot: DovecotInstance;
  a: SidecarInstance;
  b: SidecarInstance;
  kamailio: KamailioInstance;
}

/**
 * One Dovecot, one Redis, two sidecars sharing the group session records,
 * one Kamailio listing both (A first, `defines` added): started before the
 * describe's tests, stopped by PID after them. `get()` inside a test.
 */
function twoSidecars(defines: string[] = []): { get(): TwoSidecars } {
  let started: (TwoSidecars & { redis: RedisInstance }) | undefined;
  const parts: { dovecot?: DovecotInstance; redis?: RedisInstance; a?: SidecarInstance; b?: SidecarInstance; kamailio?: KamailioInstance } =
    {};
  before(async () => {
    parts.dovecot = await startDovecot();
    parts.redis = await startRedis();
    const env = { ...storeEnv(parts.dovecot, "b2bua"), CPM_PF__SESSION__STORE: "redis", CPM_PF__SESSION__REDISURL: parts.redis.url };
    parts.a = await startSidecar(env);
    parts.b = await startSidecar(env);
    parts.kamailio = await startKamailio({ grpcTarget: `${parts.a.target},${parts.b.target}`, deadlineMs: DEADLINE_MS, defines });
    started = { dovecot: parts.dovecot, redis: parts.redis, a: parts.a, b: parts.b, kamailio: parts.kamailio };
  });
  after(async () => {
    await parts.a?.kill("SIGCONT").catch(() => {});
    await parts.kamailio?.stop();
    await parts.a?.stop();
    await parts.b?.stop();
    await parts.redis?.stop();
    await parts.dovecot?.stop();
  });
  return {
    get() {
      if (!started) throw new Error("the two sidecars did not start");
      return started;
    },
  };
}

describe("a sidecar SIGKILLed mid-traffic: the other decides from the shared record (Redis), within the deadline", () => {
  const rig = twoSidecars();

  test("BYE-B4 BYE-B9: sidecar A observed the INVITE and is SIGKILLed; the CF's BYE (cause 480) is decided by B as B2BUA: the client gets the PF's BYE, the GSO carries the participants, no fail-safe; the next call goes to B at once", async () => {
    const { kamailio: k, a, dovecot } = rig.get();
    const call = await groupChatCall(k, ["Reason: SIP;cause=480"], async () => {
      await a.kill("SIGKILL");
    });
    assert.equal(await k.stat("cpm_pf_failsafe"), 0, "decided, not relayed as a fail-safe");
    assert.equal(await k.stat("cpm_pf_bye_b2bua"), 1);
    assert.match(call.clientBye.headers.get("reason")?.[0] ?? "", /^SIP;cause=480/);
    const [gso] = await storedObjects(dovecot, `Default/${call.conversationId}/${call.contributionId}`);
    const xml = gsoXml(gso as string);
    for (const p of PARTICIPANTS) assert.match(xml, new RegExp(`comm-addr="${p.replace(/\+/g, "\\+")}"`), `participant ${p}`);
    // the failover, or (had the health timer already found A gone) its mark
    assert.match(
      k.logs(),
      /sidecar 127\.0\.0\.1:\d+ failed \((UNAVAILABLE|DEADLINE_EXCEEDED)[^)]*\): trying 127\.0\.0\.1:\d+|sidecar 127\.0\.0\.1:\d+ is not serving/,
    );
    // A is known to be down: the next decisions go to B first
    const next = await groupChatCall(k, ["Reason: SIP;cause=480"]);
    assert.equal(await k.stat("cpm_pf_failsafe"), 0);
    assert.equal(await k.stat("cpm_pf_bye_b2bua"), 2);
    assert.equal((await storedObjects(dovecot, `Default/${next.conversationId}/${next.contributionId}`)).length, 1);
  });
});

describe("two sidecars behind one Kamailio with CPM_PF_GRPC_AFFINITY call-id: the load is spread, each dialog stays with one sidecar", () => {
  const rig = twoSidecars(['CPM_PF_GRPC_AFFINITY="call-id"']);

  test("scale-out BYE-B4: 40 group chats: both sidecars decide BYEs, and the sidecar that observed a dialog's INVITE decides its BYE", async () => {
    const { kamailio: k, a, b } = rig.get();
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
      const decidedA = byWho(a, "BYE decided");
      const decidedB = byWho(b, "BYE decided");
      assert.equal(decidedA.size + decidedB.size, sessions.length, "each BYE decided once");
      assert.ok(decidedA.size > 0 && decidedB.size > 0, `both sidecars decide (A ${decidedA.size}, B ${decidedB.size})`);
      const observedA = byWho(a, "group session lifecycle");
      for (const id of decidedA) assert.ok(observedA.has(id), `${id}: decided by the sidecar that observed its INVITE`);
      for (const id of decidedB) assert.ok(!observedA.has(id), `${id}: observed and decided by B`);
      assert.equal(await k.stat("cpm_pf_failsafe"), 0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("Kamailio's health timer (grpc.health.v1, route[CPM_PF_HEALTH]): a sidecar that stops serving is skipped before a decision waits for it; the operator takes one out and back over kamcmd", () => {
  const rig = twoSidecars();

  const decided = (sc: SidecarInstance, callId: string) => sc.logLines().some((l) => l.msg === "BYE decided" && l.callId === callId);
  /** cpmpf_health's mark for `key` (kamcmd htable.get: "{ item: { name: … value: N } }"). */
  const mark = async (k: KamailioInstance, key: string) => /\bvalue:\s*1\b/.test(await k.kamcmd("htable.get", "cpmpf_health", `s:${key}`));
  const failedOver = (k: KamailioInstance) => (k.logs().match(/cpm-pf: sidecar \S+ failed \(/g) ?? []).length;

  test("scale-out BYE-B9: A frozen (SIGSTOP) -> marked not serving within 2 timer rounds; the next chats' decisions go to B with no attempt at A (no failover line, no fail-safe); SIGCONT -> marked serving again, decisions back at A", async () => {
    const { kamailio: k, a: sa, b: sb } = rig.get();
    const healthy = await groupChatCall(k, ["Reason: SIP;cause=480"]);
    assert.ok(decided(sa, healthy.callId), "the first target decides while it serves");
    await sa.kill("SIGSTOP");
    await waitFor(() => mark(k, sa.target), 8000, 100, "A marked in cpmpf_health");
    assert.match(k.logs(), /cpm-pf: sidecar \S+ is not serving \(DEADLINE_EXCEEDED/);
    const before = failedOver(k);
    const frozen = [];
    for (let i = 0; i < 3; i++) frozen.push(await groupChatCall(k, ["Reason: SIP;cause=480"]));
    for (const c of frozen) assert.ok(decided(sb, c.callId), `${c.callId}: decided by B`);
    assert.equal(failedOver(k), before, "no decision tried the frozen sidecar first");
    assert.equal(await k.stat("cpm_pf_failsafe"), 0);
    await sa.kill("SIGCONT");
    await waitServing(k, [sa.target]);
    assert.match(k.logs(), /cpm-pf: sidecar \S+ is serving again/);
    const back = await groupChatCall(k, ["Reason: SIP;cause=480"]);
    assert.ok(decided(sa, back.callId), "back at the first target");
  });

  test("scale-out: the operator takes A out (kamcmd htable.seti cpmpf_health <A>::out 1): decisions go to B; htable.delete: back to A", async () => {
    const { kamailio: k, a: sa, b: sb } = rig.get();
    await k.kamcmd("htable.seti", "cpmpf_health", `s:${sa.target}::out`, "1");
    const out = await groupChatCall(k, ["Reason: SIP;cause=480"]);
    assert.ok(decided(sb, out.callId) && !decided(sa, out.callId), "taken out: B decides");
    await k.kamcmd("htable.delete", "cpmpf_health", `s:${sa.target}::out`);
    const back = await groupChatCall(k, ["Reason: SIP;cause=480"]);
    assert.ok(decided(sa, back.callId), "back in: A decides");
    assert.equal(await k.stat("cpm_pf_failsafe"), 0);
  });
});

describe("two sidecars behind one Kamailio with CPM_PF_GRPC_AFFINITY served-user: each served user's dialogs go to one sidecar, the users are spread", () => {
  const rig = twoSidecars(['CPM_PF_GRPC_AFFINITY="served-user"']);

  test("scale-out BYE-B4: 6 users x 4 group chats: every INVITE and BYE of one user is decided by the same sidecar (the key in the Record-Route), both sidecars have users, each BYE decided once, no fail-safe", async () => {
    const { kamailio: k, a, b } = rig.get();
    const dir = await mkdtemp(join(tmpdir(), "cpm-affinity-user-"));
    try {
      const users = Array.from({ length: 6 }, (_, i) => `+1613555130${i}`);
      const sessions = users.flatMap((user, u) =>
        Array.from({ length: 4 }, (_, i) => ({ user, conversationId: `conv-user-${u}-${i}`, contributionId: `contrib-user-${u}-${i}` })),
      );
      const client = await startBurstClient(dir, sessions.length);
      const opened = await openDialogs(k.address, dir, client.port, sessions, 5);
      assert.equal(opened.dialogs.length, sessions.length);
      const userOf = new Map(opened.dialogs.map((line) => [line.split(";")[0] as string, line.split(";")[3] as string]));
      const burst = await startByeBurst(k.address, dir, client.port, opened.dialogs, sessions.length, 5, { reason: "SIP;cause=480" });
      assert.equal(await burst.done, 0, "every BYE answered");
      await client.done;
      const usersAt = (sc: SidecarInstance, msg: string) =>
        sc
          .logLines()
          .filter((l) => l.msg === msg && typeof l.callId === "string" && userOf.has(l.callId as string))
          .map((l) => userOf.get(l.callId as string) as string);
      const decidedA = usersAt(a, "BYE decided");
      const decidedB = usersAt(b, "BYE decided");
      assert.equal(decidedA.length + decidedB.length, sessions.length, "each BYE decided once");
      const both = new Set(decidedA.filter((u) => decidedB.includes(u)));
      assert.deepEqual([...both], [], "no user's BYEs on both sidecars");
      assert.ok(
        decidedA.length > 0 && decidedB.length > 0,
        `both sidecars have users (A ${new Set(decidedA).size}, B ${new Set(decidedB).size})`,
      );
      const observedA = new Set(usersAt(a, "group session lifecycle"));
      for (const u of new Set(decidedA)) assert.ok(observedA.has(u), `${u}: its INVITEs observed where its BYEs are decided`);
      for (const u of new Set(decidedB)) assert.ok(!observedA.has(u), `${u}: observed and decided by B`);
      assert.equal(await k.stat("cpm_pf_failsafe"), 0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
