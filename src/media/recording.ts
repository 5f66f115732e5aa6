// The messages of one anchored session kept for OMA CPM 8.5.2 "Record CPM
// Session" (BYE-B8), bounded in bytes: once the bound is reached later
// messages are not kept, and that is logged once (never their content).
import type { RecordedMessage } from "./ports.js";
import type { MediaLog } from "./session-log.js";

export class SessionRecording {
  private readonly kept: RecordedMessage[] = [];
  private keptBytes = 0;
  private dropped = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly log: MediaLog,
  ) {}

  add(message: RecordedMessage): void {
    if (this.dropped > 0 || this.keptBytes + message.body.length > this.maxBytes) {
      if (this.dropped === 0)
        this.log.warn("session recording truncated", { maxRecordedBytes: this.maxBytes, keptMessages: this.kept.length });
      this.dropped++;
      return;
    }
    this.kept.push(message);
    this.keptBytes += message.body.length;
  }

  get messages(): readonly RecordedMessage[] {
    return this.kept;
  }

  get bytes(): number {
    return this.keptBytes;
  }

  /** Messages not kept because of the bound. */
  get truncated(): number {
    return this.dropped;
  }

  /** Frees what is kept; returns how many messages were held. */
  clear(): number {
    const n = this.kept.length;
    this.kept.length = 0;
    this.keptBytes = 0;
    return n;
  }
}
