// BYE transactions through Kamailio, three ways, in one run on one machine:
//   (a) the same kamailio.cfg with WITH_CPM_PF_BYPASS: a plain relay, no sidecar
//   (b) the PF in proxy mode: every INVITE observed, every BYE decided by the sidecar
//   (c) the PF in B2BUA mode: as (b), plus a GSO stored in Dovecot per BYE (cause 480)
// SIPp plays the Controlling Function (closed loop: at most `concurrent` calls
// at once, no pauses) and the client; BYE -> 200 OK response times come from
// SIPp's rtt trace (ms resolution).
import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DovecotInstance } from "../test/harness/dovecot.js";
import { storeEnv } from "../test/harness/group-chat.js";
import { type KamailioInstance, startKamailio } from "../test/harness/kamailio.js";
import { freePort } from "../test/harness/ports.js";
import { REPO_ROOT, startSidecar } from "../test/harness/sidecar.js";
import { waitFor } from "../test/harness/wait.js";
import { summarize } from "./stats.js";

/** Transactions linger in shared memory for the tm wait timer: room for thousands of calls. */
const SHM_MB = 512;
/** Kamailio core async workers (the knob that bounds sidecar decisions per second). */
const ASYNC_WORKERS = Number(process.env.BENCH_ASYNC_WORKERS ?? 4);
/** Extra -A defines for the PF cases, space-separated (e.g. WITH_CPM_PF_OBSERVE_NOWAIT). */
const PF_DEFINES = (process.env.BENCH_PF_DEFINES ?? "").split(" ").filter(Boolean);

export interface SipBenchCase {
  name: string;
  byesPerSecond: number;
  p50: number;
  p99: number;
  byes: number;
  failed: number;
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

async function playCalls(
  kamailio: KamailioInstance,
  calls: number,
  concurrent: number,
  reason: string,
): Promise<Omit<SipBenchCase, "name">> {
  const dir = await mkdtemp(join(tmpdir(), "cpm-bench-sipp-"));
  const scenarios = join(REPO_ROOT, "test", "scenarios");
  const clientPort = await freePort();
  const common = ["-i", "127.0.0.1", "-nostdin", "-d", "0", "-timeout", "180s", "-timeout_error", "-m", String(calls)];
  const uas = run(["-sf", join(scenarios, "client-uas.xml"), "-p", String(clientPort), ...common], dir);
  await waitFor(() => udpBound(clientPort), 5000, 20, "client SIPp bound");
  const uacCode = await run(
    [
      kamailio.address,
      "-sf",
      join(scenarios, "cf-invite-bye.xml"),
      "-p",
      String(await freePort()),
      ...common,
      "-r",
      "100000",
      "-l",
      String(concurrent),
      "-trace_rtt",
      "-rtt_freq",
      "1",
      "-key",
      "client_port",
      String(clientPort),
      "-key",
      "conversation_id",
      "conv-bench",
      "-key",
      "contribution_id",
      "contrib-bench",
      "-key",
      "bye_headers",
      reason ? `\r\nReason: ${reason}` : "",
    ],
    dir,
  );
  const uasCode = await uas;
  const csv = (await readdir(dir)).find((f) => f.endsWith("_rtt.csv"));
  const rows = csv ? (await readFile(join(dir, csv), "utf8")).split("\n").slice(1) : [];
  const byes = rows.map((r) => r.split(";")).filter((c) => c[2] === "bye");
  const times = byes.map((c) => Number(c[0]));
  const lat = byes.map((c) => Number(c[1]));
  const spanMs = times.length > 1 ? (times[times.length - 1] as number) - (times[0] as number) : Number.NaN;
  await rm(dir, { recursive: true, force: true });
  const s = summarize(lat, spanMs);
  return {
    byesPerSecond: ((byes.length - 1) * 1000) / spanMs,
    p50: s.p50,
    p99: s.p99,
    byes: byes.length,
    failed: (uacCode === 0 ? 0 : 1) + (uasCode === 0 ? 0 : 1),
  };
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
      out.push({ name, ...(await playCalls(kamailio, calls, concurrent, "SIP;cause=480")) });
    } finally {
      await kamailio.stop();
      await sidecar.stop();
    }
  }
  return out;
}
