// OMA CPM Conv Fnct 8.3.2.3 (SIP BYE from the network side), end to end:
// SIPp plays the Controlling Function (test/scenarios/cf-invite-bye.xml) and a
// client of the served user (client-uas.xml); Kamailio runs kamailio/kamailio.cfg
// with the cpm-pf plugin; the real sidecar decides and writes GSOs to a real
// Dovecot. Assertions read the SIPp message traces (what went over the wire,
// with timestamps) and the Message Store (imapflow).
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type DovecotInstance, startDovecot } from "../harness/dovecot.js";
import {
  type CallResult,
  CLIENT_PAUSE_MS,
  folderMessages,
  groupChatCall,
  gsoXml,
  imap,
  PARTICIPANTS,
  perUserStoreEnv,
  playGroupChat,
  storedObjects,
  storeEnv,
} from "../harness/group-chat.js";
import { readFolderRaw } from "../harness/imap-read.js";
import { type KamailioInstance, startKamailio } from "../harness/kamailio.js";
import { freePort } from "../harness/ports.js";
import { type SidecarInstance, startSidecar } from "../harness/sidecar.js";
import { first, header, type SipTraceMessage } from "../harness/sipp.js";
import { waitFor } from "../harness/wait.js";

/** Two SIPp processes log each message after sending / on reading it: their trace times may cross by a few ms. */
const TRACE_SLACK_MS = 5;

/** Deadline of the sidecar calls in the functional cases (not about latency). */
const FUNCTIONAL_DEADLINE_MS = 1000;

function assertParticipants(xml: string): void {
  assert.match(xml, /<groupstate\b[^>]*\btimestamp="[^"]+"/);
  assert.match(xml, /<groupstate\b[^>]*\blastfocussessionid="[^"]+"/);
  for (const p of PARTICIPANTS) {
    assert.match(xml, new RegExp(`<participant\\b[^>]*comm-addr="${p.replace(/\+/g, "\\+")}"`), `participant ${p} missing`);
  }
}

function reasonCause(value: string | undefined): number | undefined {
  const m = /;\s*cause\s*=\s*(\d+)/i.exec(value ?? "");
  return m ? Number(m[1]) : undefined;
}

describe("8.3.2.3 BYE from the network, PF as B2BUA (SIPp CF + client, Kamailio, sidecar, Dovecot)", () => {
  let dovecot: DovecotInstance | undefined;
  let sidecar: SidecarInstance | undefined;
  let kamailio: KamailioInstance | undefined;

  before(async () => {
    dovecot = await startDovecot();
    sidecar = await startSidecar(storeEnv(dovecot, "b2bua"));
    kamailio = await startKamailio({ grpcTarget: sidecar.target, deadlineMs: FUNCTIONAL_DEADLINE_MS });
  });
  after(async () => {
    await kamailio?.stop();
    await sidecar?.stop();
    await dovecot?.stop();
  });

  test("BYE-B1 BYE-B7: a BYE without Reason reaches the client with Reason: SIP;cause=200, no GSO", async () => {
    const call = await groupChatCall(kamailio as KamailioInstance, []);
    const reasons = call.clientBye.headers.get("reason") ?? [];
    assert.equal(reasons.length, 1, `client got Reason ${JSON.stringify(reasons)}`);
    assert.match(reasons[0] as string, /^SIP\s*;\s*cause\s*=\s*200\b/i);
    const gsos = await folderMessages(dovecot as DovecotInstance, `Default/${call.conversationId}/${call.contributionId}`);
    assert.equal(gsos.length, 0, "cause 200: no GSO");
  });

  test('BYE-B2: Reason SIP;cause=200;text="Call completed" -> the client gets cause 200, no GSO', async () => {
    const call = await groupChatCall(kamailio as KamailioInstance, ['Reason: SIP;cause=200;text="Call completed"']);
    const reasons = call.clientBye.headers.get("reason") ?? [];
    assert.equal(reasons.length, 1);
    assert.equal(reasonCause(reasons[0]), 200);
    const gsos = await folderMessages(dovecot as DovecotInstance, `Default/${call.conversationId}/${call.contributionId}`);
    assert.equal(gsos.length, 0);
  });

  test("BYE-B3: cause=410 + Referred-By -> GSO with the participants, <status>removed</status>, <referred-by>", async () => {
    const call = await groupChatCall(kamailio as KamailioInstance, [
      'Reason: SIP;cause=410;text="Gone"',
      "Referred-By: <sip:admin@example.net>",
    ]);
    assert.equal(reasonCause(header(call.clientBye, "reason")), 410);
    const folder = `Default/${call.conversationId}/${call.contributionId}`;
    const gsos = await storedObjects(dovecot as DovecotInstance, folder);
    assert.equal(gsos.length, 1, `one GSO in ${folder}`);
    const src = gsos[0] as string;
    assert.match(src, new RegExp(`^Conversation-ID:\\s*${call.conversationId}\\s*$`, "im"));
    assert.match(src, new RegExp(`^Contribution-ID:\\s*${call.contributionId}\\s*$`, "im"));
    const xml = gsoXml(src);
    assertParticipants(xml);
    assert.match(xml, /<status>\s*removed\s*<\/status>/);
    assert.match(xml, /<referred-by>\s*(<)?sip:admin@example\.net(>)?\s*<\/referred-by>/);
  });

  test("BYE-B4: cause=480 (CF inactivity) -> GSO with the latest participants", async () => {
    const call = await groupChatCall(kamailio as KamailioInstance, ["Reason: SIP;cause=480"]);
    assert.equal(reasonCause(header(call.clientBye, "reason")), 480);
    const gsos = await storedObjects(dovecot as DovecotInstance, `Default/${call.conversationId}/${call.contributionId}`);
    assert.equal(gsos.length, 1);
    const xml = gsoXml(gsos[0] as string);
    assertParticipants(xml);
    // 2.b.iii: may be re-started as a long-lived group session: not "removed"
    assert.doesNotMatch(xml, /<status>\s*removed\s*<\/status>/);
  });

  test('BYE-B5: cause=503;text="Service Unavailable" (SIP/IP core) -> GSO with the latest participants', async () => {
    const call = await groupChatCall(kamailio as KamailioInstance, ['Reason: SIP;cause=503;text="Service Unavailable"']);
    assert.equal(reasonCause(header(call.clientBye, "reason")), 503);
    const gsos = await storedObjects(dovecot as DovecotInstance, `Default/${call.conversationId}/${call.contributionId}`);
    assert.equal(gsos.length, 1);
    assertParticipants(gsoXml(gsos[0] as string));
  });

  test("BYE-B7 BYE-B9: the client gets a BYE; the CF's 200 OK comes only after the client's 200 OK", async (t) => {
    const call = await groupChatCall(kamailio as KamailioInstance, ["Reason: SIP;cause=480"]);
    assert.equal(call.clientBye.method, "BYE");
    assert.equal(header(call.clientBye, "call-id"), call.callId);
    const { cfByeSent, clientByeReceived, client200Sent, cf200 } = call.t;
    t.diagnostic(
      `CF BYE -> client +${(clientByeReceived - cfByeSent).toFixed(1)} ms; client 200 +${(client200Sent - cfByeSent).toFixed(1)} ms; CF 200 +${(cf200 - cfByeSent).toFixed(1)} ms`,
    );
    assert.ok(clientByeReceived >= cfByeSent, "client got the BYE after the CF sent it");
    assert.ok(cf200 >= client200Sent - TRACE_SLACK_MS, `CF 200 at ${cf200} before client 200 at ${client200Sent}`);
    // the CF waited for the client's (delayed) answer
    assert.ok(cf200 - cfByeSent >= CLIENT_PAUSE_MS - 5, `CF got 200 after ${cf200 - cfByeSent} ms`);
    // 2.d/2.f: the final answer is reported to the sidecar (non-blocking)
    await waitFor(
      () => (sidecar as SidecarInstance).logLines().some((l) => l.msg === "BYE completed" && l.callId === call.callId),
      3000,
      25,
      "ReportByeOutcome in the sidecar log",
    );
    assert.equal(await (kamailio as KamailioInstance).stat("cpm_pf_failsafe"), 0);
    assert.equal(await (kamailio as KamailioInstance).stat("cpm_pf_bye_b2bua"), 6, "every BYE of this suite was a B2BUA decision");
    assert.doesNotMatch((kamailio as KamailioInstance).logs(), /\b(ERROR|CRITICAL|ALERT|BUG):/);
  });

  test("IMS routing (RFC 3261 16.4): a CPM INVITE with pre-loaded Routes goes on to the next Route (the S-CSCF's ISC return path), not to the Request-URI; the CF's BYE follows the route set (BYE-B4)", async () => {
    const k = kamailio as KamailioInstance;
    // nothing listens on the Request-URI's port: only the S-CSCF's Route gets the INVITE there
    const requestUriPort = await freePort();
    const play = await playGroupChat(k, {
      byeHeaders: ["Reason: SIP;cause=480"],
      requestUriPort,
      inviteHeaders: (scscfPort) => [`Route: <sip:${k.address};lr>, <sip:127.0.0.1:${scscfPort};lr;odi=cpm-term-1>`],
    });
    const invite = first(play.client.messages, { direction: "received", method: "INVITE" });
    assert.ok(invite, "the S-CSCF got the INVITE");
    assert.match(
      invite.text.split("\r\n")[0] ?? "",
      new RegExp(`^INVITE sip:\\+16135551200@127\\.0\\.0\\.1:${requestUriPort};user=phone SIP/2\\.0`),
    );
    // the PF's own Route was removed, the S-CSCF's (with its original dialog identifier) is on top
    const routes = (invite.headers.get("route") ?? []).flatMap((v) => v.split(","));
    assert.equal(routes.length, 1, `Route ${JSON.stringify(routes)}`);
    assert.match(routes[0] as string, /;odi=cpm-term-1/);
    assert.ok(
      (invite.headers.get("record-route") ?? []).some((rr) => rr.includes(";cpmpf")),
      "the PF record-routes it",
    );
    // the session is the PF's: the CF's BYE gets 8.3.2.3's treatment and the GSO is stored
    assert.equal(play.cfByeAnswer?.status, 200);
    assert.equal(reasonCause(header(play.clientBye, "reason")), 480);
    const gsos = await storedObjects(dovecot as DovecotInstance, `Default/${play.conversationId}/${play.contributionId}`);
    assert.equal(gsos.length, 1);
  });
});

describe("8.3.2.3 2.e BYE from the network, PF as B2BUA, the client answers the BYE with an error or not at all", () => {
  /** CPM_PF_BYE_CLIENT_TIMEOUT_MS of this Kamailio (the plugin's default is 8000). */
  const CLIENT_TIMEOUT_MS = 1000;
  const MARGIN_MS = 400;
  const TM_SLACK_MS = 125;
  let dovecot: DovecotInstance | undefined;
  let sidecar: SidecarInstance | undefined;
  let kamailio: KamailioInstance | undefined;

  before(async () => {
    dovecot = await startDovecot();
    sidecar = await startSidecar(storeEnv(dovecot, "b2bua"));
    kamailio = await startKamailio({
      grpcTarget: sidecar.target,
      deadlineMs: FUNCTIONAL_DEADLINE_MS,
      defines: [`CPM_PF_BYE_CLIENT_TIMEOUT_MS=${CLIENT_TIMEOUT_MS}`],
    });
  });
  after(async () => {
    await kamailio?.stop();
    await sidecar?.stop();
    await dovecot?.stop();
  });

  /** The sidecar's "BYE completed" line of the call (ReportByeOutcome), with the status Kamailio reported. */
  async function outcomeReported(callId: string): Promise<unknown> {
    let status: unknown;
    await waitFor(
      () => {
        const line = (sidecar as SidecarInstance).logLines().find((l) => l.msg === "BYE completed" && l.callId === callId);
        status = line?.statusCode;
        return line !== undefined;
      },
      3000,
      25,
      "ReportByeOutcome in the sidecar log",
    );
    return status;
  }

  /** The mode the sidecar decided the BYE in (its "BYE decided" line). */
  function decidedMode(callId: string): unknown {
    return (sidecar as SidecarInstance).logLines().find((l) => l.msg === "BYE decided" && l.callId === callId)?.mode;
  }

  test("BYE-B9 BYE-B7 BYE-B4: the client answers the BYE 481 -> the CF gets the PF's 200 OK, the client got the PF's Reason, the GSO is stored", async () => {
    const play = await playGroupChat(kamailio as KamailioInstance, {
      byeHeaders: ["Reason: SIP;cause=480"],
      clientScenario: "bye-b9-client-481.xml",
    });
    assert.equal(play.clientByeAnswer?.status, 481, "the client answered 481");
    assert.equal(play.cfByeAnswer?.status, 200, `the CF got ${play.cfByeAnswer?.status}, not the PF's 200 OK`);
    assert.equal(
      play.cf.messages.filter((m) => m.direction === "received" && m.status === 481).length,
      0,
      "the client's 481 never reached the CF",
    );
    assert.ok(
      (play.cfByeAnswer?.time ?? 0) >= (play.clientByeAnswer?.time ?? Number.POSITIVE_INFINITY) - TRACE_SLACK_MS,
      "the PF answered after the client",
    );
    assert.equal(header(play.cfByeAnswer as SipTraceMessage, "call-id"), play.callId);
    // the Reason the PF decided (the mapped SIP value, no text the CF did not send), in B2BUA mode
    assert.deepEqual(play.clientBye.headers.get("reason"), ["SIP;cause=480"]);
    assert.equal(decidedMode(play.callId), "b2bua");
    const gsos = await storedObjects(dovecot as DovecotInstance, `Default/${play.conversationId}/${play.contributionId}`);
    assert.equal(gsos.length, 1, "the GSO is stored before the BYE goes on, whatever the client answers");
    assertParticipants(gsoXml(gsos[0] as string));
    assert.equal(await outcomeReported(play.callId), 481, "the client's answer is reported to the sidecar");
    assert.equal(await (kamailio as KamailioInstance).stat("cpm_pf_failsafe"), 0);
  });

  test("BYE-B4: the group folder is created when the INVITE is observed, before the CF's BYE (off the BYE's path)", async () => {
    const d = dovecot as DovecotInstance;
    let seenAt = 0;
    const play = await playGroupChat(kamailio as KamailioInstance, {
      byeHeaders: ["Reason: SIP;cause=480"],
      cfPauseMs: 1500,
      during: async ({ conversationId, contributionId }) => {
        const folder = `Default/${conversationId}/${contributionId}`;
        await waitFor(
          async () => (await imap(d, async (c) => (await c.list()).some((b) => b.path === folder))) === true,
          3000,
          25,
          `${folder} created`,
        );
        seenAt = Date.now();
      },
    });
    assert.ok(seenAt > 0 && seenAt < play.cfBye.time, `folder seen at ${seenAt}, CF's BYE sent at ${play.cfBye.time}`);
    assert.equal(play.cfByeAnswer?.status, 200);
    const gsos = await storedObjects(d, `Default/${play.conversationId}/${play.contributionId}`);
    assert.equal(gsos.length, 1);
  });

  test("BYE-B9 BYE-B7 BYE-B3: the client never answers the BYE -> the CF gets the PF's 200 OK after CPM_PF_BYE_CLIENT_TIMEOUT_MS, not a 408", async (t) => {
    const play = await playGroupChat(kamailio as KamailioInstance, {
      byeHeaders: ["Reason: SIP;cause=410", "Referred-By: <sip:admin@example.net>"],
      clientScenario: "bye-b9-client-silent.xml",
      clientPauseMs: CLIENT_TIMEOUT_MS + 1500,
    });
    assert.equal(play.clientByeAnswer, undefined, "the client sent no answer");
    assert.equal(play.cfByeAnswer?.status, 200, `the CF got ${play.cfByeAnswer?.status}, not the PF's 200 OK`);
    const gave = (play.cfByeAnswer?.time ?? 0) - play.clientBye.time;
    const waited = (play.cfByeAnswer?.time ?? 0) - play.cfBye.time;
    t.diagnostic(
      `client BYE -> PF's 200 OK ${gave.toFixed(1)} ms, CF BYE -> 200 OK ${waited.toFixed(1)} ms (client timeout ${CLIENT_TIMEOUT_MS} ms)`,
    );
    // tm's timers tick every 1/16 s (and may fire a tick early)
    assert.ok(gave >= CLIENT_TIMEOUT_MS - TM_SLACK_MS, `the PF answered ${gave} ms after the client's BYE, before its time was up`);
    assert.ok(waited < CLIENT_TIMEOUT_MS + MARGIN_MS, `the CF waited ${waited} ms`);
    assert.deepEqual(play.clientBye.headers.get("reason"), ["SIP;cause=410"]);
    assert.equal(decidedMode(play.callId), "b2bua");
    const gsos = await storedObjects(dovecot as DovecotInstance, `Default/${play.conversationId}/${play.contributionId}`);
    assert.equal(gsos.length, 1);
    assert.match(gsoXml(gsos[0] as string), /<status>\s*removed\s*<\/status>/);
    assert.equal(await outcomeReported(play.callId), 0, "no answer (0) is reported to the sidecar");
    assert.equal(await (kamailio as KamailioInstance).stat("cpm_pf_failsafe"), 0);
    assert.doesNotMatch((kamailio as KamailioInstance).logs(), /\b(ERROR|CRITICAL|ALERT|BUG):/);
  });
});

describe("8.3.2.3 2.b one GSO per BYE: Kamailio SIGKILLed after the decision, restarted, the CF's retransmitted BYE decided again", () => {
  const CLIENT_TIMEOUT_MS = 1000;
  let dovecot: DovecotInstance | undefined;
  let sidecar: SidecarInstance | undefined;
  let kamailio: KamailioInstance | undefined;
  let restarted: KamailioInstance | undefined;
  const kamailioOptions = (sidecarTarget: string) => ({
    grpcTarget: sidecarTarget,
    deadlineMs: FUNCTIONAL_DEADLINE_MS,
    defines: [`CPM_PF_BYE_CLIENT_TIMEOUT_MS=${CLIENT_TIMEOUT_MS}`],
  });

  before(async () => {
    dovecot = await startDovecot();
    sidecar = await startSidecar(storeEnv(dovecot, "b2bua"));
    kamailio = await startKamailio(kamailioOptions(sidecar.target));
  });
  after(async () => {
    await restarted?.stop();
    await kamailio?.stop();
    await sidecar?.stop();
    await dovecot?.stop();
  });

  test("BYE-B4: the same BYE (Call-ID, CSeq, tags) decided twice -> exactly one GSO in the user's group folder", async (t) => {
    const sc = sidecar as SidecarInstance;
    const first = kamailio as KamailioInstance;
    const decided = (callId: string) => sc.logLines().filter((l) => l.msg === "BYE decided" && l.callId === callId);
    const play = await playGroupChat(first, {
      byeHeaders: ["Reason: SIP;cause=480"],
      // absorbs the BYE from both Kamailios and never answers: the restarted
      // one answers the CF itself (BYE-B9) once CLIENT_TIMEOUT_MS passed
      clientScenario: "bye-b9-client-silent.xml",
      clientPauseMs: 7000,
      during: async ({ callId }) => {
        await waitFor(() => decided(callId).length === 1, 5000, 5, "the CF's BYE decided");
        await first.kill("SIGKILL");
        assert.ok(first.exited(), "Kamailio is dead");
        // the CF got no answer: its SIPp retransmits the same BYE (T1 = 500 ms, doubling)
        restarted = await startKamailio({ ...kamailioOptions(sc.target), sipPort: first.sipPort });
      },
    });
    t.diagnostic(`CF BYE -> 200 OK from the restarted Kamailio ${((play.cfByeAnswer?.time ?? 0) - play.cfBye.time).toFixed(0)} ms`);
    assert.equal(play.cfByeAnswer?.status, 200);
    const bye = play.cf.messages.filter((m) => m.direction === "sent" && m.method === "BYE");
    assert.ok(bye.length >= 2, "the CF retransmitted its BYE");
    assert.ok(
      bye.every((m) => header(m, "cseq") === header(play.cfBye, "cseq") && header(m, "from") === header(play.cfBye, "from")),
      "the same BYE",
    );
    await waitFor(() => decided(play.callId).length === 2, 3000, 25, "the retransmitted BYE decided by the sidecar again");
    const gsos = await storedObjects(dovecot as DovecotInstance, `Default/${play.conversationId}/${play.contributionId}`);
    assert.equal(gsos.length, 1, `one GSO, not ${gsos.length}`);
    assertParticipants(gsoXml(gsos[0] as string));
    assert.ok(
      sc.logLines().some((l) => l.msg === "GSO already stored" && l.callId === play.callId),
      "the second decision found the GSO of the first",
    );
  });
});

describe("8.3.2.3 BYE from the network, PF as B2BUA, each served user's GSO in that user's own mailbox (store.user = {user}*pfmaster)", () => {
  // the scenario's served user (To of the CF's INVITE) is tel:+16135551200
  const SERVED_MAILBOX = "+16135551200";
  let dovecot: DovecotInstance | undefined;
  let sidecar: SidecarInstance | undefined;
  let kamailio: KamailioInstance | undefined;

  before(async () => {
    dovecot = await startDovecot({ users: [SERVED_MAILBOX] });
    sidecar = await startSidecar(perUserStoreEnv(dovecot, "b2bua"));
    kamailio = await startKamailio({ grpcTarget: sidecar.target, deadlineMs: FUNCTIONAL_DEADLINE_MS });
  });
  after(async () => {
    await kamailio?.stop();
    await sidecar?.stop();
    await dovecot?.stop();
  });

  test("BYE-B4: cause=480 -> the GSO is in the served user's mailbox (through the master user), not in a shared one", async () => {
    const d = dovecot as DovecotInstance;
    const call = await groupChatCall(kamailio as KamailioInstance, ["Reason: SIP;cause=480"]);
    assert.equal(reasonCause(header(call.clientBye, "reason")), 480);
    const folder = `Default/${call.conversationId}/${call.contributionId}`;
    const own = d.users.find((u) => u.user === SERVED_MAILBOX);
    assert.ok(own);
    const gsos = await readFolderRaw(d, folder, own);
    assert.equal(gsos.length, 1);
    assertParticipants(gsoXml(gsos[0]?.toString("utf8") ?? ""));
    assert.equal((await folderMessages(d, folder)).length, 0, "nothing in the test user's mailbox");
  });
});

describe("8.3.2.3 BYE from the network, PF as proxy (CPM_PF__PF__MODE=proxy)", () => {
  let dovecot: DovecotInstance | undefined;
  let sidecar: SidecarInstance | undefined;
  let kamailio: KamailioInstance | undefined;

  before(async () => {
    dovecot = await startDovecot();
    sidecar = await startSidecar(storeEnv(dovecot, "proxy"));
    kamailio = await startKamailio({ grpcTarget: sidecar.target, deadlineMs: FUNCTIONAL_DEADLINE_MS });
  });
  after(async () => {
    await kamailio?.stop();
    await sidecar?.stop();
    await dovecot?.stop();
  });

  test("BYE-P1: the BYE reaches the client with the CF's Reason unchanged, the 200 OK goes back, no GSO", async () => {
    const reason = 'SIP;cause=410;text="Gone"';
    const call = await groupChatCall(kamailio as KamailioInstance, [`Reason: ${reason}`, "Referred-By: <sip:admin@example.net>"]);
    assert.deepEqual(call.clientBye.headers.get("reason"), [reason]);
    assert.equal(header(call.clientBye, "referred-by"), "<sip:admin@example.net>");
    assert.ok(call.t.cf200 >= call.t.client200Sent - TRACE_SLACK_MS, "the client's 200 OK is forwarded back to the CF");
    const gsos = await storedObjects(dovecot as DovecotInstance, `Default/${call.conversationId}/${call.contributionId}`);
    assert.equal(gsos.length, 0, "proxy mode stores no GSO");
    assert.ok((await (kamailio as KamailioInstance).stat("cpm_pf_bye_proxy")) >= 1);
    assert.equal(await (kamailio as KamailioInstance).stat("cpm_pf_failsafe"), 0);
  });

  test("BYE-P1 (not BYE-B9): the client answers the BYE 481 -> a proxy relays that 481 to the CF, the Reason unchanged", async () => {
    const reason = "SIP;cause=480";
    const play = await playGroupChat(kamailio as KamailioInstance, {
      byeHeaders: [`Reason: ${reason}`],
      clientScenario: "bye-b9-client-481.xml",
    });
    assert.deepEqual(play.clientBye.headers.get("reason"), [reason]);
    assert.equal(play.clientByeAnswer?.status, 481);
    assert.equal(play.cfByeAnswer?.status, 481, "the client's answer goes back unchanged");
    assert.equal(await (kamailio as KamailioInstance).stat("cpm_pf_failsafe"), 0);
  });
});

describe("8.3.2.3 fail-safe: the sidecar dies, Kamailio relays the BYE as a plain proxy and journals it; the sidecar replays it when back", () => {
  const DEADLINE_MS = 200; // the plugin's default
  const MARGIN_MS = 150;
  let dovecot: DovecotInstance | undefined;
  let sidecar: SidecarInstance | undefined;
  let restarted: SidecarInstance | undefined;
  let kamailio: KamailioInstance | undefined;
  let dir = "";
  /** The sidecar's state, spool and the fail-safe journal survive its restarts (they are on disk). */
  let durable: Record<string, string> = {};
  /** The call whose BYE went through the fail-safe after its INVITE was observed. */
  let killedMidSession: CallResult | undefined;
  const journaled = () => readdirSync(join(dir, "failsafe")).filter((n) => n.endsWith(".bye"));

  before(async () => {
    dovecot = await startDovecot();
    dir = await mkdtemp(join(tmpdir(), "cpm-pf-failsafe-"));
    durable = {
      CPM_PF__SESSION__STATEDIR: join(dir, "state"),
      CPM_PF__STORE__SPOOLDIR: join(dir, "spool"),
      CPM_PF__SESSION__FAILSAFEDIR: join(dir, "failsafe"),
    };
    // debug: the test waits for "session updated" before killing the sidecar
    sidecar = await startSidecar({ ...storeEnv(dovecot, "b2bua"), ...durable, CPM_PF__LOG__LEVEL: "debug" });
    kamailio = await startKamailio({
      grpcTarget: sidecar.target,
      deadlineMs: DEADLINE_MS,
      defines: [`CPM_PF_FAILSAFE_DIR="${join(dir, "failsafe")}"`],
    });
  });
  after(async () => {
    await kamailio?.stop();
    await restarted?.stop();
    await sidecar?.stop();
    await dovecot?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test("BYE-B7 BYE-B9 fail-safe: sidecar SIGKILLed mid-session -> the BYE still reaches the client unchanged, the CF gets 200 in time", async (t) => {
    const k = kamailio as KamailioInstance;
    const sc = sidecar as SidecarInstance;
    // a first call with the sidecar alive: the async workers' gRPC channels are connected
    const warm = await groupChatCall(k, []);
    assert.equal(reasonCause(header(warm.clientBye, "reason")), 200, "sidecar alive: B2BUA Reason");
    const before = await k.stat("cpm_pf_failsafe");

    const reason = 'SIP;cause=410;text="Gone"';
    const call = await groupChatCall(k, [`Reason: ${reason}`], async ({ callId }) => {
      // the sidecar has the session (INVITE observed) -> kill it; the CF's BYE
      // follows the 200/ACK 200 ms later
      await waitFor(
        () => sc.logLines().some((l) => l.msg === "session updated" && l.callId === callId),
        5000,
        5,
        "INVITE observed by the sidecar",
      );
      await sc.kill("SIGKILL");
    });
    assert.ok(sc.exited(), "sidecar is dead");
    // fail-safe: relayed unchanged
    assert.deepEqual(call.clientBye.headers.get("reason"), [reason]);
    const decision = call.t.clientByeReceived - call.t.cfByeSent;
    const total = call.t.cf200 - call.t.cfByeSent;
    t.diagnostic(`fail-safe: CF BYE -> client BYE ${decision.toFixed(1)} ms; CF BYE -> CF 200 ${total.toFixed(1)} ms`);
    assert.ok(decision < DEADLINE_MS + MARGIN_MS, `BYE held ${decision} ms`);
    assert.ok(total < DEADLINE_MS + CLIENT_PAUSE_MS + MARGIN_MS, `CF waited ${total} ms for its 200 OK`);
    // the client's own 200, relayed (it pauses CLIENT_PAUSE_MS before answering); SIPp stamps a sent
    // message when it writes its trace, after sendto(), which under load can be a few ms late
    assert.ok(call.t.cf200 >= call.t.client200Sent - TRACE_SLACK_MS, `CF 200 at ${call.t.cf200}, client 200 at ${call.t.client200Sent}`);
    assert.equal(await k.stat("cpm_pf_failsafe"), before + 1);
    assert.match(k.logs(), new RegExp(`cpm-pf: fail-safe for BYE: .*\\[ci=${call.callId.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\]`));
    // journaled before it was relayed, for the sidecar to replay
    assert.equal(await k.stat("cpm_pf_failsafe_journaled"), 1);
    assert.equal(journaled().length, 1);
    killedMidSession = call;
  });

  test("fail-safe: sidecar down from the start -> the INVITE is still relayed (ObserveSession only logs), the BYE goes through", async (t) => {
    const k = kamailio as KamailioInstance;
    assert.ok((sidecar as SidecarInstance).exited(), "previous test killed the sidecar");
    const reason = "SIP;cause=480";
    const call = await groupChatCall(k, [`Reason: ${reason}`]);
    assert.deepEqual(call.clientBye.headers.get("reason"), [reason]);
    const decision = call.t.clientByeReceived - call.t.cfByeSent;
    t.diagnostic(`fail-safe (connection refused): CF BYE -> client BYE ${decision.toFixed(1)} ms`);
    assert.ok(decision < DEADLINE_MS + MARGIN_MS);
    assert.match(k.logs(), /cpm-pf: ObserveSession failed for INVITE/);
  });

  test("sidecar restarted on the same port: Kamailio's first request 100 ms after it is ready is decided; the journaled BYEs are replayed (BYE-B3 GSO stored, once)", async () => {
    const k = kamailio as KamailioInstance;
    const d = dovecot as DovecotInstance;
    assert.equal(journaled().length, 2, "both fail-safe BYEs journaled");
    restarted = await startSidecar({
      ...storeEnv(d, "b2bua"),
      ...durable,
      CPM_PF__GRPC__PORT: String((sidecar as SidecarInstance).port),
    });
    // the bridge's channels retry every 100 ms at most: the loss window ends 100 ms after the restart
    await new Promise((r) => setTimeout(r, 100));
    const before = await k.stat("cpm_pf_failsafe");
    const call = await groupChatCall(k, []);
    assert.equal(reasonCause(header(call.clientBye, "reason")), 200, "B2BUA Reason: decided by the restarted sidecar");
    assert.equal(await k.stat("cpm_pf_failsafe"), before, "no fail-safe after the restart");
    // the BYE relayed while the sidecar was dead is decided now: the GSO of its record (8.3.2.3 2.b)
    const gone = killedMidSession as CallResult;
    await waitFor(() => journaled().length === 0, 5000, 50, "journal drained");
    const folder = `Default/${gone.conversationId}/${gone.contributionId}`;
    await waitFor(async () => (await folderMessages(d, folder)).length > 0, 10_000, 100, "the replayed BYE's GSO");
    const gsos = await folderMessages(d, folder);
    assert.equal(gsos.length, 1, "one GSO for the replayed BYE");
    assert.match(gsoXml(gsos[0] as string), /<status>\s*removed\s*<\/status>/);
    const replays = restarted.logLines().filter((l) => l.msg === "fail-safe BYE replayed");
    assert.deepEqual(
      replays.map((l) => [l.callId, l.gso]),
      [
        [gone.callId, "stored"],
        // the INVITE of the second call was never observed: nothing to build a GSO from
        [replays[1]?.callId, "not-required"],
      ],
    );
  });

  test("fail-safe: sidecar frozen (SIGSTOP) -> the deadline fires and the BYE is relayed unchanged", async (t) => {
    const k = kamailio as KamailioInstance;
    const sc = restarted as SidecarInstance;
    await sc.kill("SIGSTOP");
    try {
      const reason = 'SIP;cause=503;text="Service Unavailable"';
      const call = await groupChatCall(k, [`Reason: ${reason}`]);
      assert.deepEqual(call.clientBye.headers.get("reason"), [reason]);
      const decision = call.t.clientByeReceived - call.t.cfByeSent;
      const total = call.t.cf200 - call.t.cfByeSent;
      t.diagnostic(`fail-safe (deadline): CF BYE -> client BYE ${decision.toFixed(1)} ms; CF BYE -> CF 200 ${total.toFixed(1)} ms`);
      // A frozen sidecar either lets the deadline expire or, on a channel
      // that was reconnecting, fails the connection attempt: both take the
      // fail-safe, never later than the deadline (+ scheduling margin).
      assert.ok(decision < DEADLINE_MS + MARGIN_MS, `BYE held ${decision} ms`);
      assert.ok(total < DEADLINE_MS + CLIENT_PAUSE_MS + MARGIN_MS);
      assert.match(k.logs(), /HandleBye failed after \d+ ms: (DEADLINE_EXCEEDED|UNAVAILABLE)/);
    } finally {
      await sc.kill("SIGCONT");
    }
  });
});
