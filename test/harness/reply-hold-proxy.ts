// A TCP proxy on 127.0.0.1 in front of a real server that can hold back the
// server's replies on one connection: once a client sends a command that
// matches `holdAfter`, what the server sends on that connection is buffered
// until release(). The server has carried out the command; only its answer is
// late, as on a loaded network. Tests use it to order replies across
// connections (one client, several pooled connections).
import { connect, createServer, type Server, type Socket } from "node:net";

export interface ReplyHoldProxy {
  readonly host: string;
  readonly port: number;
  /** Resolves once a client command matched and its connection's replies are held. */
  readonly holding: Promise<void>;
  /** Sends what was held and forwards normally from now on. */
  release(): void;
  close(): Promise<void>;
}

export async function startReplyHoldProxy(target: { host: string; port: number }, holdAfter: RegExp): Promise<ReplyHoldProxy> {
  let armed = true;
  let onHolding: () => void = () => {};
  const holding = new Promise<void>((resolve) => {
    onHolding = resolve;
  });
  const releases: (() => void)[] = [];
  const sockets = new Set<Socket>();
  let released = false;

  const server: Server = createServer((client) => {
    const upstream = connect(target);
    sockets.add(client).add(upstream);
    let held: Buffer[] | undefined;
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.on("data", (chunk: Buffer) => {
      if (armed && !released && holdAfter.test(chunk.toString("latin1"))) {
        armed = false;
        held = [];
        releases.push(() => {
          const out = held ?? [];
          held = undefined;
          for (const b of out) client.write(b);
        });
        onHolding();
      }
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (held) held.push(chunk);
      else client.write(chunk);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: "127.0.0.1", port: 0 }, () => resolve());
  });
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("reply-hold proxy: no address");
  return {
    host: "127.0.0.1",
    port: addr.port,
    holding,
    release() {
      released = true;
      for (const r of releases.splice(0)) r();
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
