// BYE transactions through Kamailio, three ways, in one run on one machine:
//   (a) the same kamailio.cfg with WITH_CPM_PF_BYPASS: a plain relay, no sidecar
//   (b) the PF in proxy mode: every INVITE observed, every BYE decided by the sidecar
//   (c) the PF in B2BUA mode: as (b), plus a GSO stored in Dovecot per BYE (cause 480)
// SIPp plays the Controlling Function and the client. Phase 1 opens all the
// group chat dialogs; phase 2 ends them with BYEs (closed loop: at most
// `concurrent` BYE transactions at once, no pauses), so BYE/s measures BYE
// transactions only. BYE -> 200 OK response times come from SIPp's rtt trace
// (ms resolution).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BurstSession, openDialogs, startBurstClient, startByeBurst } from "../test/harness/bye-burst.js";
import type { DovecotInstance } from "../test/harness/dovecot.js";
import { storeEnv } from "../test/harness/group-chat.js";
import { type KamailioInstance, startKamailio } from "../test/harness/kamailio.js";
import { startSidecar } from "../test/harness/sidecar.js";
import { measureCpu } from "./cpu.js";
import { summarize } from "./stats.js";

/** Transactions linger in shared memory for the tm wait timer: room for thousands of calls. */
const SHM_MB = 512;
/** Kamailio core async workers (the knob that bounds sidecar decisions per second). */
const ASYNC_WORKERS = Number(process.env.BENCH_ASYNC_WORKERS ?? 4);
/** Extra -A defines for the PF cases, space-separated (e.g. WITH_CPM_PF_OBSERVE_NOWAIT). */
const PF_DEFINES = (process.env.BENCH_PF_DEFINES ?? "").split(" ").filter(Boolean);

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
}

/** Call N of the bench in a group session of its own (one folder per session, as in production), served user tel:+16135551200. */
const benchSession = (n: number): BurstSession => ({
  user: "+16135551200",
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
  sidecarPid?: number,
): Promise<Omit<SipBenchCase, "name">> {
  const dir = await mkdtemp(join(tmpdir(), "cpm-bench-sipp-"));
  const client = await startBurstClient(dir, calls);
  const sessions = Array.from({ length: calls }, (_, i) => benchSession(i + 1));
  const opened = await openDialogs(kamailio.address, dir, client.port, sessions, concurrent);
  const cpuEnd = await measureCpu([kamailio.pid, sidecarPid ?? -1]);
  const burst = await startByeBurst(kamailio.address, dir, client.port, opened.dialogs, calls, concurrent, { reason, traceRtt: true });
  const uacCode = await burst.done;
  const uasCode = await client.done;
  const cpu = await cpuEnd();
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
  };
}

function cpuShare([kamailio = 0, sidecar = 0]: number[], byes: number) {
  const us = (ms: number) => (byes > 0 ? (ms * 1000) / byes : Number.NaN);
  return { cpuPerBye: { kamailio: us(kamailio), sidecar: us(sidecar) } };
}

export async function benchSip(dovecot: DovecotInstance, calls: number, concurrent: number): Promise<SipBenchCase[]> {
  const out: SipBenchCase[] = [];
  const bypass = await startKamailio({ grpcTarget: "127.0.0.1:9", defines: ["WITH_CPM_PF_BYPASS"], shmMb: SHM_MB });
  try {
    out.push({ name: "(a) Kamailio relay, no sidecar call", ...(await playCalls(bypass, calls, concurrent, "SIP;cause=480")) });
  } finally {
    await bypass.stop();
  }
  for (const mode of ["proxy", "b2bua"] as const) {
    const sidecar = await startSidecar(storeEnv(dovecot, mode));
    const kamailio = await startKamailio({ grpcTarget: sidecar.target, shmMb: SHM_MB, asyncWorkers: ASYNC_WORKERS, defines: PF_DEFINES });
    try {
      const name = mode === "proxy" ? "(b) PF proxy mode, sidecar decision" : "(c) PF B2BUA mode, GSO stored per BYE";
      out.push({ name, ...(await playCalls(kamailio, calls, concurrent, "SIP;cause=480", sidecar.pid)) });
    } finally {
      await kamailio.stop();
      await sidecar.stop();
    }
  }
  return out;
}
