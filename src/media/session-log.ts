// Log lines of one anchored session carry its Call-ID, Conversation-ID and
// Contribution-ID as fields (STYLE), without a winston child logger per
// session: an idle session holds only its field object (RSS per idle
// anchored session). Message bodies are never logged, at any level.
import type { Logger } from "../log/logger.js";

type Meta = Record<string, unknown>;

/** What src/media logs through; a winston Logger fits it too. */
export interface MediaLog {
  debug(message: string, meta?: Meta): void;
  info(message: string, meta?: Meta): void;
  warn(message: string, meta?: Meta): void;
  error(message: string, meta?: Meta): void;
}

export class SessionLog implements MediaLog {
  constructor(
    private readonly base: Logger,
    private readonly fields: Meta,
  ) {}

  debug(message: string, meta?: Meta): void {
    if (this.base.isDebugEnabled()) this.base.debug(message, { ...this.fields, ...meta });
  }

  info(message: string, meta?: Meta): void {
    this.base.info(message, { ...this.fields, ...meta });
  }

  warn(message: string, meta?: Meta): void {
    this.base.warn(message, { ...this.fields, ...meta });
  }

  error(message: string, meta?: Meta): void {
    this.base.error(message, { ...this.fields, ...meta });
  }
}
