// Runs SIPp 3.6 scenarios (test/scenarios/*.xml) on 127.0.0.1 and parses its
// message trace (-trace_msg) into timestamped messages, so that tests can
// assert on order, timing and header values of what went over the wire.
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseSipMessage as readSip } from "../../src/sip/message.js";
import { freePort } from "./ports.js";
import { exited } from "./process.js";
import { REPO_ROOT } from "./sidecar.js";
import { waitFor } from "./wait.js";

const HOST = "127.0.0.1" as const;

export interface SippOptions {
  /** Scenario file name in test/scenarios/ (or an absolute path). */
  scenario: string;
  /** Local SIP port (-p). Default: a free port. */
  port?: number;
  /**
   * Local address SIPp binds and sends from (-i). Default 127.0.0.1; any
   * address of 127/8 works on Linux (all of it is routed to lo), e.g.
   * 127.0.0.2 to send from a source that is not Kamailio's trusted one.
   */
  host?: string;
  /** Remote "host:port" for a UAC; omit for a UAS. */
  remote?: string;
  /** -key NAME VALUE pairs ([NAME] in the scenario). */
  keys?: Record<string, string>;
  /** Global timeout in s (-timeout Ns -timeout_error). Default 10. */
  timeoutS?: number;
  /** More arguments, verbatim. */
  extraArgs?: string[];
  /** SIP over UDP (default) or TCP (-t t1: one connection; a UAS listens on its port). */
  transport?: "udp" | "tcp";
}

export interface SipTraceMessage {
  /** Epoch ms (with µs fraction) when SIPp logged it. */
  time: number;
  direction: "sent" | "received";
  /** The transport SIPp sent or received it over, as it logs it ("UDP", "TCP"). */
  transport: string;
  /** The whole message as logged. */
  text: string;
  /** Request method, or undefined for a response. */
  method?: string;
  /** Response status, or undefined for a request. */
  status?: number;
  /** Header name (lower case, compact forms expanded for the common ones) -> values in order. */
  headers: Map<string, string[]>;
  body: string;
}

export interface SippResult {
  /** SIPp exit code: 0 = all calls succeeded, 1 = a call failed, 255/254 = fatal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  messages: SipTraceMessage[];
  /** Contents of the -trace_err file (unexpected messages). */
  errors: string;
  /** SIPp's own stdout/stderr. */
  output: string;
}

export interface SippRun {
  port: number;
  pid: number;
  /** Resolves when SIPp exits, with its parsed trace. */
  done: Promise<SippResult>;
  /** Kill it (SIGTERM then SIGKILL) if it is still running; resolves with the result. */
  stop(): Promise<SippResult>;
  /** The messages traced so far, while it runs (SIPp writes the trace as it goes). */
  messagesSoFar(): Promise<SipTraceMessage[]>;
}

/** Parses one SIP message (as SIPp logs it) with the sidecar's own reader (src/sip). */
export function parseSipMessage(text: string): Pick<SipTraceMessage, "method" | "status" | "headers" | "body"> {
  const m = readSip(Buffer.from(text, "utf8"));
  const headers = new Map<string, string[]>();
  for (const h of m.headers) headers.set(h.name, [...(headers.get(h.name) ?? []), h.value]);
  const body = m.body.toString("utf8").replace(/\r\n/g, "\n");
  if (m.kind === "response") return { status: m.statusCode, headers, body };
  return { method: m.method, headers, body };
}

/**
 * Parses a SIPp -trace_msg file. Each entry starts with a dashed line ending in
 * a local timestamp "YYYY-MM-DD HH:MM:SS.uuuuuu", then "UDP message sent (N
 * bytes):" or "UDP message received [N] bytes :" ("TCP ..." over TCP), a
 * blank line, the message.
 */
export function parseMessageLog(log: string): SipTraceMessage[] {
  const out: SipTraceMessage[] = [];
  const entries = log.split(/^-{20,} (?=\d{4}-\d{2}-\d{2} )/m).slice(1);
  for (const entry of entries) {
    const m = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{1,6})\r?\n(.*?)\r?\n\r?\n([\s\S]*)$/.exec(entry);
    if (!m) continue;
    const [, y, mo, d, h, mi, s, frac, what, message] = m as unknown as string[];
    const time =
      new Date(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)).getTime() +
      Number((frac as string).padEnd(6, "0")) / 1000;
    const direction = /message sent/i.test(what as string) ? "sent" : /message received/i.test(what as string) ? "received" : undefined;
    if (!direction) continue;
    const transport = /^(\w+) message/.exec(what as string)?.[1] ?? "";
    const text = (message as string).replace(/\s+$/, "");
    out.push({ time, direction, transport, text, ...parseSipMessage(text) });
  }
  return out;
}

/** Header value(s) of a traced message, by (case-insensitive) name. */
export function header(msg: SipTraceMessage, name: string): string | undefined {
  return msg.headers.get(name.toLowerCase())?.[0];
}

/**
 * The first message matching; retransmissions (same direction, start line and
 * CSeq) come later and are skipped by taking the first.
 */
export function first(
  messages: SipTraceMessage[],
  pred: { direction?: "sent" | "received"; method?: string; status?: number; cseqMethod?: string },
): SipTraceMessage | undefined {
  return messages.find(
    (m) =>
      (pred.direction === undefined || m.direction === pred.direction) &&
      (pred.method === undefined || m.method === pred.method) &&
      (pred.status === undefined || m.status === pred.status) &&
      (pred.cseqMethod === undefined || (header(m, "cseq") ?? "").split(/\s+/)[1] === pred.cseqMethod),
  );
}

/**
 * True once a UDP socket is bound (or a TCP socket listens) on <host>:<port>
 * (or the wildcard), read from /proc/net/udp or /proc/net/tcp (IPv4,
 * little-endian hex; state 0A = LISTEN): probing by binding the port
 * ourselves could race with SIPp's own bind.
 */
async function portBound(transport: "udp" | "tcp", port: number, host: string = HOST): Promise<boolean> {
  const table = await readFile(`/proc/net/${transport}`, "utf8");
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const addr = host
    .split(".")
    .reverse()
    .map((b) => Number(b).toString(16).toUpperCase().padStart(2, "0"))
    .join("");
  return table
    .split("\n")
    .slice(1)
    .some((line) => {
      const [, local = "", , state] = line.trim().split(/\s+/);
      return (local === `${addr}:${hex}` || local === `00000000:${hex}`) && (transport === "udp" || state === "0A");
    });
}

/**
 * Starts SIPp in the background. A UAS (no `remote`) is ready to receive
 * when this resolves (its UDP port is bound, or its TCP port listens).
 */
export async function startSipp(opts: SippOptions): Promise<SippRun> {
  const port = opts.port ?? (await freePort());
  const dir = await mkdtemp(join(tmpdir(), "cpm-sipp-"));
  const scenario = opts.scenario.startsWith("/") ? opts.scenario : join(REPO_ROOT, "test", "scenarios", opts.scenario);
  const messageFile = join(dir, "messages.log");
  const errorFile = join(dir, "errors.log");
  const args = [
    ...(opts.remote ? [opts.remote] : []),
    "-sf",
    scenario,
    "-i",
    opts.host ?? HOST,
    "-p",
    String(port),
    "-m",
    "1",
    "-nostdin",
    "-trace_msg",
    "-message_file",
    messageFile,
    "-trace_err",
    "-error_file",
    errorFile,
    "-timeout",
    `${opts.timeoutS ?? 10}s`,
    "-timeout_error",
    ...Object.entries(opts.keys ?? {}).flatMap(([k, v]) => ["-key", k, v]),
    ...(opts.transport === "tcp" ? ["-t", "t1"] : []),
    ...(opts.extraArgs ?? []),
  ];
  let output = "";
  const child = spawn("sipp", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  const keep = (d: Buffer) => {
    output = (output + d.toString("utf8")).slice(-20_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  let spawnError: Error | undefined;
  child.once("error", (err) => {
    spawnError = err;
  });

  const done: Promise<SippResult> = new Promise((resolve) => {
    const finish = async (code: number | null, signal: NodeJS.Signals | null) => {
      const log = await readFile(messageFile, "utf8").catch(() => "");
      const errors = await readFile(errorFile, "utf8").catch(() => "");
      await rm(dir, { recursive: true, force: true });
      resolve({ code, signal, messages: parseMessageLog(log), errors, output });
    };
    child.once("exit", (code, signal) => void finish(code, signal));
    child.once("error", () => void finish(null, null));
  });

  const pid = child.pid as number;
  const stop = async () => {
    if (!exited(child) && pid !== undefined) {
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        // gone
      }
      const t = setTimeout(() => {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // gone
        }
      }, 1000);
      const r = await done;
      clearTimeout(t);
      return r;
    }
    return done;
  };

  if (!opts.remote) {
    try {
      await waitFor(
        async () => {
          if (spawnError) throw spawnError;
          if (exited(child)) throw new Error(`sipp exited early (${child.exitCode}): ${output}`);
          return portBound(opts.transport ?? "udp", port, opts.host);
        },
        5000,
        20,
        `sipp UAS bound to ${opts.transport ?? "udp"}:${opts.host ?? HOST}:${port}`,
      );
    } catch (err) {
      await stop();
      throw err;
    }
  }
  const messagesSoFar = async () => parseMessageLog(await readFile(messageFile, "utf8").catch(() => ""));
  return { port, pid, done, stop, messagesSoFar };
}

/** Runs SIPp to completion. */
export async function runSipp(opts: SippOptions): Promise<SippResult> {
  const run = await startSipp(opts);
  return run.done;
}
