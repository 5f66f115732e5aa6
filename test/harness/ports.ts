// Free port for test servers, on TCP and UDP alike (SIPp, Kamailio and the
// PF's UA bind UDP; MSRP, IMAP and gRPC bind TCP): bind port 0 on TCP, read
// the port the kernel picked, check that UDP can bind it too, close both. A
// port this process handed out before is not handed out again. Another
// process can grab it before the caller binds, so callers should bind
// promptly (fine on a test machine).
import { createSocket } from "node:dgram";
import { createServer } from "node:net";

const handedOut = new Set<number>();

function tcpPort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const addr = srv.address();
      if (addr === null || typeof addr === "string") {
        srv.close();
        reject(new Error("freePort: no TCP address"));
        return;
      }
      const { port } = addr;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

function udpFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createSocket(host.includes(":") ? "udp6" : "udp4");
    sock.unref();
    sock.once("error", () => {
      sock.close();
      resolve(false);
    });
    sock.bind({ address: host, port, exclusive: true }, () => sock.close(() => resolve(true)));
  });
}

export async function freePort(host = "127.0.0.1"): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await tcpPort(host);
    if (handedOut.has(port) || !(await udpFree(host, port))) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error("freePort: no port free on both TCP and UDP after 50 attempts");
}
