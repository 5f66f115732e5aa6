// Log lines to stderr without blocking the event loop. Node writes
// process.stderr synchronously when it is a pipe or a file: a slow reader
// (journald busy, a pipe nobody drains fast enough) would then stall BYE
// decisions. Lines are gathered for COALESCE_MS and written with one
// asynchronous write(2) at a time, in order: each write costs the event loop
// a thread-pool round trip, so one per decision under load would cost more
// than the line itself. A reader that stays behind by
// more than MAX_PENDING_BYTES loses lines (counted, and said once it catches
// up) instead of the process growing without bound.
import { write, writeSync } from "node:fs";

const MAX_PENDING_BYTES = 16 * 1024 * 1024;
/** How long the first line waits for others to go out with it (ms; the timer keeps the process alive until then); what process.exit() finds pending is written at once. */
const COALESCE_MS = 5;
/** A non-blocking fd that is full (EAGAIN) is tried again after this long (ms). */
const RETRY_MS = 5;

export class StderrSink {
  private pending: string[] = [];
  private pendingBytes = 0;
  private inFlight: Buffer | undefined;
  private scheduled = false;
  private dropped = 0;
  private idle: (() => void)[] = [];

  constructor(private readonly fd = 2) {
    // process.exit(): what was not handed to write(2) yet goes out synchronously
    process.on("exit", () => {
      if (this.pending.length > 0) this.writeNow(this.pending.join(""));
    });
  }

  push(line: string): void {
    if (this.pendingBytes + line.length > MAX_PENDING_BYTES) {
      this.dropped++;
      return;
    }
    this.pending.push(line);
    this.pendingBytes += line.length;
    if (!this.scheduled && !this.inFlight) {
      this.scheduled = true;
      setTimeout(() => {
        this.scheduled = false;
        this.pump();
      }, COALESCE_MS);
    }
  }

  /** Resolves once every line pushed so far is written. */
  drained(): Promise<void> {
    if (!this.inFlight && this.pending.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  private pump(): void {
    if (this.inFlight) return;
    if (this.dropped > 0 && this.pendingBytes < MAX_PENDING_BYTES / 2) {
      const line = JSON.stringify({
        component: "log",
        dropped: this.dropped,
        level: "warn",
        message: "log lines dropped: stderr not read fast enough",
        service: "cpm-pf",
        timestamp: new Date().toISOString(),
      });
      this.pending.push(`${line}\n`);
      this.dropped = 0;
    }
    if (this.pending.length === 0) {
      for (const resolve of this.idle.splice(0)) resolve();
      return;
    }
    this.inFlight = Buffer.from(this.pending.join(""), "utf8");
    this.pending = [];
    this.pendingBytes = 0;
    this.writeFrom(0);
  }

  private writeFrom(offset: number): void {
    const buf = this.inFlight as Buffer;
    write(this.fd, buf, offset, buf.length - offset, null, (err, n) => {
      if (err && (err as NodeJS.ErrnoException).code === "EAGAIN") {
        setTimeout(() => this.writeFrom(offset), RETRY_MS);
        return;
      }
      if (!err && offset + n < buf.length) {
        this.writeFrom(offset + n);
        return;
      }
      // written, or the fd is gone (EPIPE, EBADF): nothing more to do for this chunk
      this.inFlight = undefined;
      this.pump();
    });
  }

  private writeNow(text: string): void {
    try {
      writeSync(this.fd, text);
    } catch {
      // stderr gone at exit: nothing left to tell
    }
  }
}
