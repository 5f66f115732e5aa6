// Network garbage into a running sidecar: many TCP connections to its MSRP
// listener, its gRPC port and its metrics listener, each sending random or
// mutated bytes, in rounds. After each round the sidecar must be alive, its
// health service answer and /metrics still serve; its RSS is printed per round. RSS follows the heap's high-water
// mark, so what garbage connections leave behind is measured as the live
// heap: the size of a heap snapshot (taken after a full GC, on SIGUSR2)
// after the first round and after the last.
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { credentials } from "@grpc/grpc-js";
import { type DovecotInstance, startDovecot } from "../test/harness/dovecot.js";
import { healthStatus } from "../test/harness/health.js";
import { freePort } from "../test/harness/ports.js";
import { type SidecarInstance, startSidecar } from "../test/harness/sidecar.js";
import { nextInput } from "./mutate.js";
import { Rng } from "./rng.js";
import { TARGETS } from "./targets.js";

export interface NetworkRound {
  round: number;
  connections: number;
  bytesSent: number;
  /** Connections the sidecar closed itself within the wait. */
  closedBySidecar: number;
  rssKb: number;
  healthy: boolean;
}

export interface NetworkResult {
  rssBeforeKb: number;
  rounds: NetworkRound[];
  /** Heap snapshot bytes after the first and after the last round. */
  liveHeap: { first: number; last: number };
  alive: boolean;
  failure?: string;
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : 0;
}

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** One connection: send `payload` in a few writes, then wait up to `waitMs` for the sidecar to close, then close. */
export function garbageConnection(port: number, payload: Buffer, waitMs: number): Promise<{ sent: number; closedByPeer: boolean }> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    let closedByPeer = false;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ sent: payload.length, closedByPeer });
    };
    const timer = setTimeout(finish, waitMs + 2000);
    s.on("error", finish);
    s.on("data", () => undefined);
    s.on("end", () => {
      closedByPeer = true;
      finish();
    });
    s.on("close", () => {
      closedByPeer = true;
      finish();
    });
    s.on("connect", () => {
      const cut = Math.floor(payload.length / 2);
      s.write(payload.subarray(0, cut));
      s.write(payload.subarray(cut), () => setTimeout(finish, waitMs));
    });
  });
}

/** Asks the sidecar for a heap snapshot and returns its size once written. */
async function liveHeapBytes(pid: number, dir: string): Promise<number> {
  const before = new Set(readdirSync(dir));
  process.kill(pid, "SIGUSR2");
  for (let waited = 0; waited < 30_000; waited += 250) {
    await new Promise((r) => setTimeout(r, 250));
    const fresh = readdirSync(dir).find((f) => !before.has(f) && f.endsWith(".heapsnapshot"));
    if (fresh) {
      // written once its size stops changing
      let size = -1;
      for (;;) {
        const now = statSync(join(dir, fresh)).size;
        if (now === size && now > 0) return now;
        size = now;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }
  return 0;
}

async function pool<T>(n: number, width: number, job: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, n) }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await job(i);
      }
    }),
  );
  return out;
}

/** An HTTP request to the metrics listener: well-formed, cut short, with a mangled line, or noise after a request line. */
function httpGarbage(rng: Rng): Buffer {
  const request = Buffer.from(`GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ${"a".repeat(rng.int(4096))}\r\n\r\n`);
  switch (rng.int(4)) {
    case 0:
      return request;
    case 1:
      return request.subarray(0, rng.int(request.length));
    case 2: {
      const b = Buffer.from(request);
      for (let k = 0; k < 8; k++) b[rng.int(b.length)] = rng.int(256);
      return b;
    }
    default:
      return Buffer.concat([Buffer.from("POST /metrics HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"), rng.bytes(rng.int(2048))]);
  }
}

export async function runNetwork(opts: {
  seed: number;
  rounds: number;
  connections: number;
  log: (line: string) => void;
}): Promise<NetworkResult> {
  const rng = new Rng(opts.seed);
  const msrp = TARGETS.find((t) => t.name === "msrp-parser");
  if (!msrp) throw new Error("no msrp-parser target");
  const dovecot: DovecotInstance = await startDovecot();
  let sidecar: SidecarInstance | undefined;
  const snapshots = mkdtempSync(join(tmpdir(), "cpm-pf-fuzz-heap-"));
  const nodeArgs = process.env.SIDECAR_NODE_ARGS;
  process.env.SIDECAR_NODE_ARGS = `${nodeArgs ?? ""} --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${snapshots}`;
  try {
    const mediaPort = await freePort();
    const metricsPort = await freePort();
    sidecar = await startSidecar({
      CPM_PF__METRICS__ENABLED: "true",
      CPM_PF__METRICS__PORT: String(metricsPort),
      CPM_PF__STORE__HOST: dovecot.host,
      CPM_PF__STORE__PORT: String(dovecot.port),
      CPM_PF__STORE__USER: dovecot.user,
      CPM_PF__STORE__PASSWORD: dovecot.password,
      CPM_PF__MEDIA__ENABLED: "true",
      CPM_PF__MEDIA__PORT: String(mediaPort),
      CPM_PF__MEDIA__UNAUTHENTICATEDTIMEOUTMS: "1000",
    });
    const sc = sidecar;
    if (nodeArgs === undefined) delete process.env.SIDECAR_NODE_ARGS;
    else process.env.SIDECAR_NODE_ARGS = nodeArgs;
    const result: NetworkResult = { rssBeforeKb: rssKb(sc.pid), rounds: [], alive: true, liveHeap: { first: 0, last: 0 } };
    // round 0 warms up (JIT, pools, the first snapshot's own memory); rounds 1..N are compared with it
    for (let round = 0; round <= opts.rounds; round++) {
      let bytesSent = 0;
      let closedBySidecar = 0;
      const outcomes = await pool(opts.connections, 100, async (i) => {
        // rotate the ports: MSRP gets mutated frames (some never ending), gRPC a preface and noise,
        // the metrics listener HTTP requests cut, mangled or followed by noise
        const kind = i % 4;
        if (kind === 2) return garbageConnection(metricsPort, httpGarbage(rng), 50 + rng.int(150));
        const toMsrp = kind !== 3;
        const payload = toMsrp
          ? nextInput(rng, msrp.seeds, msrp.dictionary)
          : Buffer.concat([rng.int(2) ? PREFACE : Buffer.alloc(0), rng.bytes(rng.int(2048))]);
        return garbageConnection(toMsrp ? mediaPort : sc.port, payload, 50 + rng.int(150));
      });
      for (const o of outcomes) {
        bytesSent += o.sent;
        if (o.closedByPeer) closedBySidecar++;
      }
      const alive = !sc.exited();
      const metricsUp =
        alive &&
        (await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then(
          (r) => r.status,
          () => 0,
        )) === 200;
      const healthy = metricsUp && (await healthStatus(sc.target, credentials.createInsecure()).catch(() => "down")) === "SERVING";
      const r: NetworkRound = {
        round,
        connections: opts.connections,
        bytesSent,
        closedBySidecar,
        rssKb: alive ? rssKb(sc.pid) : 0,
        healthy,
      };
      result.rounds.push(r);
      opts.log(
        `  round ${round}: ${r.connections} connections, ${(r.bytesSent / 1024).toFixed(0)} KiB, closed by the sidecar ${r.closedBySidecar}, RSS ${(r.rssKb / 1024).toFixed(1)} MiB, health ${healthy ? "SERVING" : "DOWN"}`,
      );
      if (!healthy) {
        result.alive = alive;
        result.failure = alive ? "health check failed" : `sidecar exited:\n${sc.logs().slice(-2000)}`;
        break;
      }
      // the connections of the round closed and their timers (unauthenticated timeout) fired
      if (round === 0 || round === opts.rounds) {
        await new Promise((r) => setTimeout(r, 2500));
        const bytes = await liveHeapBytes(sc.pid, snapshots);
        if (round === 0) {
          result.liveHeap.first = bytes;
          result.rssBeforeKb = rssKb(sc.pid);
        }
        result.liveHeap.last = bytes;
      }
    }
    return result;
  } finally {
    await sidecar?.stop();
    await dovecot.stop();
    rmSync(snapshots, { recursive: true, force: true });
  }
}
