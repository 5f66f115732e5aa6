// BYE transactions through Kamailio, three ways, in one run on one machine:
//   (a) the same kamailio.cfg with WITH_CPM_PF_BYPASS: a plain relay, no sidecar
//   (b) the PF in proxy mode: every INVITE observed, every BYE decided by the sidecar
//   (c) the PF in B2BUA mode: as (b), plus a GSO stored in Dovecot per BYE (cause 480)
// SIPp plays the Controlling Function and the client. Phase 1 opens all the
// group chat dialogs; phase 2 ends them with BYEs (closed loop: at most
// `concurrent` BYE transactions at once, no pauses), so BYE/s measures BYE
// transactions only. BYE -> 200 OK response times come from SIPp's rtt trace
// (ms resolution).
import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DovecotInstance } from "../test/harness/dovecot.js";
import { storeEnv } from "../test/harness/group-chat.js";
import { type KamailioInstance, startKamailio } from "../test/harness/kamailio.js";
import { freePort } from "../test/harness/ports.js";
import { REPO_ROOT, startSidecar } from "../test/harness/sidecar.js";
import { waitFor } from "../test/harness/wait.js";
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

const BENCH_SCENARIOS = join(REPO_ROOT, "bench", "scenarios");

const common = (calls: number) => ["-i", "127.0.0.1", "-nostdin", "-d", "0", "-timeout", "300s", "-timeout_error", "-m", String(calls)];
/** Both bench phases number their Call-IDs alike: call N of phase 2 ends the dialog of call N of phase 1. */
const CALL_ID = ["-cid_str", "cpm-bench-%u@127.0.0.1"];

/** Phase 2's injection file: line N = the dialog phase 1 opened as call N ("-" tags for a call that failed). */
export function byeInjectionFile(logLines: string[], calls: number): string {
  const byCall = new Map<number, string>();
  for (const line of logLines) {
    const [callId, fromTag, toTag] = line.split(";");
    const n = Number(/^cpm-bench-(\d+)@/.exec(callId ?? "")?.[1]);
    if (n > 0 && fromTag && toTag) byCall.set(n, `${callId};${fromTag};${toTag}`);
  }
  const rows = Array.from({ length: calls }, (_, i) => byCall.get(i + 1) ?? `cpm-bench-${i + 1}@127.0.0.1;-;-`);
  return `SEQUENTIAL\n${rows.join("\n")}\n`;
}

function run(args: string[], cwd: string): Promise<number | null> {
  return new Promise((resolve) => {
    const child = spawn("sipp", args, { cwd, stdio: "ignore" });
    child.once("exit", (code) => resolve(code));
    child.once("error", () => resolve(null));
  });
}

async function udpBound(port: number): Promise<boolean> {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const table = await readFile("/proc/net/udp", "utf8");
  return table.split("\n").some((l) => l.includes(`:${hex} `));
}

/** SIPp as the CF: `calls` calls of `scenario`, at most `concurrent` at once, as fast as answered. */
async function cfArgs(kamailio: KamailioInstance, scenario: string, calls: number, concurrent: number, clientPort: number) {
  return [
    kamailio.address,
    "-sf",
    join(BENCH_SCENARIOS, scenario),
    "-p",
    String(await freePort()),
    ...common(calls),
    ...CALL_ID,
    "-r",
    "100000",
    "-l",
    String(concurrent),
    "-key",
    "client_port",
    String(clientPort),
  ];
}

/** Phase 1: open `calls` group chat dialogs (INVITE/200/ACK); returns the log lines "Call-ID;From-tag;To-tag;tag=To-tag". */
async function openDialogs(kamailio: KamailioInstance, dir: string, clientPort: number, calls: number, concurrent: number) {
  const started = performance.now();
  const code = await run(
    [
      ...(await cfArgs(kamailio, "cf-invite-hold.xml", calls, concurrent, clientPort)),
      "-trace_logs",
      "-key",
      "conversation_id",
      "conv-bench",
      "-key",
      "contribution_id",
      "contrib-bench",
    ],
    dir,
  );
  const seconds = (performance.now() - started) / 1000;
  const log = (await readdir(dir)).find((f) => f.startsWith("cf-invite-hold_") && f.endsWith("_logs.log"));
  const dialogs = log ? (await readFile(join(dir, log), "utf8")).split("\n").filter((l) => l.split(";").length === 4) : [];
  return { code, dialogs, invitesPerSecond: dialogs.length / seconds };
}

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
  const clientPort = await freePort();
  const uas = run(["-sf", join(REPO_ROOT, "test", "scenarios", "client-uas.xml"), "-p", String(clientPort), ...common(calls)], dir);
  await waitFor(() => udpBound(clientPort), 5000, 20, "client SIPp bound");
  const opened = await openDialogs(kamailio, dir, clientPort, calls, concurrent);
  const inf = join(dir, "dialogs.csv");
  await writeFile(inf, byeInjectionFile(opened.dialogs, calls));
  const cpuEnd = await measureCpu([kamailio.pid, sidecarPid ?? -1]);
  const uacCode = await run(
    [
      ...(await cfArgs(kamailio, "cf-bye-inf.xml", calls, concurrent, clientPort)),
      "-inf",
      inf,
      "-trace_rtt",
      "-rtt_freq",
      "1",
      "-key",
      "rr",
      `<sip:${kamailio.address};lr;cpmpf>`,
      "-key",
      "bye_headers",
      reason ? `\r\nReason: ${reason}` : "",
    ],
    dir,
  );
  const uasCode = await uas;
  const cpu = await cpuEnd();
  const csv = (await readdir(dir)).find((f) => f.startsWith("cf-bye-inf_") && f.endsWith("_rtt.csv"));
  const rows = csv ? (await readFile(join(dir, csv), "utf8")).split("\n").slice(1) : [];
  const byes = rows.map((r) => r.split(";")).filter((c) => c[2] === "bye");
  const times = byes.map((c) => Number(c[0]));
  const lat = byes.map((c) => Number(c[1]));
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
