// Runs Kamailio with the example configuration (kamailio/kamailio.cfg, which
// includes the cpm-pf plugin) in the foreground on 127.0.0.1 for end-to-end
// tests. Each instance has its own run dir (pid file, ctl socket, -Y runtime
// dir), so parallel tests do not collide. Ready when an OPTIONS to it is
// answered with the instance id we gave it: two Kamailios can bind the same
// UDP port (SO_REUSEADDR), so "something answered" is not enough.
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createSocket } from "node:dgram";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "./ports.js";
import { exited, spawnServer, waitExit } from "./process.js";
import { REPO_ROOT } from "./sidecar.js";
import { waitFor } from "./wait.js";

const HOST = "127.0.0.1" as const;

export interface KamailioOptions {
  /** UDP and TCP port to listen on. Default: a free port. */
  sipPort?: number;
  /** Sidecar gRPC "host:port" (CPM_PF_GRPC_TARGET). */
  grpcTarget: string;
  /** Deadline of each sidecar call in ms (CPM_PF_DEADLINE_MS). Default: the cfg's (200). */
  deadlineMs?: number;
  /** Core async workers (ASYNC_WORKERS). Default: the cfg's (4). */
  asyncWorkers?: number;
  /** SIP worker processes (SIP_CHILDREN). Default: the cfg's (4). */
  children?: number;
  /** Extra -A defines, exactly as Kamailio takes them: "WITH_DEBUG", 'NAME="str"', "N=1". */
  defines?: string[];
  /** Configuration file. Default <repo>/kamailio/kamailio.cfg. */
  cfg?: string;
  /** Readiness timeout in ms. Default 10000. */
  readyTimeoutMs?: number;
  /** Shared memory MB (-m). Default 64. */
  shmMb?: number;
  /** Private memory MB per process (-M). Default 16. */
  pkgMb?: number;
  /** Kamailio's memory manager (-x): qm (the default, with its debugging checks), fm or tlsf. */
  memoryManager?: "qm" | "fm" | "tlsf";
  /**
   * Prometheus metrics (WITH_CPM_PF_METRICS) on this TCP port of 127.0.0.1
   * (CPM_PF_METRICS_PORT); 0: a free port. Default: no metrics socket.
   */
  metricsPort?: number;
}

export interface KamailioInstance {
  host: "127.0.0.1";
  sipPort: number;
  /** TCP port of http://127.0.0.1:<port>/metrics, when started with `metricsPort`. */
  metricsPort: number | undefined;
  /** "127.0.0.1:<port>", what SIPp sends to (UDP and TCP). */
  address: string;
  /** PID of the main process (children die with it). */
  pid: number;
  /** X-Instance value this instance answers OPTIONS with. */
  instance: string;
  runDir: string;
  /** SIGTERM the main process (SIGKILL its process group after 3 s), remove the run dir. */
  stop(): Promise<void>;
  /** Sends `signal` to the whole process group (main process and workers); for SIGKILL, resolves once the main process is gone. */
  kill(signal: NodeJS.Signals): Promise<void>;
  /** Everything Kamailio logged so far (-E: stderr). */
  logs(): string;
  /** `kamcmd` against this instance's ctl socket. */
  kamcmd(...args: string[]): Promise<string>;
  /** Value of a statistic (e.g. "cpm_pf_failsafe"); 0 when absent. */
  stat(name: string): Promise<number>;
  exited(): boolean;
}

const execFileP = promisify(execFile);

/** The OPTIONS sendOptions() sends from 127.0.0.1:lport. */
function optionsRequest(port: number, lport: number, transport: "UDP" | "TCP", opts: { user?: string; callId?: string }): string {
  const id = randomUUID();
  const target = opts.user ? `${opts.user}@${HOST}:${port}` : `${HOST}:${port}`;
  return [
    `OPTIONS sip:${target} SIP/2.0`,
    `Via: SIP/2.0/${transport} ${HOST}:${lport};branch=z9hG4bK-${id}`,
    "Max-Forwards: 70",
    `From: <sip:probe@${HOST}:${lport}>;tag=${id.slice(0, 8)}`,
    `To: <sip:${target}>`,
    `Call-ID: ${opts.callId ?? `probe-${id}`}`,
    "CSeq: 1 OPTIONS",
    "Content-Length: 0",
    "",
    "",
  ].join("\r\n");
}

/**
 * Sends one OPTIONS to 127.0.0.1:port (user part `user`, Call-ID `callId`)
 * and resolves with the response text, or "" after `timeoutMs` (at once after
 * sending when `timeoutMs` is 0). Over TCP (`transport: "tcp"`) on a
 * connection of its own, closed when it resolves.
 */
export function sendOptions(
  port: number,
  opts: { user?: string; callId?: string; timeoutMs?: number; transport?: "udp" | "tcp" } = {},
): Promise<string> {
  const timeoutMs = opts.timeoutMs ?? 300;
  if (opts.transport === "tcp") return sendOptionsTcp(port, opts, timeoutMs);
  return new Promise((resolve) => {
    const sock = createSocket("udp4");
    const done = (text: string) => {
      clearTimeout(timer);
      sock.close();
      resolve(text);
    };
    const timer = setTimeout(() => done(""), timeoutMs);
    sock.on("message", (msg) => done(msg.toString("utf8")));
    sock.on("error", () => done(""));
    sock.bind(0, HOST, () => {
      sock.send(optionsRequest(port, sock.address().port, "UDP", opts), port, HOST, () => {
        if (timeoutMs === 0) done("");
      });
    });
  });
}

function sendOptionsTcp(port: number, opts: { user?: string; callId?: string }, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    const sock = connect({ host: HOST, port });
    const done = () => {
      clearTimeout(timer);
      sock.destroy();
      resolve(text);
    };
    const timer = setTimeout(done, timeoutMs === 0 ? 1000 : timeoutMs);
    sock.on("data", (d: Buffer) => {
      text += d.toString("utf8");
      if (text.includes("\r\n\r\n")) done();
    });
    sock.on("error", done);
    sock.on("connect", () => {
      sock.write(optionsRequest(port, sock.localPort ?? 0, "TCP", opts), () => {
        // 0: sent is enough; leave the connection open a moment so the peer reads it
        if (timeoutMs === 0) setTimeout(done, 100);
      });
    });
  });
}

/** One OPTIONS to the proxy itself; resolves with the response text or "" on timeout. */
export function sipOptions(port: number, timeoutMs = 300): Promise<string> {
  return sendOptions(port, { timeoutMs });
}

export async function startKamailio(opts: KamailioOptions): Promise<KamailioInstance> {
  const sipPort = opts.sipPort ?? (await freePort());
  const metricsPort = opts.metricsPort === 0 ? await freePort() : opts.metricsPort;
  const runDir = await mkdtemp(join(tmpdir(), "cpm-kamailio-"));
  const instance = randomUUID();
  const cfg = opts.cfg ?? join(REPO_ROOT, "kamailio", "kamailio.cfg");
  const pidFile = join(runDir, "kamailio.pid");
  const ctl = `unix:${join(runDir, "kamailio_ctl")}`;
  // String defines keep their double quotes inside the value (-A 'N="v"').
  const defines = [
    `CPM_PF_GRPC_TARGET="${opts.grpcTarget}"`,
    `CPM_PF_PYTHON_SCRIPT="${join(REPO_ROOT, "kamailio", "python", "cpm_pf_bridge.py")}"`,
    `KAMAILIO_INSTANCE="${instance}"`,
    `CTL_SOCKET="${ctl}"`,
    ...(opts.deadlineMs !== undefined ? [`CPM_PF_DEADLINE_MS=${opts.deadlineMs}`] : []),
    ...(opts.asyncWorkers !== undefined ? [`ASYNC_WORKERS=${opts.asyncWorkers}`] : []),
    ...(opts.children !== undefined ? [`SIP_CHILDREN=${opts.children}`] : []),
    ...(metricsPort !== undefined ? ["WITH_CPM_PF_METRICS", `CPM_PF_METRICS_PORT=${metricsPort}`] : []),
    ...(opts.defines ?? []),
  ];
  const args = [
    "-DD",
    "-E",
    "-f",
    cfg,
    "-l",
    `udp:${HOST}:${sipPort}`,
    // RFC 3261 18: TCP on the same port (the PF's UA sends large requests over it)
    "-l",
    `tcp:${HOST}:${sipPort}`,
    "-m",
    String(opts.shmMb ?? 64),
    "-M",
    String(opts.pkgMb ?? 16),
    ...(opts.memoryManager ? ["-x", opts.memoryManager] : []),
    "-Y",
    runDir,
    "-P",
    pidFile,
    ...defines.flatMap((d) => ["-A", d]),
  ];

  const server = spawnServer("kamailio", args, runDir);
  const { child, pid } = server;
  const stopChild = server.stop;

  try {
    await waitFor(
      async () => {
        const spawnError = server.spawnError();
        if (spawnError) throw spawnError;
        if (exited(child)) throw new Error(`kamailio exited early (${child.exitCode ?? child.signalCode})`);
        const answer = await sipOptions(sipPort, 200);
        return answer.startsWith("SIP/2.0 200") && answer.includes(`X-Instance: ${instance}`);
      },
      opts.readyTimeoutMs ?? 10_000,
      50,
      `kamailio answering OPTIONS on ${HOST}:${sipPort}`,
    );
    // -P is written by the main process; it must be the process we spawned.
    const filePid = Number((await readFile(pidFile, "utf8").catch(() => "")).trim());
    if (filePid && filePid !== pid) throw new Error(`pid file says ${filePid}, spawned ${pid}`);
  } catch (err) {
    await stopChild();
    await rm(runDir, { recursive: true, force: true });
    throw new Error(`${(err as Error).message}\n--- kamailio output ---\n${server.output().slice(-6000)}`);
  }

  const kamcmd = async (...cmd: string[]) => {
    const { stdout } = await execFileP("kamcmd", ["-s", ctl, ...cmd], { timeout: 3000 });
    return stdout;
  };

  return {
    host: HOST,
    sipPort,
    metricsPort,
    address: `${HOST}:${sipPort}`,
    pid,
    instance,
    runDir,
    async stop() {
      await stopChild();
      await rm(runDir, { recursive: true, force: true });
    },
    async kill(signal: NodeJS.Signals) {
      try {
        process.kill(-pid, signal);
      } catch {
        // group already gone
      }
      if (signal === "SIGKILL") await waitExit(child, 3000);
    },
    logs: () => server.output(),
    kamcmd,
    async stat(name: string) {
      // output: "<group>:<name> = <value>" lines
      const out = await kamcmd("stats.get_statistics", name);
      const m = new RegExp(`:${name} = (\\d+)`).exec(out);
      return m ? Number(m[1]) : 0;
    },
    exited: () => exited(child),
  };
}

/** Whether `kamailio`'s health timer last found `target` serving (htable cpmpf_health, route[CPM_PF_HEALTH]); false before its first round. */
export async function seenServing(kamailio: KamailioInstance, target: string): Promise<boolean> {
  const out = await kamailio.kamcmd("htable.get", "cpmpf_health", `s:${target}`).catch(() => "");
  return /\bvalue:\s*0\b/.test(out);
}

/** Waits until `kamailio`'s health timer has found every one of `targets` serving: its decisions then go in the configured order. */
export async function waitServing(kamailio: KamailioInstance, targets: readonly string[], ms = 8000): Promise<void> {
  await waitFor(
    async () => (await Promise.all(targets.map((t) => seenServing(kamailio, t)))).every(Boolean),
    ms,
    50,
    `${targets.join(", ")} serving at Kamailio`,
  );
}
