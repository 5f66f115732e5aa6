// DD-13 / RJ-3 / RJ-4 end to end, from the wire, nothing seeded: the re-start
// of a long-lived group session via the CONFERENCE FACTORY when its focus is
// gone. As in deferred-delivery.test.ts: SIPp plays the CF (its group chat
// INVITE, later its BYE cause=480: inactive), the client goes away, the CF's
// messages are deferred, the S-CSCF's REGISTER starts the delivery, the
// client sends in the delivery session; then the old focus (the CF SIPp's
// port, lastfocussessionid) answers the PF's 8.2.2.7 re-join 404 and a
// second SIPp on its own port plays the conference factory
// (delivery.conferenceFactoryUri: the CF created this group, so the record
// has no factory URI of its own).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { MsrpRequest } from "../../src/msrp/frame.js";
import { bodyParts } from "../../src/sip/multipart.js";
import { parseResourceLists } from "../../src/xml/resource-lists.js";
import { chatCpim } from "../fixtures/cpim.js";
import { msrpMedia, triggerSipp } from "../harness/anchored-chat.js";
import { DeferredChatRig, GSO_TYPE, groupFolder, SERVED_USER } from "../harness/deferred-chat.js";
import { gsoXml } from "../harness/group-chat.js";
import { freePort } from "../harness/ports.js";
import { header, type SipTraceMessage } from "../harness/sipp.js";
import { waitFor } from "../harness/wait.js";

const ICSI_TAG = /g\.3gpp\.icsi-ref="urn%3Aurn-7%3A3gpp-service\.ims\.icsi\.oma\.cpm\.session"/;
/** Each test: a hung wait fails it instead of the whole run. */
const T = { timeout: 90_000 };

describe("DD-13 / RJ-3: re-start via the conference factory when the focus is gone, from the wire", () => {
  let rig: DeferredChatRig;
  let factoryPort = 0;
  let factoryUri = "";

  before(async () => {
    factoryPort = await freePort();
    factoryUri = `sip:factory@127.0.0.1:${factoryPort}`;
    rig = await DeferredChatRig.start({ CPM_PF__DELIVERY__CONFERENCEFACTORYURI: factoryUri });
  });
  after(async () => {
    await rig?.stop();
  });

  /** The CF's group chat (the served user among its resource list's entries), kept while the client is away, ended inactive (480). */
  const inactiveChat = (text: string) =>
    rig.chatWhileAway([text], { byeHeaders: ["Reason: SIP;cause=480"], moreParticipants: [{ uri: SERVED_USER, displayName: "" }] });

  test(
    "DD-13 RJ-3 RJ-5: the focus answers the re-join 404 -> the PF INVITEs the conference factory (same Conversation-ID and Contribution-ID, CPM feature tags, its MSRP offer, the participants but the served user in a recipient-list part); the factory's 2xx names a new focus: the held message reaches the factory-side MSRP peer, the client gets a GSO with the new lastfocussessionid, live chat both ways; the new focus's BYE stores a GSO naming it",
    T,
    async () => {
      const chat = await inactiveChat("before the focus went");
      const cf = await rig.peer("CF (new focus)");
      const oldFocus = await rig.cfUas("rj-3-focus-refuses.xml", chat.cfSipPort as number);
      const factory = await rig.cfUas("dd-13-factory-restart.xml", factoryPort, cf);
      const newFocus = `sip:conf-new@127.0.0.1:${factoryPort}`;
      try {
        await rig.deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue, client }) => {
          await rig.received(ue, chat.sent.length + 1, chat); // the deferred item, the GSO (DD-11)
          const held = chatCpim("the focus is gone, still here", "imdn-factory", SERVED_USER);
          assert.equal((await ue.send(held, "message/cpim")).code, 200);
          const rejoin = await rig.inviteAt(oldFocus, "the re-join INVITE at the old focus");
          assert.match(rejoin.text.split("\r\n")[0] ?? "", new RegExp(`^INVITE sip:focus@127\\.0\\.0\\.1:${chat.cfSipPort} SIP/2\\.0`));
          const inv: SipTraceMessage = await rig.inviteAt(factory, "the re-start INVITE at the conference factory");
          assert.match(inv.text.split("\r\n")[0] ?? "", new RegExp(`^INVITE ${factoryUri} SIP/2\\.0`));
          assert.equal(header(inv, "conversation-id"), chat.conversationId);
          assert.equal(header(inv, "contribution-id"), chat.contributionId);
          assert.match(header(inv, "accept-contact") ?? "", ICSI_TAG);
          assert.match(header(inv, "contact") ?? "", ICSI_TAG);
          assert.equal(header(inv, "p-asserted-identity"), `<${SERVED_USER}>`);
          assert.equal(header(inv, "require"), "recipient-list-invite");
          const parts = bodyParts(header(inv, "content-type"), Buffer.from(inv.body));
          assert.deepEqual(
            parts.map((p) => p.contentType),
            ["application/sdp", "application/resource-lists+xml"],
          );
          assert.equal(parts[1]?.headers.get("content-disposition"), "recipient-list");
          assert.deepEqual(
            parseResourceLists(parts[1]?.body ?? "").map((e) => e.uri),
            ["tel:+16135551210", "tel:+16135551211", "tel:+16135551212"],
            "RFC 5366: every known participant, the served user left out",
          );
          // the PF's CF-facing MSRP offer: the factory's peer connects to it
          await cf.open(msrpMedia(parts[0]?.body.toString("utf8") ?? "").path, "active");
          const atCf = await rig.received(cf, 1, chat);
          assert.equal(Buffer.from(atCf[0]?.body ?? []).toString("utf8"), held.toString("utf8"), "the held message, at the new focus");
          await rig.lifecycleMoved(chat, "inactive -> active");
          // the client learns the new focus (GSO lastfocussessionid)
          const [gso] = (await rig.received(ue, chat.sent.length + 2, chat)).slice(-1);
          assert.equal(gso?.contentType, GSO_TYPE);
          assert.match(Buffer.from(gso?.body ?? []).toString("utf8"), new RegExp(`lastfocussessionid="${newFocus}"`));
          const live = chatCpim("welcome back via the factory", "imdn-welcome-factory");
          assert.equal((await cf.send(live, "message/cpim")).code, 200);
          const atUe = await rig.received(ue, chat.sent.length + 3, chat);
          assert.equal(Buffer.from(atUe.at(-1)?.body ?? []).toString("utf8"), live.toString("utf8"));
          // 8.3.2.3 2.b.iii on the re-started dialog: its GSO names the new focus (the record's)
          const stored = (await rig.folder(groupFolder(chat))).length;
          await triggerSipp(factoryPort, header(inv, "call-id") ?? "", 0);
          const r = await client.done;
          assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
          assert.ok(
            r.messages.some((m) => m.direction === "received" && m.method === "BYE"),
            "the delivery session got the PF's BYE",
          );
          await waitFor(async () => (await rig.folder(groupFolder(chat))).length > stored, 5000, 50, "the GSO of the new focus's BYE");
          const latest = gsoXml((await rig.folder(groupFolder(chat))).at(-1) ?? "");
          assert.match(latest, new RegExp(`lastfocussessionid="${newFocus}"`));
        });
        assert.equal((await oldFocus.done).code, 0, "old focus SIPp");
        const f = await factory.done;
        assert.equal(f.code, 0, `factory SIPp: ${f.errors}`);
        assert.ok(
          rig.sidecar.logLines().some((l) => l.msg === "group session focus changed by the re-start (DD-13)" && l.focus === newFocus),
        );
      } finally {
        await oldFocus.stop();
        await factory.stop();
      }
    },
  );

  test(
    "DD-13 RJ-3 RJ-4: the focus answers 404 and the conference factory refuses too (403) -> the client gets the failure REPORT for its SEND, then BYE with the factory's cause (403)",
    T,
    async () => {
      const chat = await inactiveChat("before both refused");
      const oldFocus = await rig.cfUas("rj-3-focus-refuses.xml", chat.cfSipPort as number);
      const factory = await rig.cfUas("dd-13-factory-refuses.xml", factoryPort);
      try {
        await rig.deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue, client }) => {
          await rig.received(ue, chat.sent.length + 1, chat);
          const reports: MsrpRequest[] = [];
          ue.session?.on("report", (r) => reports.push(r));
          assert.equal((await ue.send(chatCpim("nobody takes it", "imdn-refused", SERVED_USER), "message/cpim")).code, 200);
          await waitFor(() => reports.length === 1, 8000, 10, "the failure REPORT");
          assert.equal(reports[0]?.status?.code, 403, "RJ-4: not delivered downstream");
          const r = await client.done;
          assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
          const bye = r.messages.find((m) => m.direction === "received" && m.method === "BYE");
          assert.equal(header(bye as SipTraceMessage, "reason"), 'SIP;cause=403;text="Forbidden"', "RJ-3: the factory's code");
        });
        assert.ok(await rig.inviteAt(oldFocus, "the re-join INVITE at the old focus"));
        const f = await factory.done;
        assert.equal(f.code, 0, `factory SIPp: ${f.errors}`);
        assert.ok(
          f.messages.some((m) => m.direction === "received" && m.method === "INVITE"),
          "the factory got the PF's INVITE",
        );
      } finally {
        await oldFocus.stop();
        await factory.stop();
      }
    },
  );

  test(
    "DD-13 RJ-3 RJ-4 bad input: the conference factory answers 200 naming no focus (no ;isfocus) -> the PF ends that dialog at once (BYE cause=502), the client's SEND gets a failure REPORT (408), the client BYE cause=502; the record stays inactive",
    T,
    async () => {
      const chat = await inactiveChat("before a broken factory");
      const cf = await rig.peer("CF (broken factory)");
      const oldFocus = await rig.cfUas("rj-3-focus-refuses.xml", chat.cfSipPort as number);
      const factory = await rig.cfUas("dd-13-factory-no-focus.xml", factoryPort, cf);
      try {
        await rig.deliveredTo(chat, "client-uas-msrp.xml", {}, async ({ peer: ue, client }) => {
          await rig.received(ue, chat.sent.length + 1, chat);
          const reports: MsrpRequest[] = [];
          ue.session?.on("report", (r) => reports.push(r));
          assert.equal((await ue.send(chatCpim("into the void", "imdn-void", SERVED_USER), "message/cpim")).code, 200);
          await waitFor(() => reports.length === 1, 8000, 10, "the failure REPORT");
          assert.equal(reports[0]?.status?.code, 408);
          const r = await client.done;
          assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
          const bye = r.messages.find((m) => m.direction === "received" && m.method === "BYE");
          assert.equal(header(bye as SipTraceMessage, "reason"), 'SIP;cause=502;text="Bad Gateway"');
        });
        const f = await factory.done;
        assert.equal(f.code, 0, `factory SIPp: ${f.errors}`);
        const byeAtFactory = f.messages.find((m) => m.direction === "received" && m.method === "BYE");
        assert.equal(header(byeAtFactory as SipTraceMessage, "reason"), 'SIP;cause=502;text="Bad Gateway"');
        const lines = rig.sidecar.logLines();
        assert.ok(
          lines.some((l) => l.msg === "re-start answer unusable" && l.via === "factory" && l.conversationId === chat.conversationId),
        );
        assert.ok(
          !lines.some((l) => l.msg === "group session lifecycle" && l.callId === chat.callId && l.transition === "inactive -> active"),
        );
      } finally {
        await oldFocus.stop();
        await factory.stop();
      }
    },
  );
});
