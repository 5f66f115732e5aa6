// A small pool of IMAP connections (imapflow) to the Message Store.
// - at most `poolSize` connections, each opened lazily on first use;
// - one caller per connection at a time (IMAP tags allow pipelining, RFC 9051
//   5.5, but mailbox selection is per connection state, so we keep it simple);
//   further callers wait in FIFO order;
// - a connection the server closed (BYE, RFC 9051 7.1.5) or that failed or
//   timed out is discarded and a new one is opened on next use;
// - every connect and every command is bounded by `timeoutMs`; on a timeout
//   the connection is closed, since its state is unknown.
import { ImapFlow, type Logger as ImapFlowLogger } from "imapflow";
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import { type Metrics, noMetrics } from "../metrics/metrics.js";

/**
 * A counting semaphore over connection attempts, shared by the pools of all
 * mailboxes (store.maxConcurrentLogins). Waiting for a turn is part of the
 * caller's time: a GSO whose budget runs out meanwhile is spooled.
 */
export class LoginGate {
  private running = 0;
  private readonly queue: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.queue.push(resolve));
    else this.running++;
    try {
      return await fn();
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.running--;
    }
  }

  /** Attempts under way and waiting (for stats). */
  load(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.queue.length };
  }
}

export interface ImapPoolOptions {
  host: string;
  port: number;
  secure: boolean;
  user: string;
  password: string;
  poolSize: number;
  timeoutMs: number;
}

/** What a pool user gets: the connection and a timeout guard for its commands. */
export interface PooledConnection {
  readonly client: ImapFlow;
  /** Connection id within the pool (for logs). */
  readonly id: number;
  /** True when this use opened the connection; false when it was reused. */
  readonly fresh: boolean;
  /** Runs one IMAP command, rejecting with CPM_ERR_STORE_UNAVAILABLE and closing the connection after timeoutMs. */
  cmd<T>(name: string, op: () => Promise<T>): Promise<T>;
}

export interface ImapPoolStats {
  size: number;
  open: number;
  busy: number;
  waiting: number;
  connects: number;
  connectFailures: number;
  discarded: number;
  /** IMAP commands issued through cmd(), by name (e.g. "UID EXPUNGE": 3). */
  commands: Record<string, number>;
}

interface Slot {
  id: number;
  client: ImapFlow | undefined;
  busy: boolean;
}

/** Error codes (imapflow's own and Node's socket codes) that mean the connection is gone or unusable. */
const CONNECTION_CODES = new Set([
  "NoConnection",
  "EConnectionClosed",
  "StateLogout",
  "ClosedAfterConnectText",
  "ClosedAfterConnectTLS",
  "CONNECT_TIMEOUT",
  "GREETING_TIMEOUT",
  "UPGRADE_TIMEOUT",
  "ETIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/** True when an error says the connection (not the command) failed. */
export function isConnectionError(err: unknown): boolean {
  if (err instanceof CpmError) return err.code === "CPM_ERR_STORE_UNAVAILABLE";
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && (CONNECTION_CODES.has(code) || code.startsWith("Parser"));
}

/** A short reason for logs: code, message and the server's response text. */
export function describeImapError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const e = err as Error & { code?: string; responseStatus?: string; serverResponseCode?: string; responseText?: string };
  const parts = [e.code, e.responseStatus, e.serverResponseCode ? `[${e.serverResponseCode}]` : undefined, e.responseText ?? e.message];
  return parts.filter((p) => p !== undefined && p !== "").join(" ");
}

/**
 * imapflow's logger interface, forwarded to our winston logger at debug (trace is dropped).
 * `isLevelEnabled` lets imapflow skip serialising every command and response for a log line
 * nobody reads (it does so for any logger without it).
 */
function imapflowLogger(log: Logger): ImapFlowLogger & { isLevelEnabled(level: string): boolean } {
  const fwd = (level: string) => (entry: unknown) => {
    if (!log.isDebugEnabled()) return;
    const { msg, err, ...fields } = (typeof entry === "object" && entry !== null ? entry : { msg: String(entry) }) as {
      msg?: unknown;
      err?: unknown;
      [k: string]: unknown;
    };
    log.debug(typeof msg === "string" ? msg : "imapflow", {
      imapLevel: level,
      ...fields,
      ...(err === undefined ? {} : { error: describeImapError(err) }),
    });
  };
  return {
    debug: fwd("debug"),
    info: fwd("info"),
    warn: fwd("warn"),
    error: fwd("error"),
    fatal: fwd("fatal"),
    isLevelEnabled: (level) => level !== "trace" && log.isDebugEnabled(),
  };
}

export class ImapPool {
  private readonly slots: Slot[];
  private readonly waiters: { resolve: (slot: Slot) => void; reject: (err: Error) => void }[] = [];
  private readonly imapLog: ImapFlowLogger;
  private closed = false;
  private counters = { connects: 0, connectFailures: 0, discarded: 0 };
  private readonly commands: Record<string, number> = {};

  constructor(
    private readonly opts: ImapPoolOptions,
    private readonly log: Logger,
    private readonly gate: LoginGate = new LoginGate(Number.POSITIVE_INFINITY),
    private readonly metrics: Pick<Metrics, "imap"> = noMetrics,
  ) {
    this.slots = Array.from({ length: Math.max(1, opts.poolSize) }, (_, i) => ({ id: i + 1, client: undefined, busy: false }));
    this.imapLog = imapflowLogger(log);
  }

  /**
   * Runs fn on one connection of the pool, opening it first if needed.
   * Rejects with CPM_ERR_STORE_UNAVAILABLE if no connection can be opened;
   * errors thrown by fn pass through unchanged (the connection is discarded
   * when the error is a connection error or the connection is no longer usable).
   */
  async use<T>(fn: (conn: PooledConnection) => Promise<T>): Promise<T> {
    const slot = await this.acquire();
    let failed: unknown;
    try {
      let fresh = false;
      if (!slot.client?.usable) {
        this.discard(slot, "not usable");
        slot.client = await this.connect(slot);
        fresh = true;
      }
      const client = slot.client;
      const conn: PooledConnection = {
        client,
        id: slot.id,
        fresh,
        cmd: (name, op) => this.guard(slot, client, name, op),
      };
      return await fn(conn);
    } catch (err) {
      failed = err;
      throw err;
    } finally {
      if (failed !== undefined && (isConnectionError(failed) || !slot.client?.usable)) {
        this.discard(slot, describeImapError(failed));
      }
      this.release(slot);
    }
  }

  stats(): ImapPoolStats {
    return {
      size: this.slots.length,
      open: this.slots.filter((s) => s.client?.usable).length,
      busy: this.slots.filter((s) => s.busy).length,
      waiting: this.waiters.length,
      ...this.counters,
      commands: { ...this.commands },
    };
  }

  /** Waits (up to timeoutMs) for running commands, then logs out every connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.waiters.splice(0)) w.reject(new CpmError("CPM_ERR_STORE_UNAVAILABLE", "IMAP pool closed"));
    const deadline = Date.now() + this.opts.timeoutMs;
    while (this.slots.some((s) => s.busy) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await Promise.all(
      this.slots.map(async (slot) => {
        const client = slot.client;
        slot.client = undefined;
        if (!client) return;
        if (client.usable) {
          try {
            await this.guard(slot, client, "LOGOUT", () => client.logout());
          } catch (err) {
            this.log.debug("IMAP logout failed", { conn: slot.id, reason: describeImapError(err) });
          }
        }
        client.close();
      }),
    );
  }

  private acquire(): Promise<Slot> {
    if (this.closed) return Promise.reject(new CpmError("CPM_ERR_STORE_UNAVAILABLE", "IMAP pool closed"));
    // prefer an idle slot with a live connection, then any idle slot
    const free = this.slots.find((s) => !s.busy && s.client?.usable) ?? this.slots.find((s) => !s.busy);
    if (free) {
      free.busy = true;
      return Promise.resolve(free);
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  private release(slot: Slot): void {
    const next = this.waiters.shift();
    if (next) next.resolve(slot);
    else slot.busy = false;
  }

  private discard(slot: Slot, reason: string): void {
    const client = slot.client;
    if (!client) return;
    slot.client = undefined;
    this.counters.discarded++;
    this.log.debug("IMAP connection discarded", { conn: slot.id, reason });
    client.close();
  }

  private async connect(slot: Slot): Promise<ImapFlow> {
    const { host, port, secure, user, password, timeoutMs } = this.opts;
    const client = new ImapFlow({
      host,
      port,
      secure,
      auth: { user, pass: password },
      logger: this.imapLog,
      disableAutoIdle: true,
      // RFC 7162 QRESYNC: an expunge of n items is reported as one VANISHED line, not n EXPUNGE lines
      qresync: true,
      connectionTimeout: timeoutMs,
      greetingTimeout: timeoutMs,
      // inactivity watchdog of an idle pooled connection; a closed one is re-opened on next use
      socketTimeout: Math.max(timeoutMs, 5 * 60_000),
    });
    // imapflow emits 'error' on socket failures; an unhandled 'error' event would crash the process.
    client.on("error", (err: unknown) => {
      this.log.debug("IMAP connection error", { conn: slot.id, reason: describeImapError(err) });
    });
    let opened = false;
    client.on("close", () => {
      if (slot.client === client) slot.client = undefined;
      if (opened) this.log.debug("IMAP connection closed", { conn: slot.id, byServer: !client.closedByClient });
    });
    try {
      await this.gate.run(() => this.guard(slot, client, "CONNECT", () => client.connect()));
    } catch (err) {
      this.counters.connectFailures++;
      client.close();
      const auth = (err as { authenticationFailed?: boolean }).authenticationFailed === true;
      const detail = `${auth ? "login" : "connect"} to ${host}:${port} failed: ${describeImapError(err)}`;
      throw err instanceof CpmError ? err : new CpmError("CPM_ERR_STORE_UNAVAILABLE", detail, { cause: err });
    }
    opened = true;
    this.counters.connects++;
    this.log.debug("IMAP connection opened", { conn: slot.id, host, port });
    return client;
  }

  /** Bounds one command by timeoutMs; on expiry the connection is closed and the command rejected. */
  private async guard<T>(slot: Slot, client: ImapFlow, name: string, op: () => Promise<T>): Promise<T> {
    const ms = this.opts.timeoutMs;
    this.commands[name] = (this.commands[name] ?? 0) + 1;
    let timer: NodeJS.Timeout | undefined;
    const pending = op();
    // the command rejects once we close the connection on timeout; that rejection is expected
    pending.catch(() => {});
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new CpmError("CPM_ERR_STORE_UNAVAILABLE", `IMAP ${name} timed out after ${ms} ms`));
        if (slot.client === client) this.discard(slot, `${name} timeout`);
        else client.close();
      }, ms);
    });
    const started = performance.now();
    let outcome: "ok" | "error" = "error";
    try {
      const result = await Promise.race([pending, timeout]);
      outcome = "ok";
      return result;
    } finally {
      clearTimeout(timer);
      this.metrics.imap(name, outcome, (performance.now() - started) / 1000);
    }
  }
}
