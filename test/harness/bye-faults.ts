// A burst of B2BUA BYEs (cause 480, one group folder per session, sessions
// spread over many served users' mailboxes) through real Kamailio, sidecar and
// Dovecot, with one fault injected mid-burst, then counted from what is on the
// wire (SIPp traces), in the Message Store (IMAP) and in the sidecar's own
// record journal. Shared by `npm run faults` (faults/) and the short e2e form
// (test/e2e/bye-faults.test.ts). Every process is stopped by its PID.
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { defaults } from "../../src/config/config.js";
import { silentLogger } from "../../src/log/logger.js";
import { isGroupActive } from "../../src/session/group-session.js";
import type { SessionStore } from "../../src/session/record-store.js";
import { RedisRecordStore } from "../../src/session/redis/redis-record-store.js";
import { WRITE_AHEAD_FILE } from "../../src/session/redis/write-ahead.js";
import { SessionRegistry } from "../../src/session/registry.js";
import { type BurstSession, callNumber, DEFAULT_CALL_ID_PREFIX, openDialogs, startBurstClient, startByeBurst } from "./bye-burst.js";
import { type DovecotInstance, startDovecot } from "./dovecot.js";
import { perUserStoreEnv } from "./group-chat.js";
import { connectImap } from "./imap-read.js";
import { type KamailioInstance, type KamailioOptions, startKamailio } from "./kamailio.js";
import { freePort } from "./ports.js";
import { type RedisInstance, startRedis } from "./redis.js";
import { type SidecarInstance, startSidecar } from "./sidecar.js";
import { header, type SipTraceMessage } from "./sipp.js";
import { waitFor } from "./wait.js";

export type Fault = "none" | "sidecar-kill" | "dovecot-kill" | "dovecot-stop" | "kamailio-kill" | "redis-kill";

export interface FaultRunOptions {
  fault: Fault;
  /**
   * Scale-out: two Kamailio instances, each sending half of the dialogs, in
   * front of two sidecars sharing the group session records on Redis (each
   * Kamailio prefers another sidecar, CPM_PF_GRPC_TARGET "a,b" / "b,a").
   * "sidecar-kill" then SIGKILLs the first sidecar (restarted after downMs:
   * its spool drains), whose decisions the other takes within the deadline;
   * "redis-kill" SIGKILLs Redis (AOF, appendfsync always) and starts it
   * again on its port and directory after downMs.
   */
  scaleOut?: boolean;
  /** BYEs (= sessions, one dialog each). */
  byes: number;
  /** Served users (tel:+1613555NNNN), each its own Dovecot user and mailbox; session i belongs to user i mod users. */
  users: number;
  /** BYE transactions in flight (SIPp -l). */
  concurrent: number;
  /** The fault is injected once this share of the BYEs was decided. Default 0.25. */
  faultAt?: number;
  /** How long the sidecar (sidecar-kill), Dovecot (dovecot-kill) or Redis (redis-kill) stays down, Dovecot frozen (dovecot-stop). Default 2000 / 2000 / 5000 ms. */
  downMs?: number;
  /**
   * sidecar-kill with scaleOut: the killed sidecar stays down for the rest of
   * the burst (the other one takes every decision) and is started again only
   * after it, for its spool and fail-safe journal to drain. Default: restarted
   * after downMs, during the burst.
   */
  restartAfterBurst?: boolean;
  /** Kamailio's CPM_PF_DEADLINE_MS. Default 200 (the plugin's). */
  deadlineMs?: number;
  /** The sidecars' store.gsoBudgetMs. Default the sidecar's. */
  gsoBudgetMs?: number;
  /** Each Kamailio's core async workers (the processes that wait for the sidecar's decisions). Default the cfg's (4). */
  asyncWorkers?: number;
  /** How long the spool and the fail-safe journal may take to drain after the burst. Default 120 s. */
  drainTimeoutMs?: number;
  /** Progress lines. */
  progress?: (line: string) => void;
}

export interface FaultCounts {
  fault: Fault;
  /** Dialogs phase 1 opened (the CF got the 200 OK of its INVITE). */
  dialogs: number;
  /** BYEs the CF sent (distinct Call-IDs; retransmissions not counted). */
  byesSent: number;
  /** BYEs the CF got a final response to, and how many of those were not 200. */
  byesAnswered: number;
  byesAnsweredNot200: number;
  /** One per BYE whose INVITE the sidecar observed (its record journal knows the Call-ID). */
  gsosExpected: number;
  /** GSO objects in the served users' group folders (IMAP). */
  gsosStored: number;
  /** Expected sessions whose group folder holds no GSO. */
  gsosMissing: number;
  /** Objects beyond the first in a session's folder, plus Message-IDs found in more than one folder. */
  gsosDoubled: number;
  /** GSOs in folders of sessions not expected (not observed). */
  gsosUnexpected: number;
  /** Kamailio's cpm_pf_failsafe, summed over its instances (a killed one: the value read just before the kill). */
  failsafeByes: number;
  /** Of those, the ones before the fault was injected (a loaded machine's, not the fault's). */
  failsafeBeforeFault: number;
  /** Fail-safe BYEs the sidecar replayed from the journal (its log "fail-safe BYE replayed"). */
  replayed: number;
  /**
   * Of the replayed ones, those whose BYE the CF first sent at or after the fault's instant: decisions
   * that started after the kill, not ones in flight when it came (the CF SIPp's trace).
   */
  replayedReceivedAfterFault: number;
  /** Records of the run's sessions still active, or with a dialog not terminated, in the sidecar's journal after the run. */
  recordsLeaked: number;
  /** Decided BYEs (B2BUA) whose outcome the last sidecar never saw ("BYE completed" / "BYE outcome never reported"). */
  outcomesPending: number;
  /** BYEs that reached the client later than the deadline after the CF sent them (or never). */
  pastDeadline: number;
  /** CF BYE -> client BYE (the PF's hold of the BYE), ms: p50, p99, max over the BYEs the client got. */
  relayMs: { p50: number; p99: number; max: number };
  /** CF BYE -> CF final response, ms: p50, p99, max. */
  answerMs: { p50: number; p99: number; max: number };
  /** Burst start to the last CF answer, and the drain after it, ms. */
  burstMs: number;
  drainMs: number;
  /** Files left in the fail-safe journal's bad/ and in the spools' bad/ directories. */
  badRecords: number;
  /** Why Kamailio relayed BYEs through the fail-safe ("<count> <reason>", its log lines, numbers masked), most first. */
  failsafeReasons: string[];
  notes: string[];
}

/** The served users' numbers (tel:), one Dovecot user each. */
export function servedUsers(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `+1613555${String(3000 + i).padStart(4, "0")}`);
}

function quantiles(values: number[]): { p50: number; p99: number; max: number } {
  if (values.length === 0) return { p50: Number.NaN, p99: Number.NaN, max: Number.NaN };
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))] as number;
  return { p50: at(0.5), p99: at(0.99), max: s[s.length - 1] as number };
}

const isBye = (m: SipTraceMessage) => (header(m, "cseq") ?? "").split(/\s+/)[1] === "BYE";

/** First time per Call-ID of the messages matching. */
function firstByCallId(messages: SipTraceMessage[], pred: (m: SipTraceMessage) => boolean): Map<string, SipTraceMessage> {
  const out = new Map<string, SipTraceMessage>();
  for (const m of messages) {
    if (!pred(m)) continue;
    const id = header(m, "call-id") ?? "";
    if (!out.has(id)) out.set(id, m);
  }
  return out;
}

/** Entries (files) left under a directory tree, skipping what `skip` names. */
async function entries(dir: string, skip: (name: string) => boolean): Promise<{ live: number; bad: number }> {
  let live = 0;
  let bad = 0;
  const walk = async (d: string, inBad: boolean) => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) await walk(join(d, e.name), inBad || e.name === "bad");
      else if (inBad) bad++;
      else if (!skip(e.name)) live++;
    }
  };
  await walk(dir, false);
  return { live, bad };
}

/** Spool entries (not the owner file, not a temp file), fail-safe records (.bye) and record writes held for Redis (lines) still waiting. */
async function waiting(spoolDir: string, failsafeDir: string, stateDir: string) {
  const spool = await entries(spoolDir, (n) => n === "owner" || n.startsWith(".tmp-"));
  const journal = await entries(failsafeDir, (n) => !n.endsWith(".bye"));
  const held = (await readFile(join(stateDir, WRITE_AHEAD_FILE), "utf8").catch(() => "")).split("\n").filter(Boolean).length;
  return { live: spool.live + journal.live + held, bad: spool.bad + journal.bad };
}

/** Message-IDs per group folder (Default/<conv>/<contrib>) of every user, read through the master user. */
async function storedGsos(dovecot: DovecotInstance, users: string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const user of users) {
    const c = await connectImap(dovecot, { user: `${user}*${dovecot.masterUser}`, password: dovecot.masterPassword });
    try {
      const folders = (await c.list()).map((b) => b.path).filter((p) => p.startsWith("Default/") && p.split("/").length === 3);
      for (const folder of folders) {
        const ids: string[] = [];
        const lock = await c.getMailboxLock(folder, { readOnly: true });
        try {
          if (c.mailbox && c.mailbox.exists > 0) {
            for await (const m of c.fetch("1:*", { envelope: true })) ids.push(m.envelope?.messageId ?? "");
          }
        } finally {
          lock.release();
        }
        out.set(`${user}|${folder}`, ids);
      }
    } finally {
      await c.logout().catch(() => c.close());
    }
  }
  return out;
}

/** The JSON log lines of every sidecar of a run, whole, as they come. */
class SidecarLog {
  readonly lines: Record<string, unknown>[] = [];
  /** Lines per incarnation start here. */
  readonly starts: number[] = [];
  decided = 0;
  /** The output listener of one sidecar process (several may run at once: each keeps its own partial line). */
  begin(): (chunk: string) => void {
    this.starts.push(this.lines.length);
    // which process wrote a line, in FAULTS_LOG_DIR's sidecars.jsonl: the incarnation's number, from 1
    const incarnation = this.starts.length;
    let rest = "";
    return (chunk) => {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop() ?? "";
      for (const l of parts) {
        if (!l.startsWith("{")) continue;
        try {
          const rec = JSON.parse(l) as Record<string, unknown>;
          const line = { ...rec, msg: rec.msg ?? rec.message, incarnation };
          if (line.msg === "BYE decided") this.decided++;
          this.lines.push(line);
        } catch {
          // not a log line
        }
      }
    };
  }
  count(msg: string, from = 0): number {
    return this.lines.slice(from).filter((l) => l.msg === msg).length;
  }
}

/** One case: start everything, open the dialogs, BYE burst with the fault, drain, count, stop everything. */
export async function runFaultCase(opts: FaultRunOptions): Promise<FaultCounts> {
  const say = opts.progress ?? (() => {});
  const deadlineMs = opts.deadlineMs ?? 200;
  const faultAt = opts.faultAt ?? 0.25;
  const notes: string[] = [];
  const dir = await mkdtemp(join(tmpdir(), "cpm-faults-"));
  const spoolDir = join(dir, "spool");
  const failsafeDir = join(dir, "failsafe");
  const stateDir = join(dir, "state");
  const users = servedUsers(opts.users);
  const tag = Math.random().toString(36).slice(2, 8);
  const sessions: BurstSession[] = Array.from({ length: opts.byes }, (_, i) => ({
    user: users[i % users.length] as string,
    conversationId: `conv-${tag}-${i + 1}`,
    contributionId: `contrib-${tag}-${i + 1}`,
  }));

  let dovecot: DovecotInstance | undefined;
  let redis: RedisInstance | undefined;
  const sidecars: SidecarInstance[] = [];
  const kamailios: KamailioInstance[] = [];
  let failsafeOfKilled = 0;
  let failsafeBeforeFault = 0;
  let faultInstant = Number.POSITIVE_INFINITY;
  try {
    dovecot = await startDovecot({ users });
    if (opts.scaleOut) redis = await startRedis();
    const shared: Record<string, string> = redis ? { CPM_PF__SESSION__STORE: "redis", CPM_PF__SESSION__REDISURL: redis.url } : {};
    // one sidecar (the journal) or two (Redis), each with its own spool and the fail-safe journal of "its" Kamailio
    const nodes = opts.scaleOut ? 2 : 1;
    const envs: Record<string, string>[] = [];
    for (let n = 0; n < nodes; n++) {
      const suffix = n === 0 ? "" : `-${n + 1}`;
      envs.push({
        ...perUserStoreEnv(dovecot, "b2bua"),
        ...shared,
        CPM_PF__GRPC__PORT: String(await freePort()),
        CPM_PF__STORE__SPOOLDIR: spoolDir + suffix,
        CPM_PF__SESSION__STATEDIR: stateDir + suffix,
        CPM_PF__SESSION__FAILSAFEDIR: failsafeDir + suffix,
        ...(opts.gsoBudgetMs === undefined ? {} : { CPM_PF__STORE__GSOBUDGETMS: String(opts.gsoBudgetMs) }),
      });
    }
    const log = new SidecarLog();
    for (const env of envs) sidecars.push(await startSidecar(env, { onOutput: log.begin() }));
    const targets = sidecars.map((sc) => sc.target);
    const kamailioOptions: KamailioOptions[] = envs.map((env, n) => ({
      // each Kamailio prefers its own sidecar and fails over to the other
      grpcTarget: [...targets.slice(n), ...targets.slice(0, n)].join(","),
      deadlineMs,
      shmMb: 512,
      ...(opts.asyncWorkers === undefined ? {} : { asyncWorkers: opts.asyncWorkers }),
      // a client leg the restarted Kamailio relays a retransmitted BYE on is over (its SIPp absorbs it): the PF's 200 (BYE-B9) comes sooner
      defines: [`CPM_PF_FAILSAFE_DIR="${env.CPM_PF__SESSION__FAILSAFEDIR}"`, "CPM_PF_BYE_CLIENT_TIMEOUT_MS=2000"],
    }));
    for (const o of kamailioOptions) kamailios.push(await startKamailio(o));
    // one lane per Kamailio: its share of the sessions, its own Call-IDs and SIPp files
    const lanes = await Promise.all(
      kamailios.map(async (k, n) => {
        const laneDir = nodes === 1 ? dir : join(dir, `lane${n + 1}`);
        await mkdir(laneDir, { recursive: true });
        const mine = sessions.filter((_, i) => i % nodes === n);
        return { address: k.address, dir: laneDir, prefix: nodes === 1 ? DEFAULT_CALL_ID_PREFIX : `cpm-k${n + 1}-`, sessions: mine };
      }),
    );

    say(`${opts.fault}: opening ${opts.byes} dialogs for ${users.length} users through ${nodes} Kamailio`);
    const client = await startBurstClient(dir, opts.byes, { traceMessages: true });
    const opened = await Promise.all(
      lanes.map((l) => openDialogs(l.address, l.dir, client.port, l.sessions, Math.max(1, Math.ceil(opts.concurrent / nodes)), l.prefix)),
    );
    for (const o of opened) if (o.code !== 0) notes.push(`phase 1 SIPp exit ${o.code}`);

    const decided = () => log.decided;
    const before = decided();
    const started = performance.now();
    const bursts = await Promise.all(
      lanes.map((l, n) =>
        startByeBurst(
          l.address,
          l.dir,
          client.port,
          (opened[n] as { dialogs: string[] }).dialogs,
          l.sessions.length,
          Math.max(1, Math.ceil(opts.concurrent / nodes)),
          {
            reason: "SIP;cause=480",
            traceMessages: true,
            callIdPrefix: l.prefix,
            // RFC 3261 17.1.2.2: the CF retransmits its BYE (T1 500 ms, to T2 4 s) until Timer F (64*T1); SIPp's default gives up after 5
            extraArgs: ["-max_non_invite_retrans", "10"],
          },
        ),
      ),
    );
    let burstOver = false;
    const allDone = Promise.all(bursts.map((b) => b.done));
    void allDone.then(() => {
      burstOver = true;
    });
    if (opts.fault !== "none") {
      const at = Math.max(1, Math.floor(opts.byes * faultAt));
      await waitFor(() => burstOver || decided() - before >= at, 300_000, 20, `${at} BYEs decided`);
      if (burstOver) throw new Error(`${opts.fault}: the BYE burst ended before ${at} BYEs were decided (${decided() - before})`);
      say(`${opts.fault}: injecting after ${decided() - before} decisions`);
      for (const k of kamailios) failsafeBeforeFault += await k.stat("cpm_pf_failsafe").catch(() => 0);
      faultInstant = Date.now();
      await inject(opts, {
        dovecot,
        redis,
        sidecars,
        kamailios,
        sidecarEnv: envs[0] as Record<string, string>,
        kamailioOptions: kamailioOptions[kamailioOptions.length - 1] as KamailioOptions,
        log,
        onKamailioKilled: (n) => {
          failsafeOfKilled += n;
        },
      });
    }
    const cfCodes = await allDone;
    const burstMs = performance.now() - started;
    for (const code of cfCodes) if (code !== 0) notes.push(`CF SIPp exit ${code}`);
    // a BYE the client never got leaves its call open: give it a moment, then stop it by PID
    const clientCode = await Promise.race([client.done, sleep(10_000).then(() => "running" as const)]);
    if (clientCode === "running") {
      notes.push("client SIPp still had calls open");
      process.kill(client.pid, "SIGTERM");
      await client.done;
    }

    say(`${opts.fault}: burst over in ${(burstMs / 1000).toFixed(1)} s, draining the spools and the fail-safe journals`);
    if (opts.fault === "sidecar-kill" && opts.scaleOut && opts.restartAfterBurst) {
      await restartKilled({ sidecars, sidecarEnv: envs[0] as Record<string, string>, log });
    }
    const drainStart = performance.now();
    const pending = async () => {
      const each = await Promise.all(
        envs.map((e) =>
          waiting(e.CPM_PF__STORE__SPOOLDIR as string, e.CPM_PF__SESSION__FAILSAFEDIR as string, e.CPM_PF__SESSION__STATEDIR as string),
        ),
      );
      return { live: each.reduce((a, w) => a + w.live, 0), bad: each.reduce((a, w) => a + w.bad, 0) };
    };
    let left = await pending();
    const drainDeadline = Date.now() + (opts.drainTimeoutMs ?? 120_000);
    while (left.live > 0 && Date.now() < drainDeadline) {
      await sleep(100);
      left = await pending();
    }
    const drainMs = performance.now() - drainStart;
    if (left.live > 0) notes.push(`${left.live} spool / journal entries still waiting after the drain timeout`);

    let failsafeByes = failsafeOfKilled;
    for (const k of kamailios) if (!k.exited()) failsafeByes += await k.stat("cpm_pf_failsafe").catch(() => 0);
    const reasons = new Map<string, number>();
    for (const k of kamailios) {
      for (const m of k.logs().matchAll(/fail-safe for BYE: (.*?); relaying unchanged/g)) {
        const why = (m[1] ?? "").replace(/\d+(\.\d+)?/g, "N").slice(0, 120);
        reasons.set(why, (reasons.get(why) ?? 0) + 1);
      }
    }
    const failsafeReasons = [...reasons].sort((x, y) => y[1] - x[1]).map(([why, n]) => `${n} ${why}`);
    // FAULTS_LOG_DIR: each Kamailio's log and the sidecars' JSON lines, for a look after the run
    if (process.env.FAULTS_LOG_DIR) {
      await mkdir(process.env.FAULTS_LOG_DIR, { recursive: true });
      for (const [n, k] of kamailios.entries()) await writeFile(join(process.env.FAULTS_LOG_DIR, `kamailio-${n}.log`), k.logs());
      await writeFile(join(process.env.FAULTS_LOG_DIR, "sidecars.jsonl"), log.lines.map((l) => JSON.stringify(l)).join("\n"));
    }
    for (const k of kamailios) await k.stop();
    // the sidecars stop gracefully: their records are written, then read back
    for (const sc of sidecars) await sc.stop();
    const replayed = log.count("fail-safe BYE replayed");

    // B2BUA decisions (by Call-ID) whose outcome no sidecar saw (one sidecar: its last incarnation's; shared records: any)
    const lines = opts.scaleOut ? log.lines : log.lines.slice(log.starts[log.starts.length - 1] ?? 0);
    const ids = (msg: string) =>
      new Set(lines.filter((l) => l.msg === msg && (msg !== "BYE decided" || l.mode === "b2bua")).map((l) => l.callId));
    const ended = new Set([...ids("BYE completed"), ...ids("BYE outcome never reported: media released")]);
    const outcomesPending = [...ids("BYE decided")].filter((id) => !ended.has(id)).length;

    // the wire: what the CFs sent and got, what reached the client
    const cf = (await Promise.all(bursts.map((b) => b.messages()))).flat();
    const cl = await client.messages();
    const sent = firstByCallId(cf, (m) => m.direction === "sent" && m.method === "BYE");
    const answers = firstByCallId(cf, (m) => m.direction === "received" && (m.status ?? 0) >= 200 && isBye(m));
    const atClient = firstByCallId(cl, (m) => m.direction === "received" && m.method === "BYE");
    const relay: number[] = [];
    const answer: number[] = [];
    let pastDeadline = 0;
    for (const [callId, bye] of sent) {
      const got = atClient.get(callId);
      if (!got || got.time - bye.time > deadlineMs) pastDeadline++;
      if (got) relay.push(got.time - bye.time);
      const a = answers.get(callId);
      if (a) answer.push(a.time - bye.time);
    }
    const answeredNot200 = [...answers.values()].filter((m) => m.status !== 200).length;
    // the fail-safe BYEs (all journaled and replayed) whose first copy the CF sent after the fault's instant
    const replayedIds = new Set(log.lines.filter((l) => l.msg === "fail-safe BYE replayed").map((l) => String(l.callId)));
    const replayedReceivedAfterFault = [...replayedIds].filter((id) => (sent.get(id)?.time ?? 0) >= faultInstant).length;

    // the sidecars' records: which sessions they knew, and whether each one's lifecycle moved
    const records: SessionStore = redis
      ? new RedisRecordStore({ url: redis.url, retention: defaults.session, log: silentLogger() })
      : new SessionRegistry(stateDir, defaults.session, silentLogger());
    await records.load();
    const sessionOf = new Map<string, BurstSession>();
    lanes.forEach((l, n) => {
      for (const line of (opened[n] as { dialogs: string[] }).dialogs) {
        const callId = line.split(";")[0] as string;
        const s = l.sessions[callNumber(callId, l.prefix) - 1];
        if (s) sessionOf.set(callId, s);
      }
    });
    const expected = new Set<string>();
    let recordsLeaked = 0;
    for (const [callId, s] of sessionOf) {
      const rec = records.get(callId);
      if (!rec || !sent.has(callId)) continue;
      expected.add(`${s.user}|Default/${s.conversationId}/${s.contributionId}`);
      if (isGroupActive(rec) || rec.dialogs.some((d) => d.state !== "terminated")) recordsLeaked++;
    }
    await records.close();

    // the Message Store
    const stored = await storedGsos(dovecot, users);
    let gsosStored = 0;
    let gsosDoubled = 0;
    let gsosUnexpected = 0;
    const folderOf = new Map<string, string>();
    for (const [folder, ids] of stored) {
      gsosStored += ids.length;
      if (ids.length > 1) gsosDoubled += ids.length - 1;
      if (!expected.has(folder)) gsosUnexpected += ids.length;
      for (const id of new Set(ids)) {
        if (folderOf.has(id)) gsosDoubled++;
        else folderOf.set(id, folder);
      }
    }
    // what the sidecars said about the first sessions stored twice (which path)
    const doubled = [...stored].filter(([, ids]) => ids.length > 1).slice(0, 3);
    for (const [folder, ids] of doubled) {
      const contrib = folder.split("/")[2] ?? "";
      const trail = log.lines
        .filter((l) => l.contributionId === contrib || (typeof l.folder === "string" && l.folder.endsWith(`/${contrib}`)))
        .map(
          (l) =>
            `${String(l.timestamp ?? "").slice(11)} ${l.msg}${l.state ? ` (${l.state})` : ""}${l.gso ? ` gso=${l.gso}` : ""}${l.reason ? ` reason=${l.reason}` : ""}`,
        );
      notes.push(
        `stored twice: ${folder}: ${new Set(ids).size === 1 ? "the same Message-ID" : "different Message-IDs"} ${ids.join(" ")}; ${trail.join("; ")}`,
      );
    }
    const gsosMissing = [...expected].filter((f) => (stored.get(f)?.length ?? 0) === 0).length;
    if (gsosUnexpected > 0) notes.push(`${gsosUnexpected} GSOs in folders of sessions the sidecar did not know`);

    return {
      fault: opts.fault,
      dialogs: opened.reduce((n, o) => n + o.dialogs.length, 0),
      byesSent: sent.size,
      byesAnswered: answers.size,
      byesAnsweredNot200: answeredNot200,
      gsosExpected: expected.size,
      gsosStored,
      gsosMissing,
      gsosDoubled,
      gsosUnexpected,
      failsafeByes,
      failsafeBeforeFault,
      replayed,
      replayedReceivedAfterFault,
      recordsLeaked,
      outcomesPending,
      pastDeadline,
      relayMs: quantiles(relay),
      answerMs: quantiles(answer),
      burstMs,
      drainMs,
      badRecords: left.bad,
      failsafeReasons,
      notes,
    };
  } finally {
    for (const k of kamailios) await k.stop().catch(() => {});
    for (const s of sidecars) await s.stop().catch(() => {});
    await redis?.stop().catch(() => {});
    await dovecot?.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}

interface Running {
  dovecot: DovecotInstance;
  redis: RedisInstance | undefined;
  sidecars: SidecarInstance[];
  kamailios: KamailioInstance[];
  sidecarEnv: Record<string, string>;
  kamailioOptions: KamailioOptions;
  log: SidecarLog;
  onKamailioKilled(failsafe: number): void;
}

/** The SIGKILLed sidecar again: same state, spool and fail-safe dirs, same gRPC address; it logs "ready" only after replaying the journal (its gRPC server already answers). */
async function restartKilled(r: Pick<Running, "sidecars" | "sidecarEnv" | "log">): Promise<void> {
  r.sidecars.push(await startSidecar(r.sidecarEnv, { readyTimeoutMs: 120_000, onOutput: r.log.begin() }));
}

async function inject(opts: FaultRunOptions, r: Running): Promise<void> {
  switch (opts.fault) {
    case "sidecar-kill": {
      // scale-out: the first sidecar (the other one takes its decisions); else the only one
      await r.sidecars[opts.scaleOut ? 0 : r.sidecars.length - 1]?.kill("SIGKILL");
      if (opts.scaleOut && opts.restartAfterBurst) return;
      await sleep(opts.downMs ?? 2000);
      await restartKilled(r);
      return;
    }
    case "dovecot-kill": {
      await r.dovecot.signal("SIGKILL");
      await sleep(opts.downMs ?? 2000);
      await r.dovecot.restart();
      return;
    }
    case "dovecot-stop": {
      await r.dovecot.signal("SIGSTOP");
      await sleep(opts.downMs ?? 5000);
      await r.dovecot.signal("SIGCONT");
      return;
    }
    case "kamailio-kill": {
      const k = r.kamailios[r.kamailios.length - 1] as KamailioInstance;
      r.onKamailioKilled(await k.stat("cpm_pf_failsafe").catch(() => 0));
      await k.kill("SIGKILL");
      // the CF retransmits its BYEs to the same address meanwhile
      r.kamailios.push(await startKamailio({ ...r.kamailioOptions, sipPort: k.sipPort }));
      return;
    }
    case "redis-kill": {
      if (!r.redis) throw new Error("redis-kill needs scaleOut (the records on Redis)");
      await r.redis.kill();
      await sleep(opts.downMs ?? 2000);
      await r.redis.restart();
      return;
    }
    case "none":
      return;
  }
}
