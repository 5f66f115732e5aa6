// The metric names a PromQL expression reads (for checking dashboards and
// alert rules against a scrape): string literals, label matchers, ranges and
// grouping clauses removed, then every identifier that is no function call,
// keyword or number.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { REPO_ROOT } from "./sidecar.js";

const OPS = join(REPO_ROOT, "ops");

const KEYWORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "and",
  "or",
  "unless",
  "bool",
  "offset",
  "inf",
  "nan",
]);

export function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, "")
    .replace(/\[[^\]]*\]/g, "")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "");
  const names = new Set<string>();
  for (const m of bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?/g)) {
    const [token, call] = [m[0].replace(/\s*\($/, ""), m[1]];
    if (call || KEYWORDS.has(token.toLowerCase())) continue;
    names.add(token);
  }
  return [...names];
}

/** Whether `name` is a series of one of the scrape's families (a histogram's _bucket, _sum and _count included). */
export function inFamilies(name: string, families: ReadonlySet<string>): boolean {
  if (families.has(name)) return true;
  const base = name.replace(/_(bucket|sum|count)$/, "");
  return base !== name && families.has(base);
}

/** Every PromQL expression of the dashboard (panels' targets) and of the alert rules. */
export function opsQueries(): { dashboard: string[]; alerts: string[] } {
  const dash = JSON.parse(readFileSync(join(OPS, "grafana", "cpm-pf.json"), "utf8")) as {
    panels: { type: string; targets?: { expr: string }[] }[];
  };
  const rules = parse(readFileSync(join(OPS, "prometheus", "cpm-pf-alerts.yml"), "utf8")) as {
    groups: { name: string; rules: { alert: string; expr: string }[] }[];
  };
  return {
    dashboard: dash.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)),
    alerts: rules.groups.flatMap((g) => g.rules.map((r) => String(r.expr))),
  };
}
