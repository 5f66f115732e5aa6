// Many group chat dialogs ended by a burst of BYEs, as the bench and the
// fault suite play them (scenarios in bench/scenarios/): SIPp as the
// Controlling Function and as the served users' client, through Kamailio.
// Phase 1 opens every dialog (INVITE / 200 / ACK, one line of an injection
// file per call: served user, Conversation-ID, Contribution-ID); phase 2 ends
// them with BYEs, closed loop (at most `concurrent` BYE transactions at once),
// from a second injection file built from what phase 1 logged.
import { spawn } from "node:child_process";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { freePort } from "./ports.js";
import { REPO_ROOT } from "./sidecar.js";
import { parseMessageLog, type SipTraceMessage } from "./sipp.js";
import { waitFor } from "./wait.js";

const SCENARIOS = join(REPO_ROOT, "bench", "scenarios");

/** One group session of a burst: its served user (a tel: number, e.g. "+16135551200") and its IDs. */
export interface BurstSession {
  user: string;
  conversationId: string;
  contributionId: string;
}

/**
 * Both phases number their Call-IDs alike: call N of phase 2 ends the dialog
 * of call N of phase 1. Two bursts at once (one per Kamailio) take two
 * prefixes, so that their Call-IDs differ.
 */
export const DEFAULT_CALL_ID_PREFIX = "cpm-bench-";
const callIdArgs = (prefix: string) => ["-cid_str", `${prefix}%u@127.0.0.1`];

/** The call number N of a Call-ID `<prefix>N@...`, or NaN. */
export function callNumber(callId: string, prefix = DEFAULT_CALL_ID_PREFIX): number {
  return callId.startsWith(prefix) ? Number(/^(\d+)@/.exec(callId.slice(prefix.length))?.[1]) : Number.NaN;
}

const common = (calls: number) => ["-i", "127.0.0.1", "-nostdin", "-d", "0", "-timeout", "300s", "-timeout_error", "-m", String(calls)];

/** A SIPp child; `done` resolves with its exit code (null when it could not run). */
export interface SippChild {
  pid: number;
  done: Promise<number | null>;
}

function sipp(args: string[], cwd: string): SippChild {
  const child = spawn("sipp", args, { cwd, stdio: "ignore" });
  const done = new Promise<number | null>((resolve) => {
    child.once("exit", (code) => resolve(code));
    child.once("error", () => resolve(null));
  });
  return { pid: child.pid ?? -1, done };
}

async function udpBound(port: number): Promise<boolean> {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const table = await readFile("/proc/net/udp", "utf8");
  return table.split("\n").some((l) => l.includes(`:${hex} `));
}

/** Phase 1's injection file: line N = the served user and the IDs of call N. */
export function sessionInjectionFile(sessions: readonly BurstSession[]): string {
  return `SEQUENTIAL\n${sessions.map((s) => `${s.user};${s.conversationId};${s.contributionId}`).join("\n")}\n`;
}

/** Phase 2's injection file: line N = the dialog phase 1 opened as call N ("-" tags for a call that failed). */
export function byeInjectionFile(logLines: string[], calls: number, prefix = DEFAULT_CALL_ID_PREFIX): string {
  const byCall = new Map<number, string>();
  for (const line of logLines) {
    const [callId, fromTag, toTag, user] = line.split(";");
    const n = callNumber(callId ?? "", prefix);
    if (n > 0 && fromTag && toTag) byCall.set(n, `${callId};${fromTag};${toTag};${user || "-"}`);
  }
  const rows = Array.from({ length: calls }, (_, i) => byCall.get(i + 1) ?? `${prefix}${i + 1}@127.0.0.1;-;-;-`);
  return `SEQUENTIAL\n${rows.join("\n")}\n`;
}

export interface BurstClient extends SippChild {
  port: number;
  /** Its message trace (-trace_msg), when asked for. */
  messages(): Promise<SipTraceMessage[]>;
}

/** The served users' client (test/scenarios/client-uas.xml, answering at once) for `calls` calls, bound when this resolves. */
export async function startBurstClient(dir: string, calls: number, opts: { traceMessages?: boolean } = {}): Promise<BurstClient> {
  const port = await freePort();
  const trace = join(dir, "client-messages.log");
  const run = sipp(
    [
      "-sf",
      join(REPO_ROOT, "test", "scenarios", "client-uas.xml"),
      "-p",
      String(port),
      ...common(calls),
      ...(opts.traceMessages ? ["-trace_msg", "-message_file", trace] : []),
    ],
    dir,
  );
  await waitFor(() => udpBound(port), 5000, 20, "client SIPp bound");
  return { ...run, port, messages: async () => parseMessageLog(await readFile(trace, "utf8").catch(() => "")) };
}

async function cfArgs(address: string, scenario: string, calls: number, concurrent: number, clientPort: number, prefix: string) {
  return [
    address,
    "-sf",
    join(SCENARIOS, scenario),
    "-p",
    String(await freePort()),
    ...common(calls),
    ...callIdArgs(prefix),
    "-r",
    "100000",
    "-l",
    String(concurrent),
    "-key",
    "client_port",
    String(clientPort),
  ];
}

/** Phase 1: open one dialog per session; returns the log lines "Call-ID;From-tag;To-tag;served user;tag=To-tag" of the dialogs opened. */
export async function openDialogs(
  address: string,
  dir: string,
  clientPort: number,
  sessions: readonly BurstSession[],
  concurrent: number,
  prefix = DEFAULT_CALL_ID_PREFIX,
) {
  const inf = join(dir, "sessions.csv");
  await writeFile(inf, sessionInjectionFile(sessions));
  const started = performance.now();
  const code = await sipp(
    [...(await cfArgs(address, "cf-invite-hold.xml", sessions.length, concurrent, clientPort, prefix)), "-inf", inf, "-trace_logs"],
    dir,
  ).done;
  const seconds = (performance.now() - started) / 1000;
  const log = (await readdir(dir)).find((f) => f.startsWith("cf-invite-hold_") && f.endsWith("_logs.log"));
  const dialogs = log ? (await readFile(join(dir, log), "utf8")).split("\n").filter((l) => l.split(";").length === 5) : [];
  return { code, dialogs, invitesPerSecond: dialogs.length / seconds };
}

export interface ByeBurstOptions {
  /** The BYE's Reason header value ("" for none). */
  reason: string;
  /** The Call-ID prefix phase 1 used. Default DEFAULT_CALL_ID_PREFIX. */
  callIdPrefix?: string;
  /** Trace every message (-trace_msg): what was sent and answered, with times. */
  traceMessages?: boolean;
  /** Trace each BYE's response time (-trace_rtt). */
  traceRtt?: boolean;
  extraArgs?: string[];
}

export interface ByeBurst extends SippChild {
  /** The CF's message trace (traceMessages). */
  messages(): Promise<SipTraceMessage[]>;
  /** [when (ms), BYE -> 200 OK (ms)] per BYE (traceRtt). */
  rtts(): Promise<[number, number][]>;
}

/** Phase 2: a BYE for each dialog phase 1 opened (`dialogs`: its log lines), at most `concurrent` at once. */
export async function startByeBurst(
  address: string,
  dir: string,
  clientPort: number,
  dialogs: string[],
  calls: number,
  concurrent: number,
  opts: ByeBurstOptions,
): Promise<ByeBurst> {
  const inf = join(dir, "dialogs.csv");
  const prefix = opts.callIdPrefix ?? DEFAULT_CALL_ID_PREFIX;
  await writeFile(inf, byeInjectionFile(dialogs, calls, prefix));
  const trace = join(dir, "cf-bye-messages.log");
  const run = sipp(
    [
      ...(await cfArgs(address, "cf-bye-inf.xml", calls, concurrent, clientPort, prefix)),
      "-inf",
      inf,
      ...(opts.traceRtt ? ["-trace_rtt", "-rtt_freq", "1"] : []),
      ...(opts.traceMessages ? ["-trace_msg", "-message_file", trace] : []),
      "-key",
      "rr",
      `<sip:${address};lr;cpmpf>`,
      "-key",
      "bye_headers",
      opts.reason ? `\r\nReason: ${opts.reason}` : "",
      ...(opts.extraArgs ?? []),
    ],
    dir,
  );
  return {
    ...run,
    messages: async () => parseMessageLog(await readFile(trace, "utf8").catch(() => "")),
    async rtts() {
      const csv = (await readdir(dir)).find((f) => f.startsWith("cf-bye-inf_") && f.endsWith("_rtt.csv"));
      const rows = csv ? (await readFile(join(dir, csv), "utf8")).split("\n").slice(1) : [];
      return rows
        .map((r) => r.split(";"))
        .filter((c) => c[2] === "bye")
        .map((c) => [Number(c[0]), Number(c[1])]);
    },
  };
}
