// BYE transactions through Kamailio, in one run on one machine:
//   (a) the same kamailio.cfg with WITH_CPM_PF_BYPASS: a plain relay, no sidecar
//   (b) the PF in proxy mode: every INVITE observed, every BYE decided by the sidecar
//   (c) the PF in B2BUA mode in production's layout: one group session (one
//       folder) per call, the sessions spread over many served users' own
//       mailboxes (master-user logins), a GSO stored per BYE (cause 480)
//   (d) next to (c): a bare imapflow APPEND loop of the same GSOs into the
//       same layout (folders created first, as the PF does when it observes
//       the INVITE), as many in flight as (c) has BYEs
// (a) and (b) run at each concurrency asked for; (c) and (d) at the first.
// SIPp plays the Controlling Function and the client. Phase 1 opens all the
// group chat dialogs; phase 2 ends them with BYEs (closed loop: at most
// `concurrent` BYE transactions at once, no pauses), so BYE/s measures BYE
// transactions only. BYE -> 200 OK response times come from SIPp's rtt trace
// (ms resolution).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ImapFlow } from "imapflow";
import { Redis } from "ioredis";
import { groupSessionFolder } from "../src/store/folder.js";
import { type BurstSession, openDialogs, startBurstClient, startByeBurst } from "../test/harness/bye-burst.js";
import { servedUsers } from "../test/harness/bye-faults.js";
import type { DovecotInstance } from "../test/harness/dovecot.js";
import { startDovecot } from "../test/harness/dovecot.js";
import { perUserStoreEnv, storeEnv } from "../test/harness/group-chat.js";
import { type KamailioInstance, type KamailioOptions, startKamailio } from "../test/harness/kamailio.js";
import { freePort } from "../test/harness/ports.js";
import { startRedis } from "../test/harness/redis.js";
import { startSidecar } from "../test/harness/sidecar.js";
import { measureCpu, quiesce } from "./cpu.js";
import { summarize } from "./stats.js";
import { gsoObject } from "./store-bench.js";

/** Transactions linger in shared memory for the tm wait timer: room for thousands of calls. */
const SHM_MB = 512;
/** Kamailio core async workers (the knob that bounds sidecar decisions per second). */
const ASYNC_WORKERS = Number(process.env.BENCH_ASYNC_WORKERS ?? 4);
/** Extra -A defines for the PF cases, space-separated (e.g. WITH_CPM_PF_OBSERVE_NOWAIT). */
const PF_DEFINES = (process.env.BENCH_PF_DEFINES ?? "").split(" ").filter(Boolean);
/** Kamailio's memory manager for every case (-x): tlsf (O(1)) by default; qm is the packaged default. */
const MEMORY = (process.env.BENCH_KAMAILIO_MEMORY ?? "tlsf") as NonNullable<KamailioOptions["memoryManager"]>;
/** Served users (own Dovecot user and mailbox each) the sessions of (c) and (d) are spread over. */
const USERS = Number(process.env.BENCH_USERS ?? 100);

export interface SipBenchCase {
  name: string;
  /** Phase 1 (INVITE/200/ACK, dialogs left open), for context. */
  invitesPerSecond: number;
  byesPerSecond: number;
  p50: number;
  p99: number;
  byes: number;
  failed: number;
  /** CPU spent during phase 2 (the BYEs), per BYE, in µs: Kamailio (all its processes) and the sidecar. */
  cpuPerBye: { kamailio: number; sidecar: number };
  /** BYEs at most this many at once. */
  concurrent: number;
  /** BYEs Kamailio relayed through its fail-safe (decision past the deadline or sidecar unreachable). */
  failsafes: number;
}

export interface AppendLoopCase {
  appendsPerSecond: number;
  p50: number;
  p99: number;
  appends: number;
}

export interface SipBench {
  memoryManager: string;
  users: number;
  cases: SipBenchCase[];
  /** (d), the baseline of (c). */
  bareAppend: AppendLoopCase;
  /** (b) with the sidecar's metrics off and on, alternating, BENCH_METRICS_ROUNDS pairs. */
  metricsPairs: { off: SipBenchCase; on: SipBenchCase }[];
}

const METRICS_ROUNDS = Number(process.env.BENCH_METRICS_ROUNDS ?? 3);

/** Call N of the bench in a group session of its own (one folder per session, as in production), of one of `users`. */
const benchSession = (n: number, users: readonly string[] = ["+16135551200"]): BurstSession => ({
  user: users[n % users.length] as string,
  conversationId: `conv-bench-${n}`,
  contributionId: `contrib-bench-${n}`,
});

/**
 * Two phases, so that the BYE figures are BYE transactions only: (1) open all
 * dialogs, (2) end them with BYEs, at most `concurrent` at once, as fast as the
 * system answers. The client SIPp (client-uas.xml) holds the dialogs between.
 */
export async function playCalls(
  kamailio: KamailioInstance,
  calls: number,
  concurrent: number,
  reason: string,
  opts: {
    sidecarPid?: number;
    sidecarPids?: readonly number[];
    users?: readonly string[];
    dovecotPid?: number;
    between?: () => Promise<void>;
  } = {},
): Promise<Omit<SipBenchCase, "name">> {
  const { sidecarPid, users } = opts;
  const sidecars = opts.sidecarPids ?? [sidecarPid ?? -1];
  const dir = await mkdtemp(join(tmpdir(), "cpm-bench-sipp-"));
  const client = await startBurstClient(dir, calls);
  const sessions = Array.from({ length: calls }, (_, i) => benchSession(i + 1, users));
  const opened = await openDialogs(kamailio.address, dir, client.port, sessions, concurrent);
  // what phase 1 left (the sidecar creating the sessions' folders) is done before the BYEs
  await quiesce([kamailio.pid, ...sidecars, opts.dovecotPid ?? -1]);
  await opts.between?.();
  const cpuEnd = await measureCpu([kamailio.pid, ...sidecars]);
  const burst = await startByeBurst(kamailio.address, dir, client.port, opened.dialogs, calls, concurrent, { reason, traceRtt: true });
  const uacCode = await burst.done;
  const uasCode = await client.done;
  const [kamailioMs = 0, ...sidecarMs] = await cpuEnd();
  const cpu = [kamailioMs, sidecarMs.reduce((x, y) => x + y, 0)];
  const byes = await burst.rtts();
  const times = byes.map((c) => c[0]);
  const lat = byes.map((c) => c[1]);
  const spanMs = times.length > 1 ? (times[times.length - 1] as number) - (times[0] as number) : Number.NaN;
  await rm(dir, { recursive: true, force: true });
  const s = summarize(lat, spanMs);
  return {
    invitesPerSecond: opened.invitesPerSecond,
    byesPerSecond: ((byes.length - 1) * 1000) / spanMs,
    p50: s.p50,
    p99: s.p99,
    byes: byes.length,
    failed: [opened.code, uacCode, uasCode].filter((c) => c !== 0).length,
    ...cpuShare(cpu, byes.length),
    concurrent,
    failsafes: await kamailio.stat("cpm_pf_failsafe"),
  };
}

/** (b) with the sidecar's Prometheus metrics off or on (then scraped once a second while the BYEs run): the metrics' cost. */
async function proxyCase(
  dovecot: DovecotInstance,
  calls: number,
  concurrent: number,
  kamailioBase: Partial<KamailioOptions>,
  metrics: boolean,
): Promise<SipBenchCase> {
  const port = await freePort();
  const env: Record<string, string> = metrics ? { CPM_PF__METRICS__ENABLED: "true", CPM_PF__METRICS__PORT: String(port) } : {};
  const sidecar = await startSidecar({ ...storeEnv(dovecot, "proxy"), ...env });
  const kamailio = await startKamailio({ ...kamailioBase, grpcTarget: sidecar.target, asyncWorkers: ASYNC_WORKERS, defines: PF_DEFINES });
  const scraper = metrics
    ? setInterval(
        () =>
          void fetch(`http://127.0.0.1:${port}/metrics`).then(
            (r) => r.text(),
            () => "",
          ),
        1000,
      )
    : undefined;
  try {
    const b = await playCalls(kamailio, calls, concurrent, "SIP;cause=480", { sidecarPid: sidecar.pid, dovecotPid: dovecot.pid });
    return { name: `(b) metrics ${metrics ? "on, scraped every second" : "off"}`, ...b };
  } finally {
    clearInterval(scraper);
    await kamailio.stop();
    await sidecar.stop();
  }
}

function cpuShare([kamailio = 0, sidecar = 0]: number[], byes: number) {
  const us = (ms: number) => (byes > 0 ? (ms * 1000) / byes : Number.NaN);
  return { cpuPerBye: { kamailio: us(kamailio), sidecar: us(sidecar) } };
}

export async function benchSip(dovecot: DovecotInstance, calls: number, concurrents: readonly number[]): Promise<SipBench> {
  const cases: SipBenchCase[] = [];
  const kamailioBase = { shmMb: SHM_MB, memoryManager: MEMORY };
  for (const concurrent of concurrents) {
    const bypass = await startKamailio({ ...kamailioBase, grpcTarget: "127.0.0.1:9", defines: ["WITH_CPM_PF_BYPASS"] });
    try {
      cases.push({ name: "(a) Kamailio relay, no sidecar call", ...(await playCalls(bypass, calls, concurrent, "SIP;cause=480")) });
    } finally {
      await bypass.stop();
    }
    const sidecar = await startSidecar(storeEnv(dovecot, "proxy"));
    const kamailio = await startKamailio({ ...kamailioBase, grpcTarget: sidecar.target, asyncWorkers: ASYNC_WORKERS, defines: PF_DEFINES });
    try {
      const b = await playCalls(kamailio, calls, concurrent, "SIP;cause=480", { sidecarPid: sidecar.pid, dovecotPid: dovecot.pid });
      cases.push({ name: "(b) PF proxy mode, sidecar decision", ...b });
    } finally {
      await kamailio.stop();
      await sidecar.stop();
    }
  }
  const concurrent = concurrents[0] ?? 20;
  const metricsPairs: SipBench["metricsPairs"] = [];
  for (let r = 0; r < METRICS_ROUNDS; r++) {
    const off = await proxyCase(dovecot, calls, concurrent, kamailioBase, false);
    const on = await proxyCase(dovecot, calls, concurrent, kamailioBase, true);
    metricsPairs.push({ off, on });
  }
  const users = servedUsers(USERS);
  const layout = await startDovecot({ users });
  try {
    const sidecar = await startSidecar(perUserStoreEnv(layout, "b2bua"));
    const kamailio = await startKamailio({ ...kamailioBase, grpcTarget: sidecar.target, asyncWorkers: ASYNC_WORKERS, defines: PF_DEFINES });
    try {
      const c = await playCalls(kamailio, calls, concurrent, "SIP;cause=480", { sidecarPid: sidecar.pid, users, dovecotPid: layout.pid });
      cases.push({ name: `(c) PF B2BUA mode, a GSO per BYE, 1 folder per session, ${users.length} users' mailboxes`, ...c });
    } finally {
      await kamailio.stop();
      await sidecar.stop();
    }
    const bareAppend = await appendLoop(
      layout,
      Array.from({ length: calls }, (_, i) => benchSession(calls + i + 1, users)),
      concurrent,
    );
    return { memoryManager: MEMORY, users: users.length, cases, bareAppend, metricsPairs };
  } finally {
    await layout.stop();
  }
}

/**
 * (d): one imapflow connection per served user (master-user login), every
 * session's folder created first, then one GSO APPENDed per session,
 * `concurrent` at once, sessions in the order (c) ends them.
 */
async function appendLoop(dovecot: DovecotInstance, sessions: readonly BurstSession[], concurrent: number): Promise<AppendLoopCase> {
  const conns = new Map<string, ImapFlow>();
  try {
    for (const user of new Set(sessions.map((s) => s.user))) {
      const c = new ImapFlow({
        host: dovecot.host,
        port: dovecot.port,
        secure: false,
        auth: { user: `${user}*${dovecot.masterUser}`, pass: dovecot.masterPassword },
        logger: false,
      });
      await c.connect();
      conns.set(user, c);
    }
    const folderOf = (s: BurstSession) => groupSessionFolder("Default", s.conversationId, s.contributionId);
    for (const s of sessions) await (conns.get(s.user) as ImapFlow).mailboxCreate(folderOf(s));
    const lat: number[] = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrent }, async () => {
        while (next < sessions.length) {
          const i = next++;
          const s = sessions[i] as BurstSession;
          const o = gsoObject(i, { conv: s.conversationId, contrib: s.contributionId });
          const start = performance.now();
          await (conns.get(s.user) as ImapFlow).append(folderOf(s), o.raw);
          lat.push(performance.now() - start);
        }
      }),
    );
    const r = summarize(lat, performance.now() - t0);
    return { appendsPerSecond: r.perSecond, p50: r.p50, p99: r.p99, appends: r.count };
  } finally {
    for (const c of conns.values()) await c.logout().catch(() => undefined);
  }
}

export interface ScaleBench {
  users: number;
  /** One sidecar, then two behind the same Kamailio (CPM_PF_GRPC_AFFINITY call-id), both on Redis. */
  cases: (SipBenchCase & { sidecars: number; roundTripsPerInvite: number; roundTripsPerBye: number })[];
}

/**
 * Round trips to Redis: the commands clients sent, as MONITOR shows them
 * (the commands a Lua script runs are shown with the source "lua" and are
 * not round trips; INFO commandstats counts those too).
 */
async function roundTrips(redis: Redis): Promise<{ count(): number; stop(): void }> {
  const monitor = await redis.monitor();
  let n = 0;
  monitor.on("monitor", (_time: string, _args: string[], source: string) => {
    if (source !== "lua") n++;
  });
  return { count: () => n, stop: () => monitor.disconnect() };
}

/**
 * The scale-out figure: (c)'s B2BUA case (a GSO per BYE, one folder per session,
 * many users' mailboxes) with the records on Redis, behind one Kamailio, with
 * one sidecar and then with two (the bridge spreads the dialogs by Call-ID).
 * Per case the Redis round trips per INVITE observed and per BYE decided
 * (counted with MONITOR attached for the whole case, in both cases alike).
 */
export async function benchScale(calls: number, concurrent: number): Promise<ScaleBench> {
  const users = servedUsers(USERS);
  const layout = await startDovecot({ users });
  const redisServer = await startRedis({ appendfsync: "everysec" });
  const redis = new Redis(redisServer.url, { lazyConnect: false, maxRetriesPerRequest: 1 });
  const cases: ScaleBench["cases"] = [];
  try {
    for (const n of [1, 2]) {
      await redis.flushall();
      const env = { ...perUserStoreEnv(layout, "b2bua"), CPM_PF__SESSION__STORE: "redis", CPM_PF__SESSION__REDISURL: redisServer.url };
      const sidecars = [];
      for (let i = 0; i < n; i++) sidecars.push(await startSidecar(env));
      const kamailio = await startKamailio({
        shmMb: SHM_MB,
        memoryManager: MEMORY,
        grpcTarget: sidecars.map((sc) => sc.target).join(","),
        asyncWorkers: ASYNC_WORKERS,
        defines: [...PF_DEFINES, 'CPM_PF_GRPC_AFFINITY="call-id"'],
      });
      const trips = await roundTrips(redis);
      try {
        let afterInvites = 0;
        const c = await playCalls(kamailio, calls, concurrent, "SIP;cause=480", {
          sidecarPids: sidecars.map((sc) => sc.pid),
          users,
          dovecotPid: layout.pid,
          between: async () => {
            afterInvites = trips.count();
          },
        });
        cases.push({
          name: `(s${n}) ${n} sidecar${n > 1 ? "s" : ""} on Redis behind one Kamailio`,
          sidecars: n,
          roundTripsPerInvite: afterInvites / calls,
          roundTripsPerBye: (trips.count() - afterInvites) / Math.max(1, c.byes),
          ...c,
        });
      } finally {
        trips.stop();
        await kamailio.stop();
        for (const sc of sidecars) await sc.stop();
      }
    }
    return { users: users.length, cases };
  } finally {
    redis.disconnect();
    await redisServer.stop();
    await layout.stop();
  }
}
