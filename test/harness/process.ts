// Child-process helpers shared by the harnesses: every server a test starts is
// watched and stopped by the PID the harness spawned.
import { type ChildProcess, spawn } from "node:child_process";

export function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Resolves true once the child exited, false after `ms`. */
export function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (exited(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

export interface SpawnedServer {
  child: ChildProcess;
  pid: number;
  /** Everything it wrote so far (stdout + stderr, last ~1 MB). */
  output(): string;
  /** Set when the spawn itself failed (binary missing...). */
  spawnError(): Error | undefined;
  /** SIGCONT + SIGTERM the PID, wait up to 3 s, then SIGKILL whatever is left of its process group. */
  stop(): Promise<void>;
}

/**
 * Spawns a server in its own process group (detached), so that children it
 * forks (Kamailio's workers) can be killed by the group id (= our PID) if the
 * main process does not take them down.
 */
export function spawnServer(cmd: string, args: string[], cwd: string, env?: NodeJS.ProcessEnv): SpawnedServer {
  const child = spawn(cmd, args, { cwd, env: env ?? process.env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const keep = (d: Buffer) => {
    output += d.toString("utf8");
    if (output.length > 2_000_000) output = output.slice(-1_000_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  let error: Error | undefined;
  child.once("error", (err) => {
    error = err;
  });
  const pid = child.pid as number;
  return {
    child,
    pid,
    output: () => output,
    spawnError: () => error,
    async stop() {
      if (pid === undefined) return;
      if (!exited(child)) {
        try {
          process.kill(pid, "SIGCONT"); // in case a test froze it
          process.kill(pid, "SIGTERM");
        } catch {
          // already gone
        }
        await waitExit(child, 3000);
      }
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // group empty
      }
      await waitExit(child, 2000);
    },
  };
}
