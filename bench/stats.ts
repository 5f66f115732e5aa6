// Small helpers for benchmark reports.
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}

export function summarize(latenciesMs: number[], elapsedMs: number) {
  const s = [...latenciesMs].sort((a, b) => a - b);
  return { count: s.length, perSecond: (s.length * 1000) / elapsedMs, p50: percentile(s, 50), p99: percentile(s, 99) };
}

export function fmt(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toFixed(digits) : "n/a";
}
