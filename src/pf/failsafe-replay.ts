// The BYEs Kamailio relayed through its fail-safe while the sidecar could
// not decide, replayed once it can (docs/adr/0003-failsafe-bye-journal.md).
// Kamailio's bridge writes each one, durably, as <unix ms>-<pid>-<seq>.bye
// (a serialized HandleByeRequest) into session.failsafeDir; this drains the
// directory at start and then every session.failsafeReplayMs. A replayed BYE
// is decided like a live one, at the time it was received: 8.3.2.3 2.b/2.c
// store the GSO (its Message-ID comes from the BYE, so a BYE decided before
// the sidecar died and journaled again is not stored twice), the group
// session record moves, and the dialog's media is released (its answer went
// to the CF long ago: reported as unknown, 0). The BYE itself went on as a
// proxy would send it; nothing goes on the wire again.
import { mkdir, readdir, readFile, rename, unlink } from "node:fs/promises";
import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { CpmError } from "../errors/catalogue.js";
import { HandleByeRequestSchema } from "../gen/cpm/pf/v1/pf_pb.js";
import type { Logger } from "../log/logger.js";
import type { ByeResult, Envelope } from "./participating-function.js";

export interface ReplayTarget {
  handleBye(env: Envelope, now?: Date, opts?: { replayed?: boolean }): Promise<ByeResult>;
  byeOutcome(sessionKey: string, statusCode: number): Promise<boolean>;
}

const RECORD = /^(\d{13})-\d+-\d+\.bye$/;
/** Records that can never be replayed (not a BYE, cut short) are kept here, for an operator to look at. */
const QUARANTINE = "bad";
/**
 * Refusals that replaying again would meet again: the BYE itself (bad input),
 * or the store refusing its GSO (the object is kept in the spool's bad/).
 * Anything else (store down) is retried, and the records after it wait.
 */
const FINAL = new Set(["CPM_ERR_BAD_SIP", "CPM_ERR_BAD_HEADER", "CPM_ERR_BAD_REQUEST", "CPM_ERR_STORE_REJECTED"]);

export class FailsafeReplay {
  readonly counts = { replayed: 0, quarantined: 0, retried: 0 };
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly dir: string,
    private readonly pf: ReplayTarget,
    private readonly log: Logger,
    private readonly intervalMs: number,
  ) {}

  /** Creates the directory (group-writable: Kamailio's user writes it), replays what is there, then keeps watching. */
  /** Starts the passes; the first one runs behind (a long journal after an outage must not hold back readiness: decisions are served meanwhile). */
  async start(): Promise<void> {
    await mkdir(join(this.dir, QUARANTINE), { recursive: true, mode: 0o770 });
    void this.drain();
    this.timer = setInterval(() => void this.drain(), this.intervalMs);
    this.timer.unref();
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One pass over the directory, oldest first; a pass already running is joined, not doubled. */
  drain(): Promise<void> {
    this.running ??= this.pass().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async pass(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      this.log.error("fail-safe journal unreadable", { dir: this.dir, reason: String(err) });
      return;
    }
    const records = names.filter((n) => RECORD.test(n)).sort();
    for (const name of records) {
      // the store is down: the rest waits for the next pass, in order
      if (!(await this.replay(name))) return;
    }
  }

  /** false: not replayed now, retried on the next pass. */
  private async replay(name: string): Promise<boolean> {
    const path = join(this.dir, name);
    let env: Envelope;
    try {
      const req = fromBinary(HandleByeRequestSchema, await readFile(path));
      if (!req.bye || req.bye.raw.length === 0) throw new CpmError("CPM_ERR_BAD_REQUEST", "the record holds no BYE");
      env = { raw: req.bye.raw, source: req.bye.source };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return true; // replayed by a pass that ran meanwhile
      await this.quarantine(name, err);
      return true;
    }
    const receivedAt = new Date(Number(RECORD.exec(name)?.[1]));
    let result: ByeResult;
    try {
      result = await this.pf.handleBye(env, receivedAt, { replayed: true });
    } catch (err) {
      if (err instanceof CpmError && FINAL.has(err.code)) {
        await this.quarantine(name, err);
        return true;
      }
      this.counts.retried++;
      this.log.warn("fail-safe BYE not replayed yet: kept", { file: name, reason: err instanceof CpmError ? err.detail : String(err) });
      return false;
    }
    await this.pf.byeOutcome(result.sessionKey, 0);
    await unlink(path);
    this.counts.replayed++;
    this.log.info("fail-safe BYE replayed", {
      file: name,
      callId: result.sessionKey,
      receivedAt: receivedAt.toISOString(),
      mode: result.mode,
      gso: result.gso.state,
    });
    return true;
  }

  private async quarantine(name: string, err: unknown): Promise<void> {
    this.counts.quarantined++;
    const reason = err instanceof CpmError ? err.detail : err instanceof Error ? err.message : String(err);
    this.log.error("fail-safe BYE record cannot be replayed: quarantined", { file: name, dir: join(this.dir, QUARANTINE), reason });
    await rename(join(this.dir, name), join(this.dir, QUARANTINE, name)).catch(() => undefined);
  }
}
