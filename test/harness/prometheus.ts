// Reads a Prometheus text exposition (format 0.0.4) scrape: each sample line
// `name{label="v",...} value` into a map keyed by name and sorted labels.
// A line that is neither a sample, a comment nor blank fails the parse.

export type Samples = Map<string, number>;

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function sampleKey(name: string, labels: Record<string, string> = {}): string {
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}="${labels[k]}"`);
  return parts.length ? `${name}{${parts.join(",")}}` : name;
}

export function parseExposition(text: string): Samples {
  const out: Samples = new Map();
  for (const [i, line] of text.split("\n").entries()) {
    if (line === "" || line.startsWith("#")) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`line ${i + 1} is no Prometheus sample: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(LABEL)) labels[l[1] as string] = l[2] as string;
    // Go's ParseFloat spellings (what Prometheus reads): Inf and NaN in any case
    const raw = (m[3] as string).toLowerCase();
    const v = raw === "+inf" || raw === "inf" ? Infinity : raw === "-inf" ? -Infinity : raw === "nan" ? Number.NaN : Number(raw);
    if (Number.isNaN(v) && raw !== "nan") throw new Error(`line ${i + 1}: value ${m[3]}`);
    out.set(sampleKey(m[1] as string, labels), v);
  }
  return out;
}

export async function scrape(url: string): Promise<{ text: string; samples: Samples; contentType: string }> {
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`${url}: HTTP ${res.status}`);
  const text = await res.text();
  return { text, samples: parseExposition(text), contentType: res.headers.get("content-type") ?? "" };
}

/** The sample's value, 0 when absent (a counter not touched yet). */
export function value(samples: Samples, name: string, labels: Record<string, string> = {}): number {
  return samples.get(sampleKey(name, labels)) ?? 0;
}

/** Metric family names in a scrape (histograms' _bucket/_sum/_count folded into the family). */
export function familyNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) \S+$/gm)) names.add(m[1] as string);
  return names;
}
