// Readiness probe of the daemons the harness starts (Dovecot, Redis): connect
// to 127.0.0.1:port, optionally send a command, and resolve with the first
// CRLF-terminated line the server sends (undefined on a refused or closed
// connection, or after timeoutMs).
import { connect } from "node:net";

export function firstLine(port: number, timeoutMs: number, send?: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const sock = connect({ host: "127.0.0.1", port });
    let buf = "";
    const done = (line: string | undefined) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(line);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    if (send !== undefined) sock.on("connect", () => sock.write(send));
    sock.setEncoding("latin1");
    sock.on("data", (d: string) => {
      buf += d;
      const end = buf.indexOf("\r\n");
      if (end >= 0) done(buf.slice(0, end));
    });
    sock.on("error", () => done(undefined));
    sock.on("close", () => done(undefined));
  });
}
