// Network garbage into a running sidecar: many TCP connections to its MSRP
// listener and its gRPC port, each sending random or mutated bytes, in
// rounds. After each round the sidecar must be alive and its health service
// answer; its RSS is printed per round (garbage connections must leave
// nothing behind).
import { readFileSync } from "node:fs";
import { connect } from "node:net";
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
  alive: boolean;
  failure?: string;
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : 0;
}

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** One connection: send `payload` in a few writes, then wait up to `waitMs` for the sidecar to close, then close. */
function garbageConnection(port: number, payload: Buffer, waitMs: number): Promise<{ sent: number; closedByPeer: boolean }> {
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
  try {
    const mediaPort = await freePort();
    sidecar = await startSidecar({
      CPM_PF__STORE__HOST: dovecot.host,
      CPM_PF__STORE__PORT: String(dovecot.port),
      CPM_PF__STORE__USER: dovecot.user,
      CPM_PF__STORE__PASSWORD: dovecot.password,
      CPM_PF__MEDIA__ENABLED: "true",
      CPM_PF__MEDIA__PORT: String(mediaPort),
      CPM_PF__MEDIA__UNAUTHENTICATEDTIMEOUTMS: "1000",
    });
    const sc = sidecar;
    const result: NetworkResult = { rssBeforeKb: rssKb(sc.pid), rounds: [], alive: true };
    for (let round = 1; round <= opts.rounds; round++) {
      let bytesSent = 0;
      let closedBySidecar = 0;
      const outcomes = await pool(opts.connections, 100, async (i) => {
        // alternate the two ports; MSRP gets mutated frames (some never ending), gRPC a preface and noise
        const toMsrp = i % 4 !== 3;
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
      const healthy = alive && (await healthStatus(sc.target, credentials.createInsecure()).catch(() => "down")) === "SERVING";
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
    }
    return result;
  } finally {
    await sidecar?.stop();
    await dovecot.stop();
  }
}
