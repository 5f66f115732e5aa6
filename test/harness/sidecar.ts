// Runs the real cpm-pf sidecar (`node dist/bundle/sidecar.mjs`, what `npm start` runs) on 127.0.0.1 for
// end-to-end tests. Ready when it logs "sidecar ready" (JSON lines on stderr;
// the text is in "message", winston's field, or "msg"). Stopped by the PID we
// spawned, never by name.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "./ports.js";
import { exited, spawnServer, waitExit } from "./process.js";
import { waitFor } from "./wait.js";

/** Repository root (this file runs from dist/test/harness/). */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

export interface SidecarOptions {
  /** Readiness timeout in ms. Default 10000. */
  readyTimeoutMs?: number;
  /** Entry script. Default <repo>/dist/bundle/sidecar.mjs. */
  entry?: string;
  /** Listen on a Unix domain socket in the sidecar's temp dir (grpc.socket) instead of TCP. */
  unixSocket?: boolean;
  /** Every chunk of output as it comes (logs() keeps only the last ~1 MB of a long run). */
  onOutput?: (chunk: string) => void;
}

export interface SidecarInstance {
  host: "127.0.0.1";
  port: number;
  /** "127.0.0.1:<port>" or "unix:<path>", for Kamailio's CPM_PF_GRPC_TARGET. */
  target: string;
  pid: number;
  /** Stop gracefully (SIGTERM, SIGKILL after 3 s) and remove the temp dirs. */
  stop(): Promise<void>;
  /** Send a signal (e.g. SIGKILL for fail-safe tests, SIGSTOP to freeze it); resolves once it exited (not for SIGSTOP). */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Everything the process wrote so far (stderr and stdout). */
  logs(): string;
  /** The JSON log lines parsed (lines that are not JSON are skipped); `msg` = the line's "msg" or "message". */
  logLines(): Record<string, unknown>[];
  exited(): boolean;
}

/**
 * Starts the sidecar with `env` (CPM_PF__* keys) on top of defaults the test
 * needs: a free gRPC port on 127.0.0.1 and fresh spool/state directories.
 */
export async function startSidecar(env: Record<string, string> = {}, opts: SidecarOptions = {}): Promise<SidecarInstance> {
  const readyTimeoutMs = opts.readyTimeoutMs ?? 10_000;
  const entry = opts.entry ?? join(REPO_ROOT, "dist", "bundle", "sidecar.mjs");
  const dir = await mkdtemp(join(tmpdir(), "cpm-sidecar-"));
  const port = env.CPM_PF__GRPC__PORT ? Number(env.CPM_PF__GRPC__PORT) : await freePort();

  // Only the variables we mean: an unrelated CPM_PF__* in the caller's
  // environment would be rejected by the sidecar's config loader.
  const base: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.startsWith("CPM_PF")) base[k] = v;
  }
  const childEnv: Record<string, string> = {
    // as npm start, the systemd unit and the Docker image start it
    UV_THREADPOOL_SIZE: "16",
    ...base,
    CPM_PF__GRPC__HOST: "127.0.0.1",
    CPM_PF__GRPC__PORT: String(port),
    CPM_PF__STORE__SPOOLDIR: join(dir, "spool"),
    CPM_PF__SESSION__STATEDIR: join(dir, "state"),
    ...(opts.unixSocket ? { CPM_PF__GRPC__SOCKET: join(dir, "grpc.sock") } : {}),
    ...env,
  };

  // Node flags for the sidecar (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile a bench run).
  const nodeArgs = (process.env.SIDECAR_NODE_ARGS ?? "").split(" ").filter(Boolean);
  const server = spawnServer(process.execPath, [...nodeArgs, entry], REPO_ROOT, childEnv);
  const { child } = server;
  const stopChild = server.stop;
  if (opts.onOutput) {
    const fn = opts.onOutput;
    child.stdout?.on("data", (d: Buffer) => fn(d.toString("utf8")));
    child.stderr?.on("data", (d: Buffer) => fn(d.toString("utf8")));
  }

  try {
    await waitFor(
      () => {
        const spawnError = server.spawnError();
        if (spawnError) throw spawnError;
        if (exited(child)) throw new Error(`sidecar exited early (${child.exitCode ?? child.signalCode})`);
        // winston's JSON format calls the field "message"; accept "msg" too
        return /"(?:msg|message)"\s*:\s*"sidecar ready"/.test(server.output());
      },
      readyTimeoutMs,
      25,
      "sidecar ready",
    );
  } catch (err) {
    await stopChild();
    await rm(dir, { recursive: true, force: true });
    throw new Error(`${(err as Error).message}\n--- sidecar output ---\n${server.output().slice(-4000)}`);
  }

  const pid = child.pid as number;
  return {
    host: "127.0.0.1",
    port,
    target: childEnv.CPM_PF__GRPC__SOCKET ? `unix:${childEnv.CPM_PF__GRPC__SOCKET}` : `127.0.0.1:${port}`,
    pid,
    async stop() {
      await stopChild();
      await rm(dir, { recursive: true, force: true });
    },
    async kill(signal: NodeJS.Signals = "SIGKILL") {
      if (exited(child)) return;
      try {
        process.kill(pid, signal);
      } catch {
        return;
      }
      if (signal === "SIGSTOP" || signal === "SIGCONT") return;
      await waitExit(child, 3000);
    },
    logs: () => server.output(),
    logLines: () =>
      server
        .output()
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .flatMap((l) => {
          try {
            const rec = JSON.parse(l) as Record<string, unknown>;
            return [{ ...rec, msg: rec.msg ?? rec.message }];
          } catch {
            return [];
          }
        }),
    exited: () => exited(child),
  };
}
