// Polls a predicate until it returns a truthy value (resolved with it) or the
// timeout passes (rejects, naming what was awaited). A predicate that throws
// counts as "not yet"; the last error is kept in the timeout message.
import { setTimeout as sleep } from "node:timers/promises";

export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  timeoutMs = 5000,
  intervalMs = 50,
  what = "condition",
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await predicate();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : "";
      throw new Error(`waitFor: ${what} not met within ${timeoutMs} ms${why}`);
    }
    await sleep(intervalMs);
  }
}
