// One winston logger, JSON lines, with a child logger per component. Call-ID,
// Conversation-ID and Contribution-ID travel as fields (callId,
// conversationId, contributionId), never inside the message text.
import { Writable } from "node:stream";
import winston from "winston";
import { StderrSink } from "./stderr-sink.js";

export type Logger = winston.Logger;

export type LogLevel = "error" | "warn" | "info" | "debug";

let root: winston.Logger | undefined;

const LEVELS: readonly LogLevel[] = ["error", "warn", "info", "debug"];

type LogMethod = (this: winston.Logger, ...args: unknown[]) => winston.Logger;

/**
 * winston builds the entry and runs the whole format pipeline (timestamp,
 * JSON) for every call, even one whose level no transport takes; the hot
 * paths (a BYE decision, an MSRP message) have debug lines. The gate drops
 * such calls up front. Children (child()) inherit it: they are
 * Object.create(parent).
 */
function gateDisabledLevels(logger: winston.Logger): winston.Logger {
  const target = logger as unknown as Record<string, LogMethod>;
  for (const level of LEVELS) {
    const write = target[level] as LogMethod;
    target[level] = function (this: winston.Logger, ...args: unknown[]) {
      return this.isLevelEnabled(level) ? write.apply(this, args) : this;
    };
  }
  const log = target.log as LogMethod;
  target.log = function (this: winston.Logger, ...args: unknown[]) {
    return typeof args[0] === "string" && !this.isLevelEnabled(args[0]) ? this : log.apply(this, args);
  };
  return logger;
}

/** The process's stderr sink (one per process: it owns fd 2's write order). */
let sink: StderrSink | undefined;

function stderrStream(): Writable {
  sink ??= new StderrSink();
  const out = sink;
  return new Writable({
    decodeStrings: false,
    write(line: string | Buffer, _enc, done) {
      out.push(typeof line === "string" ? line : line.toString("utf8"));
      done();
    },
  });
}

/** Resolves once the log lines so far are written to stderr (before a graceful exit). */
export function logsWritten(): Promise<void> {
  return sink?.drained() ?? Promise.resolve();
}

export function createRootLogger(level: LogLevel = "info", stream?: NodeJS.WritableStream): winston.Logger {
  const transport = new winston.transports.Stream({ stream: stream ?? stderrStream() });
  root = gateDisabledLevels(
    winston.createLogger({
      level,
      format: winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: true }), winston.format.json()),
      defaultMeta: { service: "cpm-pf" },
      transports: [transport],
    }),
  );
  return root;
}

/** A child logger for one component (grpc, store, procedures.bye, ...). */
export function componentLogger(component: string, parent?: winston.Logger): winston.Logger {
  const base = parent ?? root ?? createRootLogger((process.env.CPM_PF_LOG_LEVEL as LogLevel | undefined) ?? "info");
  return base.child({ component });
}

/** A logger that drops everything, for unit tests of pure code. */
export function silentLogger(): winston.Logger {
  return gateDisabledLevels(
    winston.createLogger({ level: "error", silent: true, transports: [new winston.transports.Console({ silent: true })] }),
  );
}
