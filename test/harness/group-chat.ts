// One group chat through the PF, as the e2e tests, the demo and the bench
// play it: SIPp as the Controlling Function (test/scenarios/cf-invite-bye.xml)
// and as a client of the served user (client-uas.xml), through Kamailio; plus
// Message Store read-back helpers.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { ImapFlow } from "imapflow";
import { encodeFolderComponent, groupSessionFolder } from "../../src/store/folder.js";
import { mailboxNameOf } from "../../src/store/mailbox-name.js";
import type { DovecotInstance } from "./dovecot.js";
import type { Login } from "./imap-read.js";
import type { KamailioInstance } from "./kamailio.js";
import { first, header, type SippResult, type SipTraceMessage, startSipp } from "./sipp.js";
import { waitFor } from "./wait.js";

export const PARTICIPANTS = ["tel:+16135551210", "tel:+16135551211", "tel:+16135551212"];

/** client-uas.xml waits this long before answering the BYE (its sipp -d). */
export const CLIENT_PAUSE_MS = 300;
/** cf-invite-bye.xml waits this long between ACK and BYE (its sipp -d). */
export const CF_PAUSE_MS = 200;

export interface CallResult {
  cf: SippResult;
  client: SippResult;
  conversationId: string;
  contributionId: string;
  /** Local SIP port of the CF's SIPp. */
  cfPort: number;
  /** The first BYE the CF sent and the 200 OK it got; what the client received (the BYE) and answered. */
  cfBye: SipTraceMessage;
  cf200: SipTraceMessage;
  clientBye: SipTraceMessage;
  client200: SipTraceMessage;
  /** When the CF sent its (first) BYE, got its 200 OK; when the client got the BYE and sent its 200. */
  t: { cfByeSent: number; cf200: number; clientByeReceived: number; client200Sent: number };
  callId: string;
}

export interface GroupChatOptions {
  /** Extra header lines of the CF's BYE. */
  byeHeaders: string[];
  /** Extra header lines of the CF's INVITE (e.g. pre-loaded Routes), given the client's SIP port. */
  inviteHeaders?: (clientPort: number) => string[];
  /** Port the INVITE's Request-URI names (client_port). Default: the client's. */
  requestUriPort?: number;
  /** Runs once the CF's SIPp started, with the Call-ID and the IDs it uses. */
  during?: (cf: { callId: string; conversationId: string; contributionId: string }) => Promise<void>;
  /** The client's scenario (test/scenarios/). Default client-uas.xml. */
  clientScenario?: string;
  /** The client's sipp -d (how long it pauses after the BYE). Default CLIENT_PAUSE_MS. */
  clientPauseMs?: number;
  /** The CF's sipp -d (its pause between ACK and BYE). Default CF_PAUSE_MS. */
  cfPauseMs?: number;
}

/** What went over the wire when the BYE's answers may be anything: the final answers, when there were any. */
export interface GroupChatPlay {
  cf: SippResult;
  client: SippResult;
  conversationId: string;
  contributionId: string;
  cfPort: number;
  callId: string;
  cfBye: SipTraceMessage;
  /** The first final response to the BYE the CF got / the client sent. */
  cfByeAnswer: SipTraceMessage | undefined;
  clientBye: SipTraceMessage;
  clientByeAnswer: SipTraceMessage | undefined;
}

function finalToBye(messages: SipTraceMessage[], direction: "sent" | "received"): SipTraceMessage | undefined {
  return messages.find((m) => m.direction === direction && (m.status ?? 0) >= 200 && (header(m, "cseq") ?? "").split(/\s+/)[1] === "BYE");
}

/** One group chat: CF INVITE -> client 200 -> ACK -> CF BYE (with byeHeaders) -> whatever the client and the PF answer. */
export async function playGroupChat(kamailio: KamailioInstance, opts: GroupChatOptions): Promise<GroupChatPlay> {
  const conversationId = `conv-${randomUUID()}`;
  const contributionId = `contrib-${randomUUID()}`;
  const client = await startSipp({
    scenario: opts.clientScenario ?? "client-uas.xml",
    extraArgs: ["-d", String(opts.clientPauseMs ?? CLIENT_PAUSE_MS)],
  });
  try {
    const cfRun = await startSipp({
      scenario: "cf-invite-bye.xml",
      remote: kamailio.address,
      extraArgs: ["-d", String(opts.cfPauseMs ?? CF_PAUSE_MS)],
      keys: {
        client_port: String(opts.requestUriPort ?? client.port),
        conversation_id: conversationId,
        contribution_id: contributionId,
        // each extra header line preceded by CRLF (see the scenario's comment)
        invite_headers: (opts.inviteHeaders?.(client.port) ?? []).map((h) => `\r\n${h}`).join(""),
        bye_headers: opts.byeHeaders.map((h) => `\r\n${h}`).join(""),
      },
    });
    // SIPp's default Call-ID is "%u-%p@%s": call number, SIPp's pid, local ip
    if (opts.during) await opts.during({ callId: `1-${cfRun.pid}@127.0.0.1`, conversationId, contributionId });
    const [cf, cl] = await Promise.all([cfRun.done, client.done]);
    assert.equal(cf.code, 0, `CF SIPp failed (${cf.code}): ${cf.errors}\n${cf.output}`);
    assert.equal(cl.code, 0, `client SIPp failed (${cl.code}): ${cl.errors}\n${cl.output}`);
    const cfBye = first(cf.messages, { direction: "sent", method: "BYE" });
    const clientBye = first(cl.messages, { direction: "received", method: "BYE" });
    assert.ok(cfBye && clientBye, "BYE missing in the traces");
    return {
      cf,
      client: cl,
      conversationId,
      contributionId,
      cfPort: cfRun.port,
      callId: header(cfBye, "call-id") ?? "",
      cfBye,
      cfByeAnswer: finalToBye(cf.messages, "received"),
      clientBye,
      clientByeAnswer: finalToBye(cl.messages, "sent"),
    };
  } finally {
    await client.stop();
  }
}

/** One group chat: CF INVITE -> client 200 -> ACK -> CF BYE (with byeHeaders) -> client 200 -> CF 200. */
export async function groupChatCall(
  kamailio: KamailioInstance,
  byeHeaders: string[],
  during?: (cf: { callId: string }) => Promise<void>,
): Promise<CallResult> {
  const play = await playGroupChat(kamailio, { byeHeaders, during });
  const cf200 = first(play.cf.messages, { direction: "received", status: 200, cseqMethod: "BYE" });
  const client200 = first(play.client.messages, { direction: "sent", status: 200, cseqMethod: "BYE" });
  assert.ok(cf200 && client200, "200 OK to the BYE missing in the traces");
  const { cfBye, clientBye } = play;
  return {
    cf: play.cf,
    client: play.client,
    conversationId: play.conversationId,
    contributionId: play.contributionId,
    cfPort: play.cfPort,
    cfBye,
    cf200,
    clientBye,
    client200,
    callId: play.callId,
    t: { cfByeSent: cfBye.time, cf200: cf200.time, clientByeReceived: clientBye.time, client200Sent: client200.time },
  };
}

/** An imapflow session on the test user's mailbox, or on `as`'s own. */
export async function imap<T>(dovecot: DovecotInstance, fn: (c: ImapFlow) => Promise<T>, as?: Login): Promise<T> {
  const c = new ImapFlow({
    host: dovecot.host,
    port: dovecot.port,
    secure: false,
    auth: as ? { user: as.user, pass: as.password } : { user: dovecot.user, pass: dovecot.password },
    logger: false,
  });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.logout().catch(() => c.close());
  }
}

/** A group session's deferred queue with the shared login (store.user without "{user}"): below a level per served user (Mailboxes.privateRootOf). */
export function sharedDeferredFolder(servedUser: string, conversationId: string, contributionId: string): string {
  return groupSessionFolder(`Deferred/${encodeFolderComponent(mailboxNameOf(servedUser))}`, conversationId, contributionId);
}

/** Sources of all messages in a folder; [] when the folder does not exist. */

export async function folderMessages(dovecot: DovecotInstance, folder: string, as?: Login): Promise<string[]> {
  return imap(
    dovecot,
    async (c) => {
      const boxes = await c.list();
      if (!boxes.some((b) => b.path === folder)) return [];
      const lock = await c.getMailboxLock(folder, { readOnly: true });
      try {
        const out: string[] = [];
        for await (const m of c.fetch("1:*", { source: true })) {
          if (m.source) out.push(m.source.toString("utf8"));
        }
        return out;
      } finally {
        lock.release();
      }
    },
    as,
  );
}

/**
 * The objects of `folder` once it holds at least `expected`: a GSO that took
 * longer than store.gsoBudgetMs (a loaded machine) is spooled and stored a
 * moment after the BYE's answer, not lost.
 */
export async function storedObjects(dovecot: DovecotInstance, folder: string, expected = 1, as?: Login): Promise<string[]> {
  let found: string[] = [];
  await waitFor(
    async () => {
      found = await folderMessages(dovecot, folder, as);
      return found.length >= expected;
    },
    10_000,
    100,
    `${expected} object(s) in ${folder}`,
  ).catch(() => undefined);
  return found;
}

/** The GSO XML out of a stored RFC 5322 object. */

export function gsoXml(source: string): string {
  assert.match(source, /^Content-Type:\s*application\/group-state-object\+xml/im);
  const m = /<groupstate\b[\s\S]*<\/groupstate>/.exec(source);
  assert.ok(m, `no <groupstate> in the stored object:\n${source}`);
  return m[0];
}

/** The sidecar's env for one login shared by every served user (the test user's mailbox). */
export function storeEnv(dovecot: DovecotInstance, mode: "b2bua" | "proxy"): Record<string, string> {
  return {
    CPM_PF__STORE__HOST: dovecot.host,
    CPM_PF__STORE__PORT: String(dovecot.port),
    CPM_PF__STORE__USER: dovecot.user,
    CPM_PF__STORE__PASSWORD: dovecot.password,
    CPM_PF__PF__MODE: mode,
  };
}

/** The sidecar's env for per-user mailboxes: the login template "{user}*<master user>" with the master password. */
export function perUserStoreEnv(dovecot: DovecotInstance, mode: "b2bua" | "proxy"): Record<string, string> {
  return {
    ...storeEnv(dovecot, mode),
    CPM_PF__STORE__USER: `{user}*${dovecot.masterUser}`,
    CPM_PF__STORE__PASSWORD: dovecot.masterPassword,
  };
}
