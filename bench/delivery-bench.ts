// Deferred delivery after registration (8.3.2.9.1.2): how fast the PF empties
// one group session's deferred queue into the served user's client, and what
// the group session records cost in memory.
//
// benchDelivery: N ~1 KB CPIM chat messages are queued through
// DeferredQueue.storeDeferred in the served user's own mailbox (logged in as
// that user through the Dovecot master user; the fill is timed only for its
// rate). Then the real DeliveryService gets a third-party REGISTER and runs
// the whole delivery: LIST/STATUS, the record from a real SessionRegistry
// (lifecycle "inactive"), a real DeliveryEndpoint on a standalone MSRP
// delivery listener, FETCHes of 100, SENDs pipelined up to media.deliveryWindow
// and confirmed items retired in sets (UID STORE + UID EXPUNGE) on real
// Dovecot. The client is an MsrpPeer that answers a=setup:active and
// connects. The SIP user agent is an in-process stub (the only part that is
// not real): it answers the one delivery INVITE with 200 and the peer's SDP
// answer and takes the ACK and BYE; per run that is one INVITE/ACK, so it
// does not weigh on a per-message figure.
// Baselines in the same run: (A) the same MSRP stack peer to peer (two
// MsrpPeers, one connects to the other) sending the same N bodies one at a
// time, each 200 awaited; (B) a bare imapflow FETCH (source) of the N stored
// messages of that folder.
//
// benchRecordMemory: 10,000 inactive group session records in a
// SessionRegistry, heap and RSS after gc against the same process before
// them: in a child process (node --expose-gc) that puts them, then in another
// started on the journal it left (a restart). Run directly as
// `node --expose-gc dist/bench/delivery-bench.js registry-child put|restart <n> <dir>`
// it is the child.
import { fork } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildConfig } from "../src/config/config.js";
import { type DeliveryLeg, DeliveryService, type DeliveryUa, type UaDialog } from "../src/delivery/service.js";
import { createRootLogger, type LogLevel, silentLogger } from "../src/log/logger.js";
import { DeliveryEndpoint, startDeliveryListener } from "../src/media/delivery-endpoint.js";
import type { DeferredItem, GroupSessionRef } from "../src/media/ports.js";
import type { ReceivedMessage } from "../src/msrp/chunking.js";
import { MsrpResources } from "../src/msrp/resources.js";
import type { QueueRef } from "../src/procedures/delivery-session.js";
import { stepLifecycle } from "../src/procedures/lifecycle.js";
import { type GroupSession, recordIdOf } from "../src/session/group-session.js";
import { SessionRegistry } from "../src/session/registry.js";
import { parseSipMessage } from "../src/sip/message.js";
import { DeferredQueue, type ReadCursor } from "../src/store/deferred-queue.js";
import { mailboxLogin, mailboxNameOf } from "../src/store/mailbox-name.js";
import { Mailboxes } from "../src/store/mailboxes.js";
import { chatCpimOfSize } from "../test/fixtures/cpim.js";
import { policy } from "../test/fixtures/delivery.js";
import { REGISTRAR_OK, registerAndResponse, thirdPartyRegister, UE_REGISTER } from "../test/fixtures/registration.js";
import type { DovecotInstance } from "../test/harness/dovecot.js";
import { connectImap } from "../test/harness/imap-read.js";
import { MsrpPeer, sdpPath } from "../test/harness/msrp-peer.js";

const BODY_BYTES = 1024;
const FOCUS = "sip:focus-bench@cf.example.net";

/** A realistic group chat SDP offer of the CF (~500 B, its own MSRP path per session). */
function cfOffer(i: number): string {
  return [
    "v=0",
    `o=cf-${i} 2890844526 2890844527 IN IP4 192.0.2.10`,
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=message 7394 TCP/MSRP *",
    "i=OMA CPM group chat",
    "b=AS:512",
    "a=accept-types:message/cpim application/im-iscomposing+xml multipart/mixed",
    "a=accept-wrapped-types:text/plain message/imdn+xml application/group-state-object+xml application/vnd.gsma.rcs-ft-http+xml application/vnd.gsma.botsuggestion.v1.0+json",
    "a=max-size:1048576",
    `a=path:msrp://192.0.2.10:7394/cf${String(i).padStart(8, "0")}s4711;tcp`,
    "a=setup:actpass",
    "a=connection:new",
    "a=msrp-cema",
    "a=sendrecv",
    "",
  ].join("\r\n");
}

/** An inactive group session record (8.3.2.3 2.b.iii: the CF ended it with 480): 5 participants, one terminated dialog. */
export function inactiveRecord(
  i: number,
  servedUser: string,
  conversationId: string,
  contributionId: string,
  sdpOffer = cfOffer(i),
): GroupSession {
  const callId = `cf-call-${i}-${conversationId}@cf.example.net`;
  const now = Date.now();
  return {
    key: callId,
    conversationId,
    contributionId,
    focusUri: `${FOCUS.replace("@", `-${i}@`)}`,
    conferenceFactoryUri: "",
    networkTag: `cf-tag-${i}`,
    servedUser,
    groupType: "Closed",
    subject: `Group chat ${i}`,
    icon: undefined,
    participants: Array.from({ length: 5 }, (_, p) => ({
      name: `Participant ${p}`,
      commAddr: `tel:+1613555${String((i * 5 + p) % 10_000).padStart(4, "0")}`,
    })),
    conferenceVersion: 7,
    sdpOffer,
    lifecycle: "inactive",
    lifecycleAt: now,
    endCause: 480,
    pendingDeferred: true,
    dialogs: [
      {
        callId,
        cfTag: `cf-tag-${i}`,
        clientTag: `client-tag-${i}`,
        remoteTarget: `sip:focus-${i}@192.0.2.10:5060;transport=tcp`,
        routeSet: ["<sip:127.0.0.1:5060;lr;r2=on>", "<sip:scscf1.home1.net;lr>"],
        inviteCseq: 1,
        clientInstance: "<urn:gsma:imei:35209900-176148-0>",
        state: "terminated",
      },
    ],
    createdAt: now,
    updatedAt: now,
  };
}

/** The S-CSCF's third-party REGISTER for `servedUser`, the UE's REGISTER and the registrar's 200 OK in the body. */
function registerFor(servedUser: string): Buffer {
  const own = (s: string) => s.replaceAll("sip:user1_public1@home1.net", servedUser);
  return thirdPartyRegister({ to: servedUser, body: registerAndResponse(own(REGISTRAR_OK), own(UE_REGISTER)) });
}

/** The client's 200 OK to the delivery INVITE, with its SDP answer. */
function okWithAnswer(callId: string, sdp: string) {
  return parseSipMessage(
    Buffer.from(
      [
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 127.0.0.1:5097;branch=z9hG4bK-bench",
        `From: <${FOCUS}>;tag=pf`,
        "To: <sip:client@127.0.0.1>;tag=client",
        `Call-ID: ${callId}`,
        "CSeq: 1 INVITE",
        "Contact: <sip:client@127.0.0.1:5099>",
        "Content-Type: application/sdp",
        `Content-Length: ${Buffer.byteLength(sdp)}`,
        "",
        sdp,
      ].join("\r\n"),
    ),
  );
}

/**
 * The SIP part, in process: one INVITE answered 200 (the peer's a=setup:active
 * answer; the peer then connects to the PF's a=path), ACK and BYE taken.
 */
class StubUa implements DeliveryUa {
  invites = 0;
  byes = 0;
  constructor(private readonly client: MsrpPeer) {}

  invite(req: { requestUri: string; headers: [string, string][]; body: string }) {
    this.invites++;
    const callId = `delivery-${this.invites}-${process.pid}@pf.example.net`;
    const pfPath = sdpPath(req.body);
    const outcome = Promise.resolve().then(() => {
      const dialog: UaDialog = { callId };
      // the client sends its 200 and connects (RFC 6135 active) at the same time
      setImmediate(() => void this.client.open(pfPath, "active").catch(() => undefined));
      return { status: 200, reason: "OK", response: okWithAnswer(callId, this.client.sdp("active")), dialog };
    });
    return { callId, outcome, cancel() {} };
  }

  ack(): void {}

  async bye(): Promise<number> {
    this.byes++;
    return 200;
  }

  onRequest(): void {}
  onInvite(): void {}
}

export interface DeliveryRun {
  n: number;
  mailbox: string;
  folder: string;
  fillPerSecond: number;
  /** Registration to the last SEND answered 200. */
  pfMs: number;
  /** Registration to the first SEND answered 200 (REGISTER, LIST, INVITE, MSRP connect and bind, first FETCH). */
  firstMs: number;
  /** Registration to the queue read back empty and every item removed (NaN: not within the bench's timeout). */
  drainedMs: number;
  /** Baseline A: MsrpPeer -> MsrpPeer, one SEND at a time. */
  peerMs: number;
  /** Baseline B: one bare FETCH of the N messages (source). */
  fetchMs: number;
  /** Time inside DeferredQueue.read / ack during the delivery (measured around the real calls). */
  io: { reads: number; readMs: number; acks: number; ackMs: number };
  /** CPU of this process (the PF's delivery and the client peer) from the registration to the queue read back empty. */
  cpuMs: number;
  delivered: number;
  duplicates: number;
  reordered: number;
  leftInQueue: number;
  answered200: number;
  invites: number;
}

export interface DeliveryBenchResult {
  window: number;
  runs: DeliveryRun[];
}

/** The index carried in the CPIM imdn.Message-ID of a body (chatCpimOfSize: imdn-<n>). */
function indexOf(m: ReceivedMessage): number {
  const found = /imdn\.Message-ID: imdn-(\d+)\r\n/.exec(m.body.toString("latin1"));
  return found ? Number(found[1]) : -1;
}

/** A served user of its own per run: a mailbox of its own, nothing left from another run. */
function servedUserOf(runNo: number): string {
  return `tel:+1613555${String(2000 + runNo).padStart(4, "0")}`;
}

async function oneRun(dovecot: DovecotInstance, n: number, runNo: number, dir: string): Promise<DeliveryRun> {
  const tag = `${process.pid}-${Date.now()}-${runNo}`;
  const servedUser = servedUserOf(runNo);
  const mailbox = mailboxNameOf(servedUser);
  const login = { user: mailboxLogin(`{user}*${dovecot.masterUser}`, mailbox), password: dovecot.masterPassword };
  const cfg = buildConfig({
    store: {
      host: dovecot.host,
      port: dovecot.port,
      user: `{user}*${dovecot.masterUser}`,
      password: dovecot.masterPassword,
      spoolDir: join(dir, `spool-${runNo}`),
    },
    media: { enabled: true, host: "127.0.0.1", port: 0, clientLegTimeoutMs: 30_000 },
  });
  // BENCH_LOG_LEVEL=warn (say): the PF's log lines on stderr, to see why a run went wrong
  const level = process.env.BENCH_LOG_LEVEL as LogLevel | undefined;
  const log = level ? createRootLogger(level) : silentLogger();
  const store = new Mailboxes(cfg.store, log);
  await store.start();
  const queue = new DeferredQueue(cfg.store, store, log);
  const registry = new SessionRegistry(join(dir, `state-${runNo}`), cfg.session, log);
  await registry.load();
  const listener = await startDeliveryListener({ config: cfg.media, resources: new MsrpResources(), logger: log });
  const client = await MsrpPeer.start({ logger: log });
  const a = await MsrpPeer.start({ logger: log });
  const b = await MsrpPeer.start({ logger: log });
  const imap = await connectImap(dovecot, login);
  let service: DeliveryService | undefined;
  try {
    const conversationId = `conv-delivery-bench-${tag}`;
    const contributionId = `contrib-delivery-bench-${tag}`;
    const record = inactiveRecord(runNo, servedUser, conversationId, contributionId);
    await registry.put(record);
    const ref: GroupSessionRef = { sessionKey: record.key, servedUser, conversationId, contributionId, focus: record.focusUri };
    const folder = queue.folderOf(ref);
    const bodies = Array.from({ length: n }, (_, i) => chatCpimOfSize(BODY_BYTES, i));

    // fill (rate only)
    let t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const item: DeferredItem = {
        kind: "message",
        contentType: "message/cpim",
        body: bodies[i] as Buffer,
        msrpMessageId: `fill${String(i).padStart(8, "0")}`,
        receivedAt: new Date(),
      };
      await queue.storeDeferred(ref, item);
    }
    const fillMs = performance.now() - t0;
    if (queue.stats().spooled > 0) throw new Error("bench: the store went down during the fill");

    // Baseline B: one bare FETCH of the N messages of the folder
    const lock = await imap.getMailboxLock(folder, { readOnly: true });
    let fetched = 0;
    try {
      t0 = performance.now();
      for await (const m of imap.fetch("1:*", { uid: true, source: true })) if (m.source) fetched++;
    } finally {
      lock.release();
    }
    const fetchMs = performance.now() - t0;
    if (fetched !== n) throw new Error(`bench: FETCH returned ${fetched} of ${n}`);

    // Baseline A: the same MSRP stack peer to peer, one SEND at a time
    await b.open(a.path, "passive");
    await a.open(b.path, "active");
    t0 = performance.now();
    for (const body of bodies) {
      const r = await a.send(body, "message/cpim");
      if (r.code !== 200) throw new Error(`bench: peer-to-peer SEND answered ${r.code}`);
    }
    const peerMs = performance.now() - t0;
    if (b.received.length !== n) throw new Error(`bench: peer-to-peer received ${b.received.length} of ${n}`);
    b.received.length = 0;

    // PF delivery
    const ua = new StubUa(client);
    let answered200 = 0;
    const io = { reads: 0, readMs: 0, acks: 0, ackMs: 0 };
    let firstAnswered = 0;
    let lastAnswered = 0;
    let drainedAt = 0;
    // the queue is empty once every SEND was answered, a read found nothing left and every item was
    // removed (between two removals none runs while the next set waits: that is not empty yet)
    let emptyRead = false;
    let removed = 0;
    const settled = () => {
      if (drainedAt === 0 && answered200 === n && emptyRead && removed >= n) {
        drainedAt = performance.now();
        drained();
      }
    };
    let drained!: () => void;
    const allDrained = new Promise<void>((resolve) => {
      drained = resolve;
    });
    const counting = (leg: DeliveryLeg): DeliveryLeg => {
      const send = leg.send.bind(leg);
      leg.send = (item) =>
        send(item).then((code) => {
          if (code === 200 && ++answered200 === 1) firstAnswered = performance.now();
          if (code === 200 && answered200 === n) lastAnswered = performance.now();
          return code;
        });
      return leg;
    };
    service = new DeliveryService({
      policy: { ...policy, retryAttempts: 0 },
      servedUser: "",
      ua,
      openLeg: async (sessionKey, originalSdp) => {
        const { endpoint, offerSdp } = await DeliveryEndpoint.create({ sessionKey, originalSdp, msrp: listener.share });
        return { leg: counting(endpoint), offerSdp };
      },
      answerLeg: () => Promise.reject(new Error("no re-join in this benchmark")),
      queue: {
        listSessions: (u, d) => queue.listSessions(u, d),
        mark: async (handles, keyword) => {
          const s = performance.now();
          try {
            return await queue.mark(handles, keyword);
          } finally {
            io.ackMs += performance.now() - s;
          }
        },
        marks: (target) => queue.marks(target),
        markThrough: (target, keyword, through) => queue.markThrough(target, keyword, through),
        ack: async (handles, opts) => {
          const s = performance.now();
          try {
            const gone = await queue.ack(handles, opts);
            removed += gone;
            return gone;
          } finally {
            io.ackMs += performance.now() - s;
            io.acks++;
            settled();
          }
        },
        discardFor: (target, keyword) => queue.discardFor(target, keyword),
        read: async (target: QueueRef, limit: number, after?: ReadCursor) => {
          const s = performance.now();
          const records = await queue.read(target, limit, after);
          io.readMs += performance.now() - s;
          io.reads++;
          if (records.length === 0) emptyRead = true;
          settled();
          return records;
        },
      },
      sessions: registry,
      // as the PF does it: the record keeps how far the device confirmed (one journal write per ack set)
      deviceDelivered: async (user, conv, contrib, keyword, through) => {
        const rec = registry.findByIds(user, conv, contrib);
        const next = rec && stepLifecycle(rec, { type: "deviceDelivered", keyword, through }, Date.now()).record;
        if (next && next !== rec) await registry.put(next);
      },
      queueSettled: async () => {},
      log,
    });
    const profiler = await startProfile();
    const cpu0 = process.cpuUsage();
    t0 = performance.now();
    const reg = await service.onRegistration({ raw: registerFor(servedUser) });
    if (reg.deliveries !== 1) throw new Error(`bench: registration started ${reg.deliveries} deliveries (${reg.notes.join("; ")})`);
    const timeout = setTimeout(() => drained(), Math.max(60_000, n * 20));
    await allDrained;
    const cpu = process.cpuUsage(cpu0);
    await profiler?.stop(`delivery-${n}`);
    clearTimeout(timeout);
    if (answered200 !== n) throw new Error(`bench: delivery did not finish (${answered200} of ${n} answered)`);
    // every SEND answered but not every item removed in time: "left in queue" tells how many
    if (drainedAt === 0) drainedAt = Number.NaN;

    // order and duplicates checked afterwards, as the baseline's receiver does nothing per message either
    const seen = client.received.map(indexOf);
    const unique = new Set(seen);
    let reordered = 0;
    for (let i = 1; i < seen.length; i++) if ((seen[i] as number) <= (seen[i - 1] as number)) reordered++;
    // a fresh session: the bench's own client still has the folder selected (cached counts)
    const check = await connectImap(dovecot, login);
    const status = await check.status(folder, { messages: true }).finally(() => check.logout().catch(() => check.close()));
    return {
      n,
      mailbox,
      folder,
      fillPerSecond: (n * 1000) / fillMs,
      pfMs: lastAnswered - t0,
      firstMs: firstAnswered - t0,
      io,
      cpuMs: (cpu.user + cpu.system) / 1000,
      drainedMs: drainedAt - t0,
      peerMs,
      fetchMs,
      delivered: unique.size,
      duplicates: seen.length - unique.size,
      reordered,
      leftInQueue: status ? (status.messages ?? -1) : -1,
      answered200,
      invites: ua.invites,
    };
  } finally {
    service?.close();
    await imap.logout().catch(() => imap.close());
    for (const p of [client, a, b]) await p.close();
    await listener.close();
    await registry.close();
    await store.close();
  }
}

/** BENCH_DELIVERY_PROFILE=<dir>: a V8 CPU profile of each PF delivery (registration to queue empty), <dir>/delivery-<n>.cpuprofile. */
async function startProfile(): Promise<{ stop(name: string): Promise<void> } | undefined> {
  const dir = process.env.BENCH_DELIVERY_PROFILE;
  if (!dir) return undefined;
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: 200 });
  await session.post("Profiler.start");
  return {
    async stop(name) {
      const { profile } = await session.post("Profiler.stop");
      session.disconnect();
      await writeFile(join(dir, `${name}.cpuprofile`), JSON.stringify(profile));
    },
  };
}

/** Delivery of one group session's queue of n messages, for each n (ascending), with both baselines. */
export async function benchDelivery(dovecot: DovecotInstance, counts: number[] = [1000, 10_000]): Promise<DeliveryBenchResult> {
  const dir = await mkdtemp(join(tmpdir(), "cpm-pf-delivery-bench-"));
  try {
    // every mailbox before the first login: Dovecot re-reads its passwd-file by mtime (1 s resolution)
    for (let i = 0; i <= counts.length; i++) await dovecot.addUser(mailboxNameOf(servedUserOf(i)));
    await new Promise((r) => setTimeout(r, 1100));
    // warm-up (JIT, Dovecot's first logins), not reported: long enough that the first reported
    // run is not still in the interpreter's or baseline compiler's code (either path)
    await oneRun(dovecot, Number(process.env.BENCH_DELIVERY_WARMUP ?? 1000), 0, dir);
    const runs: DeliveryRun[] = [];
    for (const [i, n] of counts.entries()) runs.push(await oneRun(dovecot, n, i + 1, dir));
    return { window: buildConfig({}).media.deliveryWindow, runs };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** True when a run delivered every message once, in order, and left nothing queued. */
export function deliveryCorrect(r: DeliveryRun): boolean {
  return r.delivered === r.n && r.duplicates === 0 && r.reordered === 0 && r.leftInQueue === 0 && r.answered200 === r.n && r.invites === 1;
}

// ---- memory of the group session records ---------------------------------------------

export interface RecordMemoryResult {
  records: number;
  gcExposed: boolean;
  sdpBytes: number;
  rssBytes: number;
  heapUsedBytes: number;
  baseRssBytes: number;
  baseHeapUsedBytes: number;
  rssPerRecordBytes: number;
  heapPerRecordBytes: number;
  /** One record as the journal holds it (JSON). */
  journalBytesPerRecord: number;
  /** Records the registry holds in memory (the others are index entries). */
  inMemory: number;
}

export interface RecordMemoryRuns {
  /** The sidecar that put the records (RSS keeps the high-water mark of building them). */
  put: RecordMemoryResult;
  /** A sidecar started on the journal they left. */
  restart: RecordMemoryResult;
}

interface Sample {
  rss: number;
  heapUsed: number;
}

async function measure(): Promise<Sample> {
  const gc = (globalThis as { gc?: () => void }).gc;
  for (let i = 0; i < 3; i++) gc?.();
  await new Promise((r) => setTimeout(r, 50));
  gc?.();
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed };
}

async function registryChild(mode: "put" | "restart", n: number, dir: string): Promise<void> {
  const cfg = buildConfig({});
  let base: Sample;
  let journalBytes = 0;
  const registry = new SessionRegistry(dir, cfg.session, silentLogger());
  if (mode === "put") {
    await registry.load();
    // warm-up: the code paths and a record of each shape, then gone
    const warm = inactiveRecord(0, "tel:+16135550000", "warm", "warm");
    await registry.put(warm);
    await registry.purge(recordIdOf(warm));
    base = await measure();
    for (let i = 1; i <= n; i++) {
      // each record as it is after a restart (parsed from the journal): its own flat strings
      const line = JSON.stringify(inactiveRecord(i, `tel:+1613${String(5_000_000 + i)}`, `conv-${i}-${"a".repeat(24)}`, `contrib-${i}`));
      journalBytes += line.length;
      void registry.put(JSON.parse(line) as GroupSession);
      if (i % 500 === 0) await registry.flush();
    }
    await registry.flush();
  } else {
    base = await measure();
    await registry.load();
  }
  const m = await measure();
  const result: RecordMemoryResult = {
    records: registry.size,
    inMemory: registry.inMemory,
    gcExposed: typeof (globalThis as { gc?: unknown }).gc === "function",
    sdpBytes: cfOffer(1).length,
    rssBytes: m.rss,
    heapUsedBytes: m.heapUsed,
    baseRssBytes: base.rss,
    baseHeapUsedBytes: base.heapUsed,
    rssPerRecordBytes: (m.rss - base.rss) / n,
    heapPerRecordBytes: (m.heapUsed - base.heapUsed) / n,
    journalBytesPerRecord: journalBytes / n,
  };
  await registry.close();
  process.send?.(result);
}

if (process.argv[2] === "registry-child") {
  registryChild(process.argv[3] === "restart" ? "restart" : "put", Number(process.argv[4] ?? 10_000), process.argv[5] ?? "").then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}

/** Heap and RSS of `n` inactive group session records in a SessionRegistry: in the process that put them, and in one started on their journal. */
export async function benchRecordMemory(n = 10_000): Promise<RecordMemoryRuns> {
  const dir = await mkdtemp(join(tmpdir(), "cpm-pf-registry-bench-"));
  const child = async (mode: "put" | "restart") => {
    const proc = fork(fileURLToPath(import.meta.url), ["registry-child", mode, String(n), dir], {
      // a young generation of fixed size, as in media-bench: RSS then moves with the records, not with V8's resizing
      execArgv: ["--expose-gc", "--min-semi-space-size=16", "--max-semi-space-size=16"],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const [result] = (await once(proc, "message")) as [RecordMemoryResult];
    await once(proc, "exit");
    return result;
  };
  try {
    const put = await child("put");
    const restart = await child("restart");
    return { put, restart: { ...restart, journalBytesPerRecord: put.journalBytesPerRecord } };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
