// Prometheus text exposition format 0.0.4 (prometheus.io/docs/instrumenting/
// exposition_formats): a strict line parser, so a test can tell that what
// Kamailio's xhttp_prom serves is something Prometheus accepts, and read its
// samples; plus a plain HTTP GET to scrape it.
import { request } from "node:http";

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
  /** Epoch ms, when the line has one. */
  timestamp?: number;
}

export interface PromText {
  samples: PromSample[];
  /** # TYPE lines: metric family -> type. */
  types: Map<string, string>;
  /** # HELP lines: metric family -> docstring (unescaped). */
  help: Map<string, string>;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

function parseValue(text: string, line: number): number {
  // Go's ParseFloat spellings, what Prometheus reads (prom-client writes NaN as "Nan")
  const lower = text.toLowerCase();
  if (lower === "nan") return Number.NaN;
  if (lower === "+inf" || lower === "inf") return Number.POSITIVE_INFINITY;
  if (lower === "-inf") return Number.NEGATIVE_INFINITY;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) throw new Error(`line ${line}: bad value ${JSON.stringify(text)}`);
  return Number(text);
}

function unescapePromText(text: string, quotes: boolean): string {
  return text.replace(quotes ? /\\([\\"n])/g : /\\([\\n])/g, (_, c: string) => (c === "n" ? "\n" : c));
}

/** `{a="x",b="y"}` starting at `text[0]`: the labels and the rest of the line after `}`. */
function parseLabels(text: string, line: number): { labels: Record<string, string>; rest: string } {
  const labels: Record<string, string> = {};
  let i = 1;
  const fail = (why: string): never => {
    throw new Error(`line ${line}: ${why} in ${JSON.stringify(text)}`);
  };
  for (;;) {
    while (text[i] === " " || text[i] === "\t") i++;
    if (text[i] === "}") return { labels, rest: text.slice(i + 1) };
    const eq = text.indexOf("=", i);
    if (eq < 0) fail("label without =");
    const name = text.slice(i, eq).trim();
    if (!LABEL_NAME.test(name)) fail(`bad label name ${JSON.stringify(name)}`);
    if (name in labels) fail(`label ${name} twice`);
    i = eq + 1;
    while (text[i] === " " || text[i] === "\t") i++;
    if (text[i] !== '"') fail("label value not quoted");
    let j = i + 1;
    while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
    if (j >= text.length) fail("unterminated label value");
    labels[name] = unescapePromText(text.slice(i + 1, j), true);
    i = j + 1;
    while (text[i] === " " || text[i] === "\t") i++;
    if (text[i] === ",") i++;
    else if (text[i] !== "}") fail("expected , or }");
  }
}

/** Parses a whole exposition; throws on the first line Prometheus would reject. */
export function parsePromText(body: string): PromText {
  const out: PromText = { samples: [], types: new Map(), help: new Map() };
  const lines = body.split("\n");
  if (lines.at(-1) === "") lines.pop();
  lines.forEach((raw, idx) => {
    const line = idx + 1;
    const text = raw.replace(/^[ \t]+/, "");
    if (text.trim() === "") return;
    if (text.startsWith("#")) {
      const m = /^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?$/.exec(text);
      if (!m) return; // a plain comment
      const [, kind, family, rest = ""] = m as unknown as [string, string, string, string | undefined];
      if (!NAME.test(family)) throw new Error(`line ${line}: bad metric name ${JSON.stringify(family)}`);
      if (kind === "TYPE") {
        const type = rest.trim();
        if (!TYPES.has(type)) throw new Error(`line ${line}: bad type ${JSON.stringify(type)}`);
        if (out.types.has(family)) throw new Error(`line ${line}: second TYPE for ${family}`);
        if (out.samples.some((s) => s.name === family)) throw new Error(`line ${line}: TYPE for ${family} after its samples`);
        out.types.set(family, type);
      } else {
        if (out.help.has(family)) throw new Error(`line ${line}: second HELP for ${family}`);
        out.help.set(family, unescapePromText(rest, false));
      }
      return;
    }
    const nameMatch = /^[^\s{]+/.exec(text);
    const name = nameMatch?.[0] ?? "";
    if (!NAME.test(name)) throw new Error(`line ${line}: bad metric name ${JSON.stringify(name)}`);
    let rest = text.slice(name.length).replace(/^[ \t]+/, "");
    let labels: Record<string, string> = {};
    if (rest.startsWith("{")) ({ labels, rest } = parseLabels(rest, line));
    const fields = rest.trim().split(/[ \t]+/);
    if (fields.length < 1 || fields.length > 2 || fields[0] === "") {
      throw new Error(`line ${line}: expected "value [timestamp]" in ${JSON.stringify(raw)}`);
    }
    const value = parseValue(fields[0] as string, line);
    let timestamp: number | undefined;
    if (fields[1] !== undefined) {
      if (!/^-?\d+$/.test(fields[1])) throw new Error(`line ${line}: bad timestamp ${JSON.stringify(fields[1])}`);
      timestamp = Number(fields[1]);
    }
    const key = JSON.stringify([name, labels]);
    if (out.samples.some((s) => JSON.stringify([s.name, s.labels]) === key)) throw new Error(`line ${line}: ${name} twice`);
    out.samples.push({ name, labels, value, ...(timestamp !== undefined ? { timestamp } : {}) });
  });
  return out;
}

/** Value of the sample `name` without labels; undefined when absent. */
export function promValue(text: PromText, name: string): number | undefined {
  return text.samples.find((s) => s.name === name && Object.keys(s.labels).length === 0)?.value;
}

export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One HTTP/1.1 GET on its own connection (closed after the answer). */
export function httpGet(host: string, port: number, path: string, timeoutMs = 3000): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, method: "GET", agent: false, headers: { Connection: "close" }, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        res.socket?.destroy();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") });
      });
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`GET http://${host}:${port}${path}: no answer in ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end();
  });
}
