// One winston logger, JSON lines, with a child logger per component. Call-ID,
// Conversation-ID and Contribution-ID travel as fields (callId,
// conversationId, contributionId), never inside the message text.
import winston from "winston";

export type Logger = winston.Logger;

export type LogLevel = "error" | "warn" | "info" | "debug";

let root: winston.Logger | undefined;

export function createRootLogger(level: LogLevel = "info", stream?: NodeJS.WritableStream): winston.Logger {
  const transport = stream
    ? new winston.transports.Stream({ stream })
    : new winston.transports.Console({ stderrLevels: ["error", "warn", "info", "debug"] });
  root = winston.createLogger({
    level,
    format: winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: true }), winston.format.json()),
    defaultMeta: { service: "cpm-pf" },
    transports: [transport],
  });
  return root;
}

/** A child logger for one component (grpc, store, procedures.bye, ...). */
export function componentLogger(component: string, parent?: winston.Logger): winston.Logger {
  const base = parent ?? root ?? createRootLogger((process.env.CPM_PF_LOG_LEVEL as LogLevel | undefined) ?? "info");
  return base.child({ component });
}

/** A logger that drops everything, for unit tests of pure code. */
export function silentLogger(): winston.Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console({ silent: true })] });
}
