// A throwaway redis-server (Debian 12: 7.0) for integration tests and the
// bench: 127.0.0.1 on a free port, its own directory, AOF on with an fsync
// per write (`appendfsync always`: a reply means the write is on disk), no
// RDB snapshots. Started in the foreground, ready once it answers PING,
// stopped by the PID we spawned (SIGTERM, SIGKILL after 3 s); kill() is a
// SIGKILL of that PID, restart() starts it again on the same port and data.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { firstLine } from "./line-probe.js";
import { freePort } from "./ports.js";
import { exited, type SpawnedServer, spawnServer, waitExit } from "./process.js";

export interface RedisInstance {
  host: "127.0.0.1";
  port: number;
  url: string;
  dir: string;
  /** PID of the current server (changes on restart()). */
  readonly pid: number;
  /** SIGKILL, no shutdown: what put() resolved must be in the AOF. */
  kill(): Promise<void>;
  /** Starts it again on the same port and directory (after kill()). */
  restart(): Promise<void>;
  stop(): Promise<void>;
  output(): string;
}

const HOST = "127.0.0.1" as const;

/** Resolves true once the server answers PING with +PONG (RESP simple string). */
async function pong(port: number, timeoutMs: number): Promise<boolean> {
  return (await firstLine(port, timeoutMs, "PING\r\n"))?.startsWith("+PONG") === true;
}

export interface RedisOptions {
  /** The redis-server binary. Default $REDIS_SERVER, else `redis-server` on the PATH. */
  bin?: string;
  readyTimeoutMs?: number;
  /** AOF fsync policy: "always" (default: a reply means the write is on disk) or "everysec" (up to a second lost on a crash). */
  appendfsync?: "always" | "everysec";
}

export async function startRedis(opts: RedisOptions = {}): Promise<RedisInstance> {
  const bin = opts.bin ?? process.env.REDIS_SERVER ?? "redis-server";
  const readyTimeoutMs = opts.readyTimeoutMs ?? 10_000;
  const dir = await mkdtemp(join(tmpdir(), "cpm-redis-"));
  const port = await freePort(HOST);
  const args = [
    "--bind",
    HOST,
    "--port",
    String(port),
    "--dir",
    dir,
    "--daemonize",
    "no",
    "--save",
    "",
    "--appendonly",
    "yes",
    "--appendfsync",
    opts.appendfsync ?? "always",
    "--logfile",
    "",
  ];
  let server: SpawnedServer | undefined;

  const launch = async (): Promise<void> => {
    const s = spawnServer(bin, args, dir);
    server = s;
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      const spawnError = s.spawnError();
      if (spawnError) throw new Error(`redis-server not started: ${spawnError.message}`);
      if (exited(s.child))
        throw new Error(`redis-server exited early (${s.child.exitCode ?? s.child.signalCode}): ${s.output().slice(-4096)}`);
      if (await pong(port, 500)) return;
      if (Date.now() > deadline) {
        await s.stop();
        throw new Error(`redis-server not ready on ${HOST}:${port} within ${readyTimeoutMs} ms: ${s.output().slice(-4096)}`);
      }
      await sleep(25);
    }
  };

  try {
    await launch();
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  return {
    host: HOST,
    port,
    url: `redis://${HOST}:${port}`,
    dir,
    get pid() {
      return server?.pid ?? -1;
    },
    async kill() {
      const s = server;
      if (!s || exited(s.child)) return;
      process.kill(s.pid, "SIGKILL");
      await waitExit(s.child, 3000);
    },
    async restart() {
      await server?.stop();
      await launch();
    },
    async stop() {
      await server?.stop();
      await rm(dir, { recursive: true, force: true });
    },
    output: () => server?.output() ?? "",
  };
}
