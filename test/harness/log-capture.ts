// A winston JSON logger whose lines a test reads back.
import { PassThrough } from "node:stream";
import winston from "winston";

export function capturingLogger(level = "info"): { logger: winston.Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new PassThrough();
  stream.on("data", (d: Buffer) => lines.push(d.toString()));
  const logger = winston.createLogger({ level, format: winston.format.json(), transports: [new winston.transports.Stream({ stream })] });
  return { logger, lines };
}
