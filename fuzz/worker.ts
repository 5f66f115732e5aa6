// One target in a worker thread, so that the runner can stop an input that
// never returns (a hang) and still report the others.
import { parentPort, workerData } from "node:worker_threads";
import { runTarget } from "./engine.js";
import { TARGETS } from "./targets.js";

const { name, seed, count, timeMs } = workerData as { name: string; seed: number; count: number; timeMs: number };
const target = TARGETS.find((t) => t.name === name);
if (!target) throw new Error(`no fuzz target ${name}`);
const result = runTarget(target, { seed, count, timeMs, onProgress: (done) => parentPort?.postMessage({ type: "progress", done }) });
parentPort?.postMessage({ type: "result", result });
