// npm run fuzz: every network-input parser with seeded random and mutated
// inputs (each in a worker thread, so a hang is caught), then garbage into a
// running sidecar's MSRP and gRPC ports. Prints inputs, outcomes by kind,
// escapes, hangs and RSS per round; exits 1 on any escape, hang or sidecar
// failure. Not part of the test suite (a short seeded run is: test/unit/fuzz).
//
//   FUZZ_SEED=1  FUZZ_SCALE=1 (x the full counts)  FUZZ_TIME_S=120 (per target)
//   FUZZ_HANG_MS=5000  FUZZ_ONLY=msrp-parser,xml,network  FUZZ_ROUNDS=4  FUZZ_CONNECTIONS=1500
import { Worker } from "node:worker_threads";
import type { FuzzResult } from "./engine.js";
import { runNetwork } from "./network.js";
import { TARGETS } from "./targets.js";

const SEED = Number(process.env.FUZZ_SEED ?? 1);
const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const TIME_MS = Number(process.env.FUZZ_TIME_S ?? 120) * 1000;
const HANG_MS = Number(process.env.FUZZ_HANG_MS ?? 5000);
const ONLY = (process.env.FUZZ_ONLY ?? "").split(",").filter(Boolean);
const runs = (name: string) => ONLY.length === 0 || ONLY.includes(name);

type Outcome = { result?: FuzzResult; hang?: string; crash?: string };

function runInWorker(name: string, count: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const worker = new Worker(new URL("./worker.js", import.meta.url), { workerData: { name, seed: SEED, count, timeMs: TIME_MS } });
    let last = Date.now();
    let done = 0;
    const watchdog = setInterval(() => {
      if (Date.now() - last > HANG_MS) {
        clearInterval(watchdog);
        void worker.terminate();
        resolve({ hang: `no progress for ${HANG_MS} ms after ${done} inputs (replay: FUZZ_SEED=${SEED} FUZZ_ONLY=${name})` });
      }
    }, 250);
    worker.on("message", (m: { type: string; done?: number; result?: FuzzResult }) => {
      last = Date.now();
      if (m.type === "progress") done = m.done ?? done;
      if (m.type === "result") {
        clearInterval(watchdog);
        resolve(m.result ? { result: m.result } : {});
      }
    });
    worker.on("error", (err) => {
      clearInterval(watchdog);
      resolve({ crash: String(err) });
    });
  });
}

function summary(outcomes: Record<string, number>): string {
  return Object.entries(outcomes)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ${n}`)
    .join(", ");
}

async function main() {
  let failures = 0;
  console.log(`cpm-pf fuzz, seed ${SEED}, scale ${SCALE}, ${TIME_MS / 1000} s per target at most, hang after ${HANG_MS} ms`);
  for (const target of TARGETS.filter((t) => runs(t.name))) {
    const count = Math.max(1, Math.round(target.count * SCALE));
    const o = await runInWorker(target.name, count);
    if (o.result) {
      const r = o.result;
      const rate = r.inputs / (r.elapsedMs / 1000);
      console.log(
        `${r.target.padEnd(22)} inputs ${String(r.inputs).padStart(8)}  escapes ${r.escapes}  hangs 0  slowest ${r.maxMs.toFixed(1)} ms  ${rate.toFixed(0)}/s  | ${summary(r.outcomes)}`,
      );
      if (r.inputs < count) console.log(`${"".padEnd(22)} (time bound: ${r.inputs} of ${count})`);
      for (const s of r.samples)
        console.log(`${"".padEnd(22)} escape: ${s.error}\n${"".padEnd(22)}   input (base64): ${s.input.slice(0, 200)}`);
      if (r.escapes > 0) failures++;
    } else {
      console.log(`${target.name.padEnd(22)} ${o.hang ? `HANG: ${o.hang}` : `CRASH: ${o.crash}`}`);
      failures++;
    }
  }
  if (runs("network")) {
    const rounds = Number(process.env.FUZZ_ROUNDS ?? 4);
    const connections = Number(process.env.FUZZ_CONNECTIONS ?? 1500);
    console.log(`network garbage into a running sidecar (MSRP, gRPC and metrics ports), ${rounds} rounds x ${connections} connections`);
    const net = await runNetwork({ seed: SEED, rounds, connections, log: (l) => console.log(l) });
    const last = net.rounds[net.rounds.length - 1];
    console.log(
      `  RSS after the warm-up round ${(net.rssBeforeKb / 1024).toFixed(1)} MiB, after the last ${((last?.rssKb ?? 0) / 1024).toFixed(1)} MiB; sidecar ${net.alive ? "alive" : "DEAD"}`,
    );
    const { first, last: lastHeap } = net.liveHeap;
    const grew = lastHeap - first;
    console.log(
      `  live heap (snapshot after a full GC) after the warm-up round ${(first / 1048576).toFixed(2)} MiB, after round ${net.rounds.length - 1} ${(lastHeap / 1048576).toFixed(2)} MiB (${grew >= 0 ? "+" : ""}${(grew / 1024).toFixed(0)} KiB)`,
    );
    // what the connections left behind: more than 1 KiB per connection of the later rounds is a leak
    const allowed = 1024 * connections * Math.max(1, net.rounds.length - 1); // rounds[0] is the warm-up
    if (!net.failure && net.rounds.length > 1 && grew > allowed)
      net.failure = `live heap grew ${grew} bytes over the rounds (> ${allowed})`;
    if (net.failure) {
      console.log(`  FAILED: ${net.failure}`);
      failures++;
    }
  }
  console.log(failures === 0 ? "fuzz: no escape, no hang" : `fuzz: ${failures} target(s) failed`);
  process.exit(failures === 0 ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
