// The PF's main job, played from the wire, for the deferred-delivery e2e
// tests and the demo: Dovecot, Kamailio (kamailio/kamailio.cfg) and the
// sidecar (media plane, its SIP UA, deferred delivery) on loopback; SIPp as
// the Controlling Function, the served user's client and the S-CSCF; MSRP
// test peers as the CF's and the client's MSRP stacks. The sidecar keeps its
// ports, state and spool directories across crashAndRestart(). A ladder of
// what went over the wire (SIP from the SIPp traces, MSRP as the peers saw
// it) is kept for the demo. Everything is stopped by PID in stop().
// The sidecar's UA sends over UDP only unless the env says otherwise
// (sip.transport "udp", the UA of before TCP): the deferred-delivery tests are
// its regression; test/e2e/delivery-transport.test.ts runs the default (auto).
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mailboxNameOf } from "../../src/store/mailbox-name.js";
import { chatCpim } from "../fixtures/cpim.js";
import { anchoredChatCall, DEVICE_INSTANCE, inDialogSipp, msrpMedia } from "./anchored-chat.js";
import { type DovecotInstance, startDovecot } from "./dovecot.js";
import { folderMessages, perUserStoreEnv } from "./group-chat.js";
import { connectImap, type Login } from "./imap-read.js";
import { type KamailioInstance, startKamailio } from "./kamailio.js";
import { MsrpPeer, sdpPath } from "./msrp-peer.js";
import { freePort } from "./ports.js";
import { type SidecarInstance, startSidecar } from "./sidecar.js";
import { first, header, type SippResult, type SippRun, type SipTraceMessage, startSipp } from "./sipp.js";
import { waitFor } from "./wait.js";

/** The served user as the CF's INVITE names it (To of test/scenarios/cf-invite-msrp.xml). */
export const SERVED_USER = "tel:+16135551200";
/** Another served user of the same PF. */
export const OTHER_USER = "sip:alice@example.net";
/** A served user for the cases that leave data in the queue on purpose (no later case of SERVED_USER sees it). */
export const KEEPER_USER = "tel:+16135551202";
/** The user of the probe REGISTERs after a restart: a mailbox with nothing in it. */
const PROBE_USER = "sip:probe@pf.invalid";
export const DEFERRED_URI = "sip:deferred@pf.example.net";
export const GSO_TYPE = "application/group-state-object+xml";
/** An interim GSO the CF sends while the client is away (a participant change, DD-11). */
export const INTERIM_GSO =
  '<?xml version="1.0" encoding="UTF-8"?>\n<groupstate timestamp="2026-11-25T10:00:01Z" lastfocussessionid="sip:focus@cf.example.net" group-type="Closed"><participant name="Bob" comm-addr="tel:+16135551210"/></groupstate>';

/** What the CF sent while the client was away, in order. */
export interface Sent {
  contentType: string;
  body: Buffer;
}

export interface Chat {
  servedUser: string;
  callId: string;
  conversationId: string;
  contributionId: string;
  sent: Sent[];
  /** The CF's MSRP peer (its connection to the PF stays up while the CF dialog is). */
  cf?: MsrpPeer;
  /** The CF SIPp's port: triggerSipp(cfSipPort, callId) makes the CF send its BYE (whileDeferred only). */
  cfSipPort?: number;
  /** The 2xx to the CF's INVITE as the CF got it: its dialog's facts (tags, Contact, Record-Route, the PF's SDP). */
  cf200?: SipTraceMessage;
  /** The group chat's SIP as the CF and the client saw it (set once the chat is over). */
  trace?: { cf: SipTraceMessage[]; client: SipTraceMessage[] };
}

/** One arrow of the ladder diagram. */
export interface Rung {
  t: number;
  from: string;
  to: string;
  what: string;
}

export interface ChatOptions {
  /** The served user the CF invites. Default SERVED_USER. */
  servedUser?: string;
  /** The group chat's IDs (another served user in the same group chat). Default: fresh ones. */
  conversationId?: string;
  contributionId?: string;
  /** Extra lines of the CF's BYE (e.g. a Reason). */
  byeHeaders?: string[];
  /** false: the client never answers the CF's BYE (the PF answers the CF after CLIENT_BYE_TIMEOUT_MS). Default true. */
  clientAnswersBye?: boolean;
  /** Runs once the messages are kept, with the CF dialog still up. */
  whileDeferred?: (chat: Chat) => Promise<void>;
  /** An interim GSO after the first message (DD-11). */
  interimGso?: boolean;
  /** Participants of the CF's resource list after its three (a big group). */
  moreParticipants?: readonly { uri: string; displayName: string }[];
  /** The focus answers the PF's own conference SUBSCRIBE with this out-of-call scenario of the CF's SIPp (and keys). */
  focusOutOfCall?: { scenario: string; keys: Record<string, string> };
  /** +sip.instance of the chat's client (its 2xx Contact): the device the record knows (DD-1 per device). Default "": none. */
  clientInstance?: string;
}

export interface RigOptions {
  /** How Kamailio sends the client's in-dialog requests to the UA: CPM_PF_UA_ADDRESS with ";transport=tcp", or UDP (default). */
  uaAddressTransport?: "udp" | "tcp";
  /** Kamailio's configuration (an operator's that includes kamailio/kamailio.cfg). Default kamailio/kamailio.cfg. */
  kamailioCfg?: string;
  /** Another rig's Dovecot (several sidecars on one Message Store): not started, nor stopped, by this rig. */
  dovecot?: DovecotInstance;
  /** The sidecar's gRPC socket path. Default one in the rig's directory. */
  grpcSocket?: string;
  /** Further sidecars Kamailio's bridge tries after this rig's (CPM_PF_GRPC_TARGET is then a list). */
  moreGrpcTargets?: string[];
  /** Kamailio journals its fail-safe BYEs (CPM_PF_FAILSAFE_DIR) and the sidecar replays them (session.failsafeDir). */
  failsafeJournal?: boolean;
}

export interface Rejoin {
  peer: MsrpPeer;
  client: SippRun;
  /** The PF's 200 OK to the re-join, as the client got it. */
  ok: SipTraceMessage;
}

/** DD-10 / RJ-2: `got` is every message the CF sent while the client was away, in the order it sent them, byte for byte. */
export function assertKeptInOrder(got: readonly { body: Uint8Array }[], chat: Pick<Chat, "sent">, message?: string): void {
  assert.deepEqual(
    got.map((m) => Buffer.from(m.body).toString("utf8")),
    chat.sent.map((s) => s.body.toString("utf8")),
    message,
  );
}

/** The focus URI of a chat the CF SIPp (cf-invite-msrp.xml) played: its Contact ;isfocus. */
export const focusOf = (c: Pick<Chat, "cfSipPort">) => `sip:focus@127.0.0.1:${c.cfSipPort}`;

export interface Delivery {
  peer: MsrpPeer;
  client: SippRun;
  /** The delivery INVITE as the client got it. */
  invite: SipTraceMessage;
}

/** How long Kamailio gives the client to answer a B2BUA BYE (CPM_PF_BYE_CLIENT_TIMEOUT_MS), short for the tests. */
export const CLIENT_BYE_TIMEOUT_MS = 1000;

/** Kamailio has one gRPC channel per async worker (the example config runs 4): probes answered in a row before a case goes on. */
const PROBES_IN_A_ROW = 6;

export const deferredFolder = (c: Pick<Chat, "conversationId" | "contributionId">) => `Deferred/${c.conversationId}/${c.contributionId}`;

/** The session descriptors of the chat in its folder (`Deferred/_sessions`), raw. */
export function descriptorsOf(objects: readonly string[], c: Pick<Chat, "conversationId">): string[] {
  return objects.filter((o) => o.includes(`\r\nConversation-ID: ${c.conversationId}\r\n`));
}
export const DESCRIPTOR_FOLDER = "Deferred/_sessions";
export const groupFolder = (c: Pick<Chat, "conversationId" | "contributionId">) => `Default/${c.conversationId}/${c.contributionId}`;

function sipLabel(m: SipTraceMessage): string {
  const cseq = header(m, "cseq") ?? "";
  if (m.method) {
    const reason = header(m, "reason");
    return `${m.method}${reason ? ` (Reason: ${reason})` : ""}`;
  }
  return `${m.status} (${cseq.split(/\s+/)[1] ?? ""})`;
}

export class DeferredChatRig {
  readonly ladder: Rung[] = [];
  private readonly peers: MsrpPeer[] = [];
  private current!: SidecarInstance;

  private constructor(
    readonly dovecot: DovecotInstance,
    readonly kamailio: KamailioInstance,
    private readonly dir: string,
    private readonly env: Record<string, string>,
    private readonly ownsDovecot = true,
  ) {}

  /** Starts Dovecot, Kamailio and the sidecar; `env` adds or overrides CPM_PF__* keys. */
  static async start(
    env: Record<string, string> = {},
    users: readonly string[] = [SERVED_USER, OTHER_USER, KEEPER_USER, PROBE_USER],
    opts: RigOptions = {},
  ): Promise<DeferredChatRig> {
    // a PF serving many users, each in their own mailbox (the Dovecot master user logs in for them)
    const dovecot = opts.dovecot ?? (await startDovecot());
    for (const u of users) await dovecot.addUser(mailboxNameOf(u));
    const dir = await mkdtemp(join(tmpdir(), "cpm-dd-rig-"));
    // Kamailio and the sidecar on one host: gRPC over a Unix domain socket, kept across sidecar restarts
    const grpcSocket = opts.grpcSocket ?? join(dir, "grpc.sock");
    const failsafeDir = join(dir, "failsafe");
    if (opts.failsafeJournal) await mkdir(failsafeDir);
    const uaPort = await freePort();
    const mediaPort = await freePort();
    const kamailio = await startKamailio({
      ...(opts.kamailioCfg ? { cfg: opts.kamailioCfg } : {}),
      grpcTarget: [`unix:${grpcSocket}`, ...(opts.moreGrpcTargets ?? [])].join(","),
      deadlineMs: 1000,
      defines: [
        `CPM_PF_UA_ADDRESS="sip:127.0.0.1:${uaPort}${opts.uaAddressTransport === "tcp" ? ";transport=tcp" : ""}"`,
        `CPM_PF_BYE_CLIENT_TIMEOUT_MS=${CLIENT_BYE_TIMEOUT_MS}`,
        ...(opts.failsafeJournal ? [`CPM_PF_FAILSAFE_DIR="${failsafeDir}"`] : []),
      ],
    });
    const rig = new DeferredChatRig(
      dovecot,
      kamailio,
      dir,
      {
        ...perUserStoreEnv(dovecot, "b2bua"),
        CPM_PF__GRPC__SOCKET: grpcSocket,
        CPM_PF__SESSION__STATEDIR: join(dir, "state"),
        CPM_PF__STORE__SPOOLDIR: join(dir, "spool"),
        CPM_PF__MEDIA__ENABLED: "true",
        CPM_PF__MEDIA__HOST: "127.0.0.1",
        CPM_PF__MEDIA__PORT: String(mediaPort),
        CPM_PF__DELIVERY__DEFERREDMSGMGMTURI: DEFERRED_URI,
        CPM_PF__DELIVERY__SENDINTERIMGSOS: "true",
        CPM_PF__SIP__HOST: "127.0.0.1",
        CPM_PF__SIP__PORT: String(uaPort),
        CPM_PF__SIP__PROXYHOST: "127.0.0.1",
        CPM_PF__SIP__PROXYPORT: String(kamailio.sipPort),
        CPM_PF__SIP__TRANSPORT: "udp",
        // the CF SIPps of these cases have no conference event package: the PF's own SUBSCRIBE (unanswered,
        // retransmitted by Kamailio) would reach the next SIPp on the focus's port; conference-subscription.test.ts turns it on
        CPM_PF__DELIVERY__CONFERENCESUBSCRIPTIONEXPIRES: "0",
        ...(opts.failsafeJournal ? { CPM_PF__SESSION__FAILSAFEDIR: failsafeDir } : {}),
        ...env,
      },
      opts.dovecot === undefined,
    );
    rig.current = await startSidecar(rig.env);
    return rig;
  }

  get sidecar(): SidecarInstance {
    return this.current;
  }

  /** The port of the sidecar's MSRP listener (media.port): its delivery legs' a=path. */
  get mediaPort(): number {
    return Number(this.env.CPM_PF__MEDIA__PORT);
  }

  /** The port of the sidecar's SIP UA (sip.port), UDP and TCP. */
  get uaPort(): number {
    return Number(this.env.CPM_PF__SIP__PORT);
  }

  /** The sidecar's state directory (session.stateDir). */
  get stateDir(): string {
    return join(this.dir, "state");
  }

  /**
   * SIGKILL the sidecar and start it again on the same ports and
   * directories; resolves once Kamailio's async workers reach the new one
   * (their gRPC channels reconnect with a backoff of their own).
   */
  async crashAndRestart(between?: () => Promise<void>): Promise<void> {
    const crashed = this.current;
    await crashed.kill("SIGKILL");
    await crashed.stop();
    if (between) await between();
    this.current = await startSidecar(this.env);
    await this.untilKamailioReachesSidecar();
  }

  /** SIGTERM (the drain), then the exit; resolves with the stopped sidecar's log lines. restart() brings one back. */
  terminate(): Promise<Record<string, unknown>[]> {
    return this.exitAfter(() => this.current.kill("SIGTERM"));
  }

  /** Runs `cause` (a signal, the CLI's drain) and waits for the sidecar to exit; resolves with its log lines. */
  async exitAfter(cause: () => Promise<unknown>): Promise<Record<string, unknown>[]> {
    const stopped = this.current;
    await cause();
    // the drain (pf.drainTimeoutMs) and gRPC's graceful shutdown may take longer than kill() waits
    await waitFor(() => stopped.exited(), 15_000, 50, "the sidecar exits after its drain");
    const lines = stopped.logLines();
    await stopped.stop();
    return lines;
  }

  async restart(): Promise<void> {
    this.current = await startSidecar(this.env);
    await this.untilKamailioReachesSidecar();
  }

  /** Probe REGISTERs for a user the PF does not serve until several in a row were answered by the sidecar, not the fail-safe. */
  async untilKamailioReachesSidecar(): Promise<void> {
    let inARow = 0;
    const deadline = Date.now() + 15_000;
    while (inARow < PROBES_IN_A_ROW) {
      if (Date.now() > deadline) throw new Error("Kamailio did not reach the restarted sidecar within 15 s");
      const before = await this.kamailio.stat("cpm_pf_register_failsafe");
      await this.register("<sip:probe@127.0.0.1:9>", PROBE_USER, false);
      inARow = (await this.kamailio.stat("cpm_pf_register_failsafe")) === before ? inARow + 1 : 0;
      if (inARow === 0) await new Promise((r) => setTimeout(r, 200));
    }
  }

  async stop(): Promise<void> {
    for (const p of this.peers) await p.close().catch(() => {});
    // E2E_LOG_DIR: this rig's Kamailio log and the current sidecar's JSON lines, for a look after a failed run
    if (process.env.E2E_LOG_DIR) {
      const to = await mkdtemp(join(process.env.E2E_LOG_DIR, "rig-"));
      await writeFile(join(to, "kamailio.log"), this.kamailio.logs());
      await writeFile(
        join(to, "sidecar.jsonl"),
        this.current
          .logLines()
          .map((l) => JSON.stringify(l))
          .join("\n"),
      );
    }
    await this.kamailio.stop();
    await this.current?.stop();
    if (this.ownsDovecot) await this.dovecot.stop();
    await rm(this.dir, { recursive: true, force: true });
  }

  /** The served user's own login (not the master user's): what the user's devices see. */
  login(servedUser = SERVED_USER): Login {
    const name = mailboxNameOf(servedUser);
    const u = this.dovecot.users.find((x) => x.user === name);
    if (!u) throw new Error(`no mailbox for ${servedUser}`);
    return u;
  }

  /** The objects of `folder` in the served user's mailbox, in UID order. */
  folder(folder: string, servedUser = SERVED_USER): Promise<string[]> {
    return folderMessages(this.dovecot, folder, this.login(servedUser));
  }

  /**
   * The first `n` MSRP messages `peer` received, within `ms`; otherwise fails
   * naming how many came and the sidecar's delivery log lines of the group.
   */
  async received(peer: MsrpPeer, n: number, chat: Pick<Chat, "conversationId">, ms = 20_000) {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const lines = this.current
          .logLines()
          .filter((l) => l.conversationId === chat.conversationId)
          .map((l) => `${String(l.msg)} ${JSON.stringify({ ...l, msg: undefined, message: undefined, timestamp: undefined })}`);
        reject(new Error(`${peer.received.length} of ${n} MSRP messages within ${ms} ms; sidecar:\n${lines.slice(-20).join("\n")}`));
      }, ms);
    });
    try {
      return await Promise.race([peer.waitForMessages(n), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Mid-delivery: resolves once `peer` got at least `atLeast` items and the
   * sidecar has removed delivered ones from the queue (its marks are under
   * way), with items still to come; the caller's fault goes in then.
   */
  async untilRetiring(peer: MsrpPeer, chat: Chat, atLeast: number): Promise<void> {
    await this.received(peer, atLeast, chat);
    const imap = await connectImap(this.dovecot, this.login(chat.servedUser));
    try {
      const queued = async () => {
        const st = await imap.status(deferredFolder(chat), { messages: true });
        return st === false ? chat.sent.length : (st.messages ?? chat.sent.length);
      };
      await waitFor(async () => (await queued()) < chat.sent.length, 10_000, 5, "the sidecar retires delivered items");
    } finally {
      await imap.logout().catch(() => imap.close());
    }
    assert.ok(peer.received.length < chat.sent.length, "the fault comes before the delivery's end");
  }

  /** Every line the current sidecar logged with `msg`. */
  loggedAll(msg: string): Record<string, unknown>[] {
    return this.current.logLines().filter((l) => l.msg === msg);
  }

  /** The first line the current sidecar logged with `msg` for `callId`. */
  logged(msg: string, callId: string): Record<string, unknown> | undefined {
    return this.current.logLines().find((l) => l.msg === msg && l.callId === callId);
  }

  /** The CF's in-dialog requests of `scenario` on the group session's dialog (its Call-ID, tags and Record-Route), through Kamailio: the 200s it got. */
  async cfInDialog(c: Chat, scenario: string): Promise<SipTraceMessage[]> {
    const ok = c.cf200 as SipTraceMessage;
    const r = await inDialogSipp(this.kamailio, scenario, c.callId, {
      cf_from: header(ok, "from") ?? "",
      cf_to: header(ok, "to") ?? "",
      request_uri: /<([^>]+)>/.exec(header(ok, "contact") ?? "")?.[1] ?? "",
      route: header(ok, "record-route") ?? "",
      cf_msrp_port: String(new URL((c.cf as MsrpPeer).path.replace(/^msrp/, "http")).port),
      cf_msrp_path: (c.cf as MsrpPeer).path,
    });
    return r.messages.filter((m) => m.direction === "received" && m.status === 200);
  }

  /** Waits for the sidecar's log line of the chat's record taking `transition` (e.g. "client-absent -> inactive"). */
  lifecycleMoved(chat: Pick<Chat, "callId">, transition: string): Promise<unknown> {
    return waitFor(
      () =>
        this.current.logLines().some((l) => l.msg === "group session lifecycle" && l.callId === chat.callId && l.transition === transition),
      5000,
      20,
      `the lifecycle transition ${transition}`,
    );
  }

  /** Adds one arrow to the ladder, timed now. */
  rung(from: string, to: string, what: string): void {
    this.ladder.push({ t: Date.now(), from, to, what });
  }

  async peer(name: string): Promise<MsrpPeer> {
    const p = await MsrpPeer.start();
    this.peers.push(p);
    p.on("message", (m) => {
      this.rung("PF", name, `MSRP SEND ${m.contentType} ${preview(Buffer.from(m.body))}`);
      // the peer's stack answers each SEND 200 unless its Failure-Report wants none (RFC 4975 7.2)
      if (m.failureReport === "yes") this.rung(name, "PF", "MSRP 200");
    });
    return p;
  }

  /** `peer` (named `name`) connects to the PF's `remotePath` and binds with an empty SEND, on the ladder. */
  private async connectMsrp(name: string, peer: MsrpPeer, remotePath: string): Promise<void> {
    this.rung(name, "PF", "MSRP connect + empty SEND (bind)");
    await peer.open(remotePath, "active");
    this.rung("PF", name, "MSRP 200");
  }

  /** Adds the SIP messages of a SIPp run, seen from `who` (its sent ones go to the PF, its received ones come from it). */
  traceSip(who: string, r: SippResult | SipTraceMessage[]): void {
    for (const m of Array.isArray(r) ? r : r.messages) {
      this.ladder.push({
        t: m.time,
        from: m.direction === "sent" ? who : "PF",
        to: m.direction === "sent" ? "PF" : who,
        what: sipLabel(m),
      });
    }
  }

  /**
   * The CF invites the served user (media anchored at the PF), both MSRP legs
   * connect, the client's connection drops, the CF sends `texts` (and an
   * interim GSO after the first) which the PF keeps; `whileDeferred` runs
   * then, with the CF dialog still up; then the CF's BYE with `byeHeaders`.
   */
  async chatWhileAway(texts: string[], opts: ChatOptions = {}): Promise<Chat> {
    const cf = await this.peer("CF");
    const ue = await this.peer("client");
    const sent: Sent[] = [];
    let chat: Chat | undefined;
    const servedUser = opts.servedUser ?? SERVED_USER;
    const call = await anchoredChatCall(this.kamailio, {
      servedUser,
      ...(opts.conversationId ? { conversationId: opts.conversationId } : {}),
      ...(opts.contributionId ? { contributionId: opts.contributionId } : {}),
      cfMsrpPath: cf.path,
      cfSetup: "active",
      clientMsrpPath: ue.path,
      byeHeaders: opts.byeHeaders ?? [],
      ...(opts.moreParticipants ? { moreParticipants: opts.moreParticipants } : {}),
      ...(opts.focusOutOfCall ? { focusOutOfCall: opts.focusOutOfCall } : {}),
      ...(opts.clientInstance !== undefined ? { clientInstance: opts.clientInstance } : {}),
      ...(opts.clientAnswersBye === false ? { clientAnswersBye: false, clientPauseMs: CLIENT_BYE_TIMEOUT_MS + 1000 } : {}),
      timeoutS: 60,
      during: async ({ callId, conversationId, contributionId, clientInvite, cf200, cfSipPort }) => {
        await waitFor(() => this.logged("media answer anchored", callId), 5000, 20, "ReportMediaAnswer");
        await this.connectMsrp("client", ue, msrpMedia(clientInvite.body).path);
        await this.connectMsrp("CF", cf, msrpMedia(cf200.body).path);
        this.ladder.push({ t: Date.now(), from: "client", to: "PF", what: "MSRP connection drops (the client goes away)" });
        ue.dropConnections();
        await waitFor(() => this.logged("MSRP leg gone", callId), 5000, 20, "client leg gone");
        for (const [i, t] of texts.entries()) {
          sent.push({ contentType: "message/cpim", body: chatCpim(t, `imdn-${contributionId}-${i}`) });
          if (i === 0 && opts.interimGso) sent.push({ contentType: GSO_TYPE, body: Buffer.from(INTERIM_GSO) });
        }
        for (const s of sent) {
          this.ladder.push({ t: Date.now(), from: "CF", to: "PF", what: `MSRP SEND ${s.contentType} ${preview(s.body)}` });
          const r = await cf.send(s.body, s.contentType);
          this.ladder.push({ t: Date.now(), from: "PF", to: "CF", what: `MSRP ${r.code} (kept in the deferred queue)` });
          assert.equal(r.code, 200, "the CF's SEND is answered once stored");
        }
        const kept = await this.folder(deferredFolder({ conversationId, contributionId }), servedUser);
        assert.equal(kept.length, sent.length, "every message the CF sent is in the served user's deferred queue");
        chat = { servedUser, callId, conversationId, contributionId, sent, cf, cfSipPort, cf200 };
        if (opts.whileDeferred) await opts.whileDeferred(chat);
      },
    });
    this.traceSip("CF", call.cf);
    this.traceSip("client", call.client);
    assert.ok(chat);
    return { ...chat, trace: { cf: call.cf.messages, client: call.client.messages } };
  }

  /** The S-CSCF's third-party REGISTER for `servedUser`, the UE's REGISTER (with `contact` and the device's +sip.instance `instance`) in the body. */
  async register(
    contact: string,
    servedUser = SERVED_USER,
    trace = true,
    forged?: { from: string; scenario: string },
    instance = DEVICE_INSTANCE,
  ): Promise<SippResult> {
    const run = await startSipp({
      scenario: forged?.scenario ?? "scscf-third-party-register.xml",
      remote: this.kamailio.address,
      keys: { served_user: servedUser, expires: "600000", ue_contact: contact, instance },
      ...(forged ? { host: forged.from } : {}),
    });
    const r = await run.done;
    if (trace) this.traceSip("S-CSCF", r);
    return r;
  }

  /** The INVITEs `client` received for `chat`. */
  async receivedInvites(client: SippRun, chat: Chat): Promise<SipTraceMessage[]> {
    return (await client.messagesSoFar()).filter(
      (m) => m.direction === "received" && m.method === "INVITE" && header(m, "conversation-id") === chat.conversationId,
    );
  }

  async receivedInvite(client: SippRun, chat: Chat): Promise<SipTraceMessage> {
    let invite: SipTraceMessage | undefined;
    await waitFor(
      async () => {
        invite = (await this.receivedInvites(client, chat))[0];
        return invite !== undefined;
      },
      8000,
      20,
      "the delivery INVITE at the client",
    );
    return invite as SipTraceMessage;
  }

  /**
   * RJ-1: the served user's client re-joins `chat`'s group before any
   * register notification (rj-1-client-rejoin.xml: INVITE to the focus URI
   * through Kamailio); the PF's 200 OK; the client's MSRP peer connects to
   * the PF's answer; `body` runs.
   */
  async rejoined(chat: Chat, body: (r: Rejoin) => Promise<void>, instance = DEVICE_INSTANCE): Promise<void> {
    const ue = await this.peer("client");
    const client = await startSipp({
      scenario: "rj-1-client-rejoin.xml",
      remote: this.kamailio.address,
      timeoutS: 30,
      keys: {
        served_user: chat.servedUser,
        focus_uri: focusOf(chat),
        conversation_id: chat.conversationId,
        contribution_id: chat.contributionId,
        client_msrp_port: String(new URL(ue.path.replace(/^msrp/, "http")).port),
        client_msrp_path: ue.path,
        instance,
      },
    });
    try {
      let ok: SipTraceMessage | undefined;
      await waitFor(
        async () => {
          ok = first(await client.messagesSoFar(), { direction: "received", status: 200, cseqMethod: "INVITE" });
          return ok !== undefined;
        },
        8000,
        20,
        "the PF's 200 OK to the re-join",
      );
      const answer = ok as SipTraceMessage;
      await this.connectMsrp("client", ue, sdpPath(answer.body));
      await body({ peer: ue, client, ok: answer });
    } finally {
      this.traceSip("client", await client.stop());
    }
  }

  /**
   * SIPp as a UAS of the Controlling Function for the PF's re-start INVITE
   * (DD-13): `scenario` on `port` (the focus: the CF SIPp's port the group's
   * lastfocussessionid names; the conference factory: its own). `cf`: the
   * MSRP peer its SDP answer names (a=setup active), for a scenario that
   * accepts (keys cf_msrp_port, cf_msrp_path, cf_setup); `keys`: any others.
   */
  cfUas(scenario: string, port: number, cf?: MsrpPeer, keys: Record<string, string> = {}): Promise<SippRun> {
    const media: Record<string, string> = cf
      ? { cf_msrp_port: String(new URL(cf.path.replace(/^msrp/, "http")).port), cf_msrp_path: cf.path, cf_setup: "active" }
      : {};
    return startSipp({ scenario, port, timeoutS: 30, keys: { ...media, ...keys } });
  }

  /**
   * The first INVITE `sipp` received (e.g. the PF's re-start at the focus or
   * the conference factory), within 8 s; from its result once it has exited
   * (its trace file goes with the run).
   */
  async inviteAt(sipp: SippRun, what: string): Promise<SipTraceMessage> {
    let exited: SipTraceMessage[] | undefined;
    void sipp.done.then((r) => {
      exited = r.messages;
    });
    let invite: SipTraceMessage | undefined;
    await waitFor(
      async () => {
        const messages = exited ?? (await sipp.messagesSoFar());
        invite = messages.find((m) => m.direction === "received" && m.method === "INVITE");
        return invite !== undefined;
      },
      8000,
      20,
      what,
    );
    return invite as SipTraceMessage;
  }

  /**
   * The served user's device registers again: a SIPp client (`scenario`) and
   * an MSRP peer for it; the REGISTER; the delivery INVITE for `chat` and the
   * client's 200; the peer connects to the PF's delivery leg; `body` runs.
   */
  /** The sidecar's gRPC target (a Unix socket, kept across restarts): what Kamailio and the operator CLI dial. */
  get grpcTarget(): string {
    return `unix:${this.env.CPM_PF__GRPC__SOCKET}`;
  }

  /**
   * Plays a delivery to a SIPp client: by default the S-CSCF's third-party
   * REGISTER starts it; `start` replaces that (e.g. an operator's
   * `cpm-pf queue deliver` to the client's contact). `transport` "tcp": the
   * SIPp client runs over TCP and registers a contact with ";transport=tcp".
   */
  async deliveredTo(
    chat: Chat,
    scenario: string,
    keys: Record<string, string>,
    body: (d: Delivery) => Promise<void>,
    start?: (contact: string) => Promise<void>,
    transport: "udp" | "tcp" = "udp",
    /** The client SIPp's SIP port. Default: a free one. */
    sipPort?: number,
  ): Promise<void> {
    const ue = await this.peer("client");
    const client = await startSipp({
      scenario,
      ...(sipPort ? { port: sipPort } : {}),
      timeoutS: 30,
      keys: {
        client_msrp_port: String(new URL(ue.path.replace(/^msrp/, "http")).port),
        client_msrp_path: ue.path,
        contact_params: "",
        ...keys,
      },
      ...(scenario === "client-uas-msrp.xml" ? { extraArgs: ["-d", "50"] } : {}),
      transport,
    });
    try {
      const contact = `<sip:client@127.0.0.1:${client.port}${transport === "tcp" ? ";transport=tcp" : ""}>`;
      if (start) await start(contact);
      else {
        const reg = await this.register(contact, chat.servedUser);
        assert.equal(reg.code, 0, `S-CSCF SIPp: ${reg.errors}`);
      }
      const invite = await this.receivedInvite(client, chat);
      await waitFor(
        async () => {
          // the 200 to this group session's INVITE (a registration starts one delivery per group session with data)
          const callId = header(invite, "call-id");
          return (await client.messagesSoFar()).some((m) => m.direction === "sent" && m.status === 200 && header(m, "call-id") === callId);
        },
        5000,
        20,
        "client 200",
      );
      await this.connectMsrp("client", ue, sdpPath(invite.body));
      await body({ peer: ue, client, invite });
    } finally {
      // the trace file goes with the run: take the messages from its result
      this.traceSip("client", await client.stop());
    }
  }
}

/** The last line of an MSRP body: a CPIM chat message's text. */
export function lastLine(m: { body: Uint8Array }): string {
  return (Buffer.from(m.body).toString("utf8").split(/\r?\n/).filter(Boolean).pop() ?? "").trim();
}

/** A short, printable view of an MSRP body (the text of a CPIM chat message, or the XML root). */
function preview(body: Buffer): string {
  const s = body.toString("utf8");
  const last = s.split(/\r?\n/).filter(Boolean).pop() ?? "";
  return JSON.stringify(last.length > 40 ? `${last.slice(0, 37)}...` : last);
}
