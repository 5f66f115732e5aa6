// MSRP media plane benchmarks. The relay under test
// runs in a child process, as the sidecar does, while the MSRP peers (the
// Controlling Function and the client, test/harness/msrp-peer.ts) run in this
// process; with 2+ cores both sides get their own.
//  - benchRelay: 1 KB messages CF peer -> relay -> client peer, the relay
//    being MsrpMediaPlane or a plain TCP pass-through (net.Socket pipe) of the
//    same MSRP bytes between the same peers; rounds alternate, one run.
//  - benchSessionRss: RSS of the relay process per idle anchored session
//    (both legs connected and bound) at two session counts, after gc; by
//    default as deployed: one connection per client, one relay-opened
//    connection to the CF for all CF legs (RssConnections).
// Run directly as `node --expose-gc dist/bench/media-bench.js relay-child` it
// is the child.
import { type ChildProcess, fork } from "node:child_process";
import { once } from "node:events";
import * as net from "node:net";
import { fileURLToPath } from "node:url";
import { buildConfig } from "../src/config/config.js";
import { silentLogger } from "../src/log/logger.js";
import { MsrpMediaPlane } from "../src/media/msrp-media-plane.js";
import type { GroupSessionRef } from "../src/media/ports.js";
import { MsrpConnection } from "../src/msrp/connection.js";
import { newSessionId } from "../src/msrp/ids.js";
import { MsrpResources } from "../src/msrp/resources.js";
import { createMsrpServer } from "../src/msrp/server.js";
import { MsrpSession } from "../src/msrp/session.js";
import { MsrpSessionTable } from "../src/msrp/session-table.js";
import { type MsrpUri, parseMsrpPath, parseMsrpUri } from "../src/msrp/uri.js";
import { MsrpPeer, sdpPath } from "../test/harness/msrp-peer.js";

// ---- the child: MsrpMediaPlane or a TCP pipe, driven over IPC --------------------

type Request =
  | { op: "anchor"; items: { key: string; cfOffer: string }[] }
  | { op: "answer"; items: { key: string; clientAnswer: string }[] }
  | { op: "legsUp" }
  | { op: "releaseAll" }
  | { op: "pipe"; targetPort: number }
  | { op: "measure" }
  | { op: "exit" };

async function relayChild(): Promise<void> {
  const config = buildConfig({
    media: { enabled: true, port: 0, clientLegTimeoutMs: 600_000, unauthenticatedTimeoutMs: 600_000 },
  }).media;
  const plane = new MsrpMediaPlane({
    config,
    deferredSink: { storeDeferred: async () => {} },
    logger: silentLogger(),
    resources: new MsrpResources(),
  });
  await plane.start();
  const keys: string[] = [];
  const handle = async (req: Request): Promise<unknown> => {
    switch (req.op) {
      case "anchor": {
        const out: { cfPath: string; clientPath: string }[] = [];
        for (const item of req.items) {
          const session: GroupSessionRef = {
            sessionKey: item.key,
            servedUser: "tel:+16135551200",
            conversationId: `conv-${item.key}`,
            contributionId: `contrib-${item.key}`,
            focus: "sip:focus@cf.example.net",
          };
          const r = await plane.anchorOffer({ session, offerSdp: item.cfOffer, allowOfflineStorage: false });
          keys.push(item.key);
          out.push({ cfPath: r.cfLeg.path, clientPath: sdpPath(r.clientOfferSdp) });
        }
        return out;
      }
      case "answer":
        for (const item of req.items) plane.anchorAnswer(item.key, item.clientAnswer);
        return true;
      case "releaseAll": {
        let released = 0;
        for (const k of keys.splice(0)) released += plane.release(k);
        return released;
      }
      case "legsUp":
        return keys.filter((k) => {
          const l = plane.legs(k);
          return l?.cf === "up" && l.client === "up";
        }).length;
      case "pipe": {
        // Plain TCP pass-through: every byte both ways, no parsing.
        const server = net.createServer((inbound) => {
          const outbound = net.connect({ host: "127.0.0.1", port: req.targetPort });
          inbound.pipe(outbound).pipe(inbound);
          inbound.on("error", () => outbound.destroy());
          outbound.on("error", () => inbound.destroy());
        });
        server.listen(0, "127.0.0.1");
        await once(server, "listening");
        return (server.address() as net.AddressInfo).port;
      }
      case "measure": {
        const gc = (globalThis as { gc?: () => void }).gc;
        for (let i = 0; i < 3; i++) gc?.();
        await new Promise((r) => setTimeout(r, 50));
        gc?.();
        const m = process.memoryUsage();
        return { rss: m.rss, heapUsed: m.heapUsed, gcExposed: gc !== undefined, sessions: plane.stats().sessions };
      }
      case "exit":
        await plane.close();
        setImmediate(() => process.exit(0));
        return true;
    }
  };
  process.on("message", (msg: { id: number; req: Request }) => {
    handle(msg.req).then(
      (result) => process.send?.({ id: msg.id, result }),
      (err: unknown) => process.send?.({ id: msg.id, error: err instanceof Error ? err.message : String(err) }),
    );
  });
  process.send?.({ id: 0, result: { port: plane.address.port } });
}

if (process.argv[2] === "relay-child") void relayChild();

// ---- the parent side ----------------------------------------------------------------

class Child {
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private constructor(
    private readonly proc: ChildProcess,
    readonly port: number,
  ) {
    proc.on("message", (msg: { id: number; result?: unknown; error?: string }) => {
      const w = this.waiting.get(msg.id);
      this.waiting.delete(msg.id);
      if (msg.error !== undefined) w?.reject(new Error(msg.error));
      else w?.resolve(msg.result);
    });
  }

  static async start(v8Flags: string[] = []): Promise<Child> {
    const proc = fork(fileURLToPath(import.meta.url), ["relay-child"], {
      execArgv: ["--expose-gc", ...v8Flags],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const [first] = (await once(proc, "message")) as [{ result: { port: number } }];
    return new Child(proc, first.result.port);
  }

  call<T>(req: Request): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.proc.send({ id, req });
    });
  }

  async stop(): Promise<void> {
    const exited = once(this.proc, "exit");
    await this.call({ op: "exit" }).catch(() => undefined);
    await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
    if (this.proc.exitCode === null) this.proc.kill("SIGKILL");
  }
}

async function waitUntil(what: string, pred: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`bench: ${what} not reached in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A 1 KB message/cpim body (CPIM headers + text). */
function body1k(i: number): Buffer {
  const head = `From: <sip:alice@example.net>\r\nTo: <sip:anonymous@anonymous.invalid>\r\nNS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: bench${i}\r\n\r\nContent-Type: text/plain;charset=utf-8\r\n\r\n`;
  return Buffer.concat([Buffer.from(head), Buffer.alloc(1024 - head.length, 0x61)]);
}

/** Sends n messages with `window` SENDs outstanding; resolves when all were answered 200 and received. */
async function pump(cf: MsrpPeer, client: MsrpPeer, n: number, window: number, offset: number): Promise<number> {
  const target = client.received.length + n;
  const t0 = performance.now();
  let next = 0;
  const lane = async () => {
    while (next < n) {
      const i = next++;
      const r = await cf.send(body1k(offset + i), "message/cpim");
      if (r.code !== 200) throw new Error(`bench: SEND answered ${r.code}`);
    }
  };
  await Promise.all(Array.from({ length: window }, lane));
  if (client.received.length < target) await client.waitForMessages(target);
  const ms = performance.now() - t0;
  client.received.length = 0; // keep memory flat between rounds
  return ms;
}

export interface RelayFigures {
  messagesPerSecond: number;
  mbPerSecond: number;
  elapsedMs: number;
}

export interface RelayBenchResult {
  messages: number;
  messageBytes: number;
  window: number;
  baseline: RelayFigures;
  pf: RelayFigures;
  /** pf / baseline messages per second (target >= 0.5). */
  ratio: number;
}

/**
 * Relay throughput of 1 KB messages: CF peer -> MsrpMediaPlane -> client peer
 * vs CF peer -> TCP pipe -> client peer, `n` messages each, in alternating
 * rounds, `window` SENDs outstanding.
 */
export async function benchRelay(n = 20_000, window = 64, rounds = 4): Promise<RelayBenchResult> {
  const child = await Child.start();
  const peers: MsrpPeer[] = [];
  try {
    // PF path: both peers connect (a=setup:active), the PF is passive on both legs.
    const cf = await MsrpPeer.start();
    const client = await MsrpPeer.start();
    peers.push(cf, client);
    const key = `bench-${newSessionId()}`;
    const [paths] = await child.call<{ cfPath: string; clientPath: string }[]>({
      op: "anchor",
      items: [{ key, cfOffer: cf.sdp("active") }],
    });
    if (!paths) throw new Error("bench: no anchor");
    await child.call({ op: "answer", items: [{ key, clientAnswer: client.sdp("active") }] });
    await cf.open(paths.cfPath, "active");
    await client.open(paths.clientPath, "active");
    await waitUntil("both legs up", async () => (await child.call<number>({ op: "legsUp" })) === 1);

    // Baseline: the same MSRP peers end to end, the child only pipes bytes.
    const cf0 = await MsrpPeer.start();
    const client0 = await MsrpPeer.start();
    peers.push(cf0, client0);
    const pipePort = await child.call<number>({ op: "pipe", targetPort: client0.localUri.port as number });
    await client0.open(cf0.path, "passive");
    await cf0.open(`msrp://127.0.0.1:${pipePort}/${client0.localUri.sessionId};tcp`, "active");

    // warm-up (JIT, socket buffers), not counted
    await pump(cf0, client0, 1000, window, 0);
    await pump(cf, client, 1000, window, 0);
    let baseMs = 0;
    let pfMs = 0;
    const per = Math.ceil(n / rounds);
    for (let r = 0; r < rounds; r++) {
      baseMs += await pump(cf0, client0, per, window, r * per);
      pfMs += await pump(cf, client, per, window, r * per);
    }
    const total = per * rounds;
    const figures = (ms: number): RelayFigures => ({
      messagesPerSecond: (total * 1000) / ms,
      mbPerSecond: (total * 1024) / (ms / 1000) / 1e6,
      elapsedMs: ms,
    });
    const baseline = figures(baseMs);
    const pf = figures(pfMs);
    return { messages: total, messageBytes: 1024, window, baseline, pf, ratio: pf.messagesPerSecond / baseline.messagesPerSecond };
  } finally {
    for (const p of peers) await p.close();
    await child.stop();
  }
}

export interface RssPoint {
  sessions: number;
  rssBytes: number;
  heapUsedBytes: number;
  /** (rss - baseline rss) / sessions. */
  rssPerSessionBytes: number;
  /** (heapUsed - baseline heapUsed) / sessions. */
  heapPerSessionBytes: number;
}

/**
 * How the peers' sessions reach the relay:
 * - realistic: each client connects by itself (one connection per client leg,
 *   a=setup:active) while the CF offers a=setup:actpass, so the PF connects to
 *   the CF and carries every CF leg over that one connection (RFC 4975 5.4 reuse);
 * - per-leg: both peers connect, one connection per leg (2 per session);
 * - shared: both peers connect and bind many sessions on 8 connections.
 */
export type RssConnections = "realistic" | "per-leg" | "shared";

export interface SessionRssResult {
  connections: RssConnections;
  gcExposed: boolean;
  /** Measured after a warm-up (the same number of sessions as the first point, anchored, bound and released). */
  baseRssBytes: number;
  baseHeapUsedBytes: number;
  points: RssPoint[];
  /** RSS added per session between the first and the last point (linearity check against rssPerSessionBytes). */
  marginalRssPerSessionBytes: number;
}

/** The peer side of many idle sessions: sessions bound to the relay over per-leg, shared or realistic connections. */
class BulkPeers {
  private readonly resources = new MsrpResources();
  private readonly logger = silentLogger();
  private readonly table = new MsrpSessionTable();
  private readonly opened: MsrpConnection[] = [];
  private shared: MsrpConnection[] = [];
  private readonly sessions: MsrpSession[] = [];
  private readonly pfUri: MsrpUri;
  /** realistic: the CF's listener, to which the relay connects (the CF's sessions wait in `table`). */
  private cfServer: net.Server | undefined;

  constructor(
    private readonly child: Child,
    private readonly connections: RssConnections,
  ) {
    this.pfUri = parseMsrpUri(`msrp://127.0.0.1:${child.port}/x;tcp`);
  }

  /** realistic: the CF peer listens; the relay opens its (one) connection here. */
  async start(): Promise<void> {
    if (this.connections !== "realistic") return;
    const server = createMsrpServer({ table: this.table, logger: this.logger, resources: this.resources });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    this.cfServer = server;
  }

  async stop(): Promise<void> {
    this.forget();
    const server = this.cfServer;
    this.cfServer = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Anchors `n` sessions in the relay and binds both legs of each. */
  async anchor(n: number): Promise<void> {
    const BATCH = 200;
    const cfPort = this.cfServer ? (this.cfServer.address() as net.AddressInfo).port : 9;
    for (let done = 0; done < n; done += BATCH) {
      const size = Math.min(BATCH, n - done);
      const peers = Array.from({ length: size }, () => ({ key: `rss-${newSessionId()}`, cf: newSessionId(), client: newSessionId() }));
      const path = (id: string, port = 9) => `msrp://127.0.0.1:${port}/${id};tcp`;
      const sdp = (p: string, setup: string) =>
        `v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=message 9 TCP/MSRP *\r\na=accept-types:message/cpim\r\na=path:${p}\r\na=setup:${setup}\r\n`;
      const realistic = this.connections === "realistic";
      const paths = await this.child.call<{ cfPath: string; clientPath: string }[]>({
        op: "anchor",
        items: peers.map((p) => ({ key: p.key, cfOffer: realistic ? sdp(path(p.cf, cfPort), "actpass") : sdp(path(p.cf), "active") })),
      });
      const binds: Promise<void>[] = [];
      for (const [i, p] of peers.entries()) {
        const pf = paths[i];
        if (!pf) throw new Error("bench: anchor reply too short");
        // realistic: the CF's session waits for the relay's bind (RFC 6135 passive), before the answer makes the relay connect.
        if (realistic) this.table.add(this.session(path(p.cf, cfPort), pf.cfPath));
        else binds.push(this.bind(path(p.cf), pf.cfPath));
      }
      await this.child.call({ op: "answer", items: peers.map((p) => ({ key: p.key, clientAnswer: sdp(path(p.client), "active") })) });
      for (const [i, p] of peers.entries()) binds.push(this.bind(path(p.client), (paths[i] as { clientPath: string }).clientPath));
      await Promise.all(binds);
    }
  }

  /** The relay released its sessions: the peer side lets go of its own. */
  forget(): void {
    for (const s of this.sessions.splice(0)) s.close("released");
    for (const c of this.opened.splice(0)) c.close("released");
    this.shared = [];
  }

  private session(local: string, remote: string): MsrpSession {
    const s = new MsrpSession({
      localUri: parseMsrpUri(local),
      remotePath: parseMsrpPath(remote),
      logger: this.logger,
      resources: this.resources,
    });
    this.sessions.push(s);
    return s;
  }

  private async bind(local: string, remote: string): Promise<void> {
    const s = this.session(local, remote);
    let c: MsrpConnection;
    if (this.connections === "shared" && this.shared.length >= 8) c = this.shared[this.sessions.length % 8] as MsrpConnection;
    else {
      c = await MsrpConnection.connectTo(this.pfUri, {
        logger: this.logger,
        resources: this.resources,
        table: this.table,
        closeWhenUnused: false,
      });
      this.opened.push(c);
      if (this.connections === "shared") this.shared.push(c);
    }
    await c.bind(s);
  }
}

/**
 * RSS of the relay process per idle anchored session, both legs bound, at each
 * of `counts` sessions (cumulative, ascending), after gc. File descriptors per
 * session on each side: 1 for "realistic" (10k sessions fit a 20k limit), 2 for
 * "per-leg" (keep counts under `ulimit -n` / 2), about 0 for "shared".
 */
export async function benchSessionRss(
  counts: number[] = [1000, 10_000],
  connections: RssConnections = "realistic",
): Promise<SessionRssResult> {
  const sorted = [...counts].sort((a, b) => a - b);
  // A young generation of fixed size: V8 otherwise grows and shrinks it with the allocation rate,
  // which moves RSS by tens of MB between the baseline and the points and hides the per-session cost.
  const child = await Child.start(["--min-semi-space-size=16", "--max-semi-space-size=16"]);
  const peers = new BulkPeers(child, connections);
  try {
    await peers.start();
    // Warm-up: JIT, heap spaces and the listener's first connections, then released and gc'd.
    await peers.anchor(sorted[0] ?? 1000);
    await child.call({ op: "releaseAll" });
    peers.forget();
    await waitUntil("warm-up released", async () => (await child.call<{ sessions: number }>({ op: "measure" })).sessions === 0);
    const base = await child.call<{ rss: number; heapUsed: number; gcExposed: boolean }>({ op: "measure" });
    const points: RssPoint[] = [];
    let anchored = 0;
    for (const count of sorted) {
      await peers.anchor(count - anchored);
      anchored = count;
      await waitUntil(`${count} sessions up`, async () => (await child.call<number>({ op: "legsUp" })) === count);
      const m = await child.call<{ rss: number; heapUsed: number }>({ op: "measure" });
      points.push({
        sessions: count,
        rssBytes: m.rss,
        heapUsedBytes: m.heapUsed,
        rssPerSessionBytes: (m.rss - base.rss) / count,
        heapPerSessionBytes: (m.heapUsed - base.heapUsed) / count,
      });
    }
    const first = points[0];
    const last = points[points.length - 1];
    const marginal = first && last && last !== first ? (last.rssBytes - first.rssBytes) / (last.sessions - first.sessions) : Number.NaN;
    return {
      connections,
      gcExposed: base.gcExposed,
      baseRssBytes: base.rss,
      baseHeapUsedBytes: base.heapUsed,
      points,
      marginalRssPerSessionBytes: marginal,
    };
  } finally {
    await peers.stop();
    await child.stop();
  }
}
