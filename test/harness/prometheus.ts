// Scrapes of a Prometheus endpoint for assertions: the samples keyed by name
// and sorted labels, over the strict exposition parser of prom-text.ts.
import { parsePromText } from "./prom-text.js";

export type Samples = Map<string, number>;

export function sampleKey(name: string, labels: Record<string, string> = {}): string {
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}="${labels[k]}"`);
  return parts.length ? `${name}{${parts.join(",")}}` : name;
}

export function parseExposition(text: string): Samples {
  const out: Samples = new Map();
  for (const s of parsePromText(text).samples) out.set(sampleKey(s.name, s.labels), s.value);
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

/** Metric family names in a scrape: the # TYPE lines, and the sample names of an exporter that writes none (Kamailio's xhttp_prom). */
export function familyNames(text: string): Set<string> {
  const parsed = parsePromText(text);
  const names = new Set(parsed.types.keys());
  for (const s of parsed.samples) if (!names.has(s.name.replace(/_(bucket|sum|count)$/, ""))) names.add(s.name);
  return names;
}
