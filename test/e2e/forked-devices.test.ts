// BYE-B7 / BYE-B9 with a forked INVITE, from the wire: the CF (SIPp,
// cf-invite-msrp.xml) invites the served user through Kamailio, media
// anchored; the S-CSCF (SIPp, bye-b7-forked-devices.xml) forks it to a phone
// and a tablet and both answer 200 OK. The CF keeps one dialog (the phone's);
// the PF's UA ACKs the tablet's; each device has its own MSRP leg (MSRP test
// peers). Nothing is seeded: every state is reached through SIP and MSRP.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { chatCpim } from "../fixtures/cpim.js";
import { anchoredChatCall, inDialogSipp, msrpMedia, triggerSipp } from "../harness/anchored-chat.js";
import { DeferredChatRig, GSO_TYPE, groupFolder, SERVED_USER } from "../harness/deferred-chat.js";
import type { MsrpPeer } from "../harness/msrp-peer.js";
import { header, type SipTraceMessage } from "../harness/sipp.js";
import { waitFor } from "../harness/wait.js";

/** How long the second device waits before it answers the network's BYE (sipp -d). */
const SECOND_DEVICE_PAUSE_MS = 600;
/** SIPp timestamps of two processes differ by their loop's latency on a busy machine. */
const CLOCK_MARGIN_MS = 150;

interface Devices {
  cf: MsrpPeer;
  phone: MsrpPeer;
  tablet: MsrpPeer;
}

const received = (peer: MsrpPeer) => peer.received.map((m) => Buffer.from(m.body).toString("utf8"));
const cseqOf = (m: SipTraceMessage) => header(m, "cseq")?.split(/\s+/)[1];
/** The BYEs received, one per dialog (a UDP retransmission, RFC 3261 17.1.2.2, is the same BYE). */
function byes(msgs: readonly SipTraceMessage[]): SipTraceMessage[] {
  const seen = new Set<string>();
  return msgs.filter((m) => {
    const key = `${header(m, "to")} ${header(m, "cseq")}`;
    if (m.direction !== "received" || m.method !== "BYE" || seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** The UA's fan-out log line of the network's BYE: each device's final status to it, sorted. */
async function fanOutStatuses(rig: DeferredChatRig, callId: string): Promise<{ statuses: string[]; devices: string }> {
  const fanOut = await waitFor(
    () => rig.logged("network BYE sent to every device of the served user (BYE-B7)", callId),
    5000,
    20,
    "fan-out logged",
  );
  const devices = String(fanOut.devices);
  return {
    statuses: devices
      .split(" ")
      .map((d) => d.replace(/^.*:/, ""))
      .sort(),
    devices,
  };
}

/** The forked call: `during` runs with both devices' MSRP legs up and the CF's connected; `byeHeaders` on the CF's BYE. */
async function forkedCall(
  rig: DeferredChatRig,
  byeHeaders: string[],
  during: (d: Devices, call: { callId: string; clientSipPort: number; clientInvite: SipTraceMessage; tabletTag: string }) => Promise<void>,
  /** How long the second device waits before it answers the network's BYE, and with what. */
  pauseMs = SECOND_DEVICE_PAUSE_MS,
  secondByeAnswer: "200" | "481" = "200",
) {
  const d: Devices = { cf: await rig.peer("CF"), phone: await rig.peer("phone"), tablet: await rig.peer("tablet") };
  const call = await anchoredChatCall(rig.kamailio, {
    servedUser: SERVED_USER,
    cfMsrpPath: d.cf.path,
    cfSetup: "active",
    clientMsrpPath: d.phone.path,
    clientScenario: {
      scenario: "bye-b7-forked-devices.xml",
      keys: {
        phone_msrp_port: String(new URL(d.phone.path.replace(/^msrp/, "http")).port),
        phone_msrp_path: d.phone.path,
        tablet_msrp_port: String(new URL(d.tablet.path.replace(/^msrp/, "http")).port),
        tablet_msrp_path: d.tablet.path,
        second_bye_answer: secondByeAnswer,
      },
    },
    clientPauseMs: pauseMs,
    byeHeaders,
    timeoutS: 40,
    during: async ({ callId, clientInvite, cf200, clientSipPort }) => {
      const tablet = await waitFor(
        () => rig.logged("further device of the served user anchored (BYE-B7)", callId),
        5000,
        20,
        "the tablet anchored",
      );
      const toDevices = msrpMedia(clientInvite.body).path;
      await d.phone.open(toDevices, "active");
      await d.tablet.open(toDevices, "active");
      await d.cf.open(msrpMedia(cf200.body).path, "active");
      await during(d, { callId, clientSipPort, clientInvite, tabletTag: String(tablet.device) });
    },
  });
  return call;
}

describe("BYE-B7 a forked INVITE answered by two devices of the served user", () => {
  let rig: DeferredChatRig;
  before(async () => {
    rig = await DeferredChatRig.start();
    // the further device's answer is reported by Kamailio's async workers: each has its channel up before the first case
    await rig.untilKamailioReachesSidecar();
  });
  after(async () => {
    await rig?.stop();
  });

  test("BYE-B7 BYE-B9: one CF dialog; the CF's messages reach both devices, theirs reach the CF; the network BYE goes to both and the CF's 200 OK comes after both answered", async () => {
    const call = await forkedCall(rig, ['Reason: SIP;cause=410;text="Gone"'], async (d) => {
      assert.equal((await d.cf.send(chatCpim("to every device", "imdn-fork-1"), "message/cpim")).code, 200);
      await waitFor(() => received(d.phone).some((b) => b.includes("to every device")), 5000, 20, "the phone got it");
      await waitFor(() => received(d.tablet).some((b) => b.includes("to every device")), 5000, 20, "the tablet got it");
      assert.equal((await d.tablet.send(chatCpim("from the tablet", "imdn-fork-2"), "message/cpim")).code, 200);
      assert.equal((await d.phone.send(chatCpim("from the phone", "imdn-fork-3"), "message/cpim")).code, 200);
      const cfGot = received(d.cf);
      assert.ok(
        cfGot.some((b) => b.includes("from the tablet")),
        "the tablet's message reached the CF",
      );
      assert.ok(
        cfGot.some((b) => b.includes("from the phone")),
        "the phone's message reached the CF",
      );
    });
    // the CF saw one 2xx, one dialog: the phone's
    const cf200s = call.cf.messages.filter((m) => m.direction === "received" && m.status === 200 && cseqOf(m) === "INVITE");
    assert.ok(cf200s.length >= 1);
    assert.ok(
      cf200s.every((m) => /PHONE/.test(header(m, "to") ?? "")),
      "the tablet's 2xx never reached the CF",
    );
    // each retransmission of the tablet's 2xx (until the PF's UA's ACK came) is kept from the CF too
    assert.ok((await rig.kamailio.stat("cpm_pf_forked_answers")) >= 1, "the further device's 2xx kept from the CF");
    // BYE-B7: both devices got the network's BYE, each in its own dialog, with the PF's Reason (BYE-B3)
    const deviceByes = byes(call.client.messages);
    assert.equal(deviceByes.length, 2, "a BYE to each device");
    assert.deepEqual(deviceByes.map((b) => (/TABLET/.test(header(b, "to") ?? "") ? "tablet" : "phone")).sort(), ["phone", "tablet"]);
    for (const b of deviceByes) assert.match(header(b, "reason") ?? "", /cause=410/);
    // BYE-B9: the CF's 200 OK after the second device's (late) answer. The
    // UA answers the CF once every device's BYE transaction ended: the log
    // names each device's final status (200: it answered; 408: it did not in
    // time). On the wire, the CF's 200 OK came no sooner than the late device's
    // pause after that device got its BYE (two SIPp processes, each with a
    // clock it reads once per loop: compared with a margin, not to the ms).
    const fanOut = await waitFor(
      () => rig.logged("network BYE sent to every device of the served user (BYE-B7)", call.callId),
      5000,
      20,
      "fan-out logged",
    );
    assert.deepEqual(
      String(fanOut.devices)
        .split(" ")
        .map((d) => d.replace(/^.*(PHONE|TABLET)\d*:/, "$1:"))
        .sort(),
      ["PHONE:200", "TABLET:200"],
      "both devices answered the BYE before the CF's 200 OK",
    );
    const cfOk = call.cf.messages.find((m) => m.direction === "received" && m.status === 200 && cseqOf(m) === "BYE");
    assert.ok(cfOk, "the CF got 200 OK to its BYE");
    const lateBye = deviceByes.reduce((a, b) => (b.time > a.time ? b : a));
    assert.ok(
      cfOk.time >= lateBye.time + SECOND_DEVICE_PAUSE_MS - CLOCK_MARGIN_MS,
      `the CF's 200 OK waited for the late device (${Math.round(cfOk.time - lateBye.time)} ms after its BYE)`,
    );
    // 8.3.2.3 2.b.ii: one GSO for the one BYE
    const gsos = (await rig.folder(groupFolder(call), SERVED_USER)).filter((o) => o.includes(GSO_TYPE));
    assert.equal(gsos.length, 1, "one GSO");
  });

  test("BYE-B7 BYE-B9: the sidecar is SIGKILLed with both devices anchored and restarted: the network BYE still goes to both devices (their dialogs come from the durable record), the CF gets the PF's 200 OK after both answered; one GSO", async () => {
    const call = await forkedCall(rig, ['Reason: SIP;cause=410;text="Gone"'], async () => {
      await rig.crashAndRestart();
    });
    const deviceByes = byes(call.client.messages);
    assert.equal(deviceByes.length, 2, "a BYE to each device, sent by the restarted sidecar's UA");
    for (const b of deviceByes) assert.match(header(b, "reason") ?? "", /cause=410/);
    const { statuses, devices } = await fanOutStatuses(rig, call.callId);
    assert.deepEqual(statuses, ["200", "200"], `both devices answered before the CF's 200 OK (${devices})`);
    const cfAnswers = call.cf.messages.filter((m) => m.direction === "received" && (m.status ?? 0) >= 200 && cseqOf(m) === "BYE");
    assert.ok(
      cfAnswers.length >= 1 && cfAnswers.every((m) => m.status === 200),
      `the CF's BYE answered 200 OK (${cfAnswers.map((m) => m.status)})`,
    );
    const gsos = (await rig.folder(groupFolder(call), SERVED_USER)).filter((o) => o.includes(GSO_TYPE));
    assert.equal(gsos.length, 1, "one GSO");
  });

  test("BYE-B7: the tablet leaves with its own BYE; the phone goes on getting the CF's messages and alone gets the network's BYE", async () => {
    const call = await forkedCall(rig, [], async (d, { callId, clientSipPort }) => {
      await triggerSipp(clientSipPort, callId, 0);
      await waitFor(() => rig.logged("device left, the others stay in the group session (BYE-B7)", callId), 5000, 20, "tablet left");
      assert.equal((await d.cf.send(chatCpim("after the tablet left", "imdn-fork-4"), "message/cpim")).code, 200);
      await waitFor(() => received(d.phone).some((b) => b.includes("after the tablet left")), 5000, 20, "the phone got it");
      assert.ok(!received(d.tablet).some((b) => b.includes("after the tablet left")), "the tablet left: nothing more for it");
    });
    const deviceByes = byes(call.client.messages);
    assert.equal(deviceByes.length, 1, "the network's BYE to the phone only");
    assert.match(header(deviceByes[0] as SipTraceMessage, "to") ?? "", /PHONE/);
    const tabletOk = call.client.messages.find((m) => m.direction === "received" && m.status === 200 && cseqOf(m) === "BYE");
    assert.ok(tabletOk, "the tablet's BYE was answered 200 OK (by the PF's UA)");
    const cfGotBye = call.cf.messages.some((m) => m.direction === "received" && m.method === "BYE");
    assert.equal(cfGotBye, false, "the tablet's BYE did not reach the CF");
  });

  test("BYE-B7 RFC 4028: the tablet refreshes its own dialog (re-INVITE with its SDP, then UPDATE) -> the PF's UA answers both with the tablet's leg as it is and stays out of the CF's dialog; the tablet goes on getting the CF's messages", async () => {
    const call = await forkedCall(rig, ['Reason: SIP;cause=410;text="Gone"'], async (d, { callId, clientInvite, tabletTag }) => {
      const before = await rig.kamailio.stat("cpm_pf_refreshes");
      const refresh = await inDialogSipp(rig.kamailio, "bye-b7-device-session-refresh.xml", callId, {
        device_from: `${header(clientInvite, "to")};tag=${tabletTag}`,
        device_to: header(clientInvite, "from") ?? "",
        request_uri: /<([^>]+)>/.exec(header(clientInvite, "contact") ?? "")?.[1] ?? "",
        route: header(clientInvite, "record-route") ?? "",
        msrp_port: String(new URL(d.tablet.path.replace(/^msrp/, "http")).port),
        msrp_path: d.tablet.path,
      });
      const [toInvite, toUpdate] = refresh.messages.filter((m) => m.direction === "received" && m.status === 200) as [
        SipTraceMessage,
        SipTraceMessage,
      ];
      assert.equal(cseqOf(toInvite), "INVITE");
      assert.equal(msrpMedia(toInvite.body).path, msrpMedia(clientInvite.body).path, "the PF's leg towards the devices, unchanged");
      assert.match(toInvite.body, /^a=setup:passive\r?$/m, "the connection role kept (the tablet connected to the PF)");
      assert.match(header(toInvite, "contact") ?? "", /^<sip:127\.0\.0\.1:\d+>$/, "the PF's UA answers: its dialog");
      assert.equal(header(toInvite, "session-expires"), "900;refresher=uac", "the tablet stays the refresher");
      assert.equal(cseqOf(toUpdate), "UPDATE");
      assert.equal(header(toUpdate, "session-expires"), "900;refresher=uac");
      assert.equal(await rig.kamailio.stat("cpm_pf_refreshes"), before + 2);
      // its MSRP leg goes on as it was
      assert.equal((await d.cf.send(chatCpim("after the tablet's refresh", "imdn-fork-5"), "message/cpim")).code, 200);
      await waitFor(() => received(d.tablet).some((b) => b.includes("after the tablet's refresh")), 5000, 20, "the tablet got it");
      await waitFor(() => received(d.phone).some((b) => b.includes("after the tablet's refresh")), 5000, 20, "the phone got it");
    });
    const atCf = call.cf.messages.filter((m) => m.direction === "received" && (m.method === "INVITE" || m.method === "UPDATE"));
    assert.deepEqual(atCf, [], "the tablet's refresh never reached the CF");
    // the group session ends as before: the network's BYE to both devices
    assert.equal(byes(call.client.messages).length, 2, "a BYE to each device");
  });
});

describe("BYE-B7 BYE-B9 a forked INVITE's device that does not answer the network's BYE in time (pf.deviceByeTimeoutMs)", () => {
  /** Well below the late device's pause: its BYE transaction is over for the PF before it answers. */
  const DEVICE_BYE_TIMEOUT_MS = 250;
  const LATE_PAUSE_MS = 1500;
  let rig: DeferredChatRig;
  before(async () => {
    rig = await DeferredChatRig.start({ CPM_PF__PF__DEVICEBYETIMEOUTMS: String(DEVICE_BYE_TIMEOUT_MS) });
    await rig.untilKamailioReachesSidecar();
  });
  after(async () => {
    await rig?.stop();
  });

  test("BYE-B7 BYE-B9: the network BYE goes to both devices; one answers at once, the other too late: the CF gets the PF's 200 OK once the late one's time is up, before it answered; one GSO", async () => {
    const call = await forkedCall(rig, ["Reason: SIP;cause=480"], async () => {}, LATE_PAUSE_MS);
    const deviceByes = byes(call.client.messages);
    assert.equal(deviceByes.length, 2, "a BYE to each device");
    const { statuses, devices } = await fanOutStatuses(rig, call.callId);
    assert.deepEqual(statuses, ["200", "408"], `one device answered, the other's time was up (${devices})`);
    const cfOk = call.cf.messages.find((m) => m.direction === "received" && m.status === 200 && cseqOf(m) === "BYE");
    assert.ok(cfOk, "the CF got the PF's 200 OK to its BYE");
    const lateBye = deviceByes.reduce((a, b) => (b.time > a.time ? b : a));
    assert.ok(
      cfOk.time < lateBye.time + LATE_PAUSE_MS - CLOCK_MARGIN_MS,
      `the CF's 200 OK did not wait for the late device (${Math.round(cfOk.time - lateBye.time)} ms after its BYE, it answers after ${LATE_PAUSE_MS})`,
    );
    const gsos = (await rig.folder(groupFolder(call), SERVED_USER)).filter((o) => o.includes(GSO_TYPE));
    assert.equal(gsos.length, 1, "one GSO");
  });

  test("BYE-B7 BYE-B9: one device answers the network BYE 200, the other 481 (its dialog already gone): the CF still gets the PF's 200 OK, not the 481; one GSO", async () => {
    const call = await forkedCall(rig, ["Reason: SIP;cause=480"], async () => {}, 100, "481");
    assert.equal(byes(call.client.messages).length, 2, "a BYE to each device");
    const { statuses, devices } = await fanOutStatuses(rig, call.callId);
    assert.deepEqual(statuses, ["200", "481"], `both answered (${devices})`);
    const cfAnswers = call.cf.messages.filter((m) => m.direction === "received" && (m.status ?? 0) >= 200 && cseqOf(m) === "BYE");
    assert.ok(cfAnswers.length >= 1, "the CF's BYE was answered");
    assert.ok(
      cfAnswers.every((m) => m.status === 200),
      `the CF's BYE answered 200 OK by the PF (BYE-B9), never 481 (${cfAnswers.map((m) => m.status)})`,
    );
    const gsos = (await rig.folder(groupFolder(call), SERVED_USER)).filter((o) => o.includes(GSO_TYPE));
    assert.equal(gsos.length, 1, "one GSO");
  });
});
