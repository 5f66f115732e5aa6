// Runs one target: hostile inputs first, then seeded mutations, counting
// what each input came to. An escape (an exception that is not CpmError, or
// a broken invariant) is kept with the input that caused it, for replay.
import { nextInput } from "./mutate.js";
import { Rng } from "./rng.js";
import { classify, type FuzzTarget } from "./targets.js";

export interface Escape {
  input: string;
  error: string;
}

export interface FuzzResult {
  target: string;
  inputs: number;
  /** accepted, or the CpmError code of a refusal -> count */
  outcomes: Record<string, number>;
  escapes: number;
  /** The first escapes (at most 5), inputs in base64. */
  samples: Escape[];
  /** The slowest single input. */
  maxMs: number;
  elapsedMs: number;
}

export interface RunOptions {
  seed: number;
  count: number;
  /** Stop early after this long (bounded run); the count done is reported. */
  timeMs?: number;
  /** Called every `every` inputs (progress for the hang watchdog). */
  onProgress?: (done: number) => void;
  every?: number;
}

export function runTarget(target: FuzzTarget, opts: RunOptions): FuzzResult {
  const rng = new Rng(opts.seed);
  const result: FuzzResult = { target: target.name, inputs: 0, outcomes: {}, escapes: 0, samples: [], maxMs: 0, elapsedMs: 0 };
  const started = performance.now();
  const every = opts.every ?? 1000;
  const hostile = target.hostile ?? [];
  const pool = [...target.seeds, ...hostile];
  for (let i = 0; i < opts.count; i++) {
    const input = i < hostile.length ? (hostile[i] as Buffer) : nextInput(rng, pool, target.dictionary);
    const t0 = performance.now();
    try {
      const outcome = classify(target, input, rng);
      result.outcomes[outcome] = (result.outcomes[outcome] ?? 0) + 1;
    } catch (err) {
      result.escapes++;
      if (result.samples.length < 5) {
        result.samples.push({ input: input.toString("base64"), error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
      }
    }
    const ms = performance.now() - t0;
    if (ms > result.maxMs) result.maxMs = ms;
    result.inputs++;
    if (i % every === 0) {
      opts.onProgress?.(i);
      if (opts.timeMs !== undefined && performance.now() - started > opts.timeMs) break;
    }
  }
  result.elapsedMs = performance.now() - started;
  return result;
}
