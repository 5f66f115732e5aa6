// The PF's own subscription to the focus's conference event package (RFC
// 4575, RFC 6665) end to end, from the wire, nothing seeded: SIPp plays the
// Controlling Function (its group chat INVITE, the focus's side of the
// subscription as an out-of-call scenario, its BYE), the served user's
// client and the S-CSCF; MSRP test peers play the CF's and the client's
// MSRP stacks; Kamailio runs the example config; the sidecar runs as a
// process. Every case: the CF's INVITE, anchored -> the client's MSRP
// connection drops -> the CF's message is deferred (the record goes
// client-absent) -> the PF's UA SUBSCRIBEs to the focus through Kamailio.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { triggerSipp } from "../harness/anchored-chat.js";
import { type Chat, DeferredChatRig, GSO_TYPE, groupFolder, SERVED_USER } from "../harness/deferred-chat.js";
import { type OwnerPair, startOwnerPair } from "../harness/delivery-takeover.js";
import { gsoXml } from "../harness/group-chat.js";
import { first, header, type SipTraceMessage, startSipp } from "../harness/sipp.js";
import { waitFor } from "../harness/wait.js";

const T = { timeout: 90_000 };
const NEW_PARTICIPANT = "tel:+16135551213";
const NEW_NAME = "Dave";
const focusKeys = { served_user: SERVED_USER, new_participant: NEW_PARTICIPANT, new_name: NEW_NAME };

/** The SUBSCRIBEs, NOTIFYs and their answers on the focus's side (the CF SIPp's out-of-call trace). */
const ofSubscription = (cf: readonly SipTraceMessage[]) => cf.filter((m) => /^\d+ (SUBSCRIBE|NOTIFY)$/.test(header(m, "cseq") ?? ""));
/** The SUBSCRIBEs the focus got. */
const subscribesAt = (chat: Chat): SipTraceMessage[] =>
  ofSubscription(chat.trace?.cf ?? []).filter((m) => m.direction === "received" && m.method === "SUBSCRIBE");
/** The chat the CF ends for inactivity (480), the focus's side of the PF's subscription played by `scenario`. */
const endedIdle = (scenario: string) => ({
  byeHeaders: ['Reason: SIP;cause=480;text="Temporarily Unavailable"'],
  focusOutOfCall: { scenario, keys: focusKeys },
});
/** BYE-B4: the one GSO the CF's BYE stored for the chat, as XML. */
async function theGso(rig: DeferredChatRig, chat: Chat): Promise<string> {
  const gsos = await rig.folder(groupFolder(chat), chat.servedUser);
  assert.equal(gsos.length, 1, "one GSO");
  return gsoXml(gsos[0] as string);
}

describe("the PF's own conference event subscription (RFC 4575, RFC 6665) from the wire", () => {
  let rig: DeferredChatRig;

  before(async () => {
    // the PF's own subscription is on by default (delivery.conferenceSubscriptionExpires 3600); the rig turns it off for the other cases
    rig = await DeferredChatRig.start({ CPM_PF__DELIVERY__RETRYATTEMPTS: "0", CPM_PF__DELIVERY__CONFERENCESUBSCRIPTIONEXPIRES: "3600" });
  });
  after(async () => {
    await rig?.stop();
  });

  const hasApplied = (callId: string) =>
    rig.sidecar.logLines().some((l) => l.msg === "participants from the PF's conference subscription applied" && l.groupCallId === callId);
  /** Waits for `what`; on a timeout the sidecar's subscription log lines go into the error. */
  const until = async (check: () => boolean, what: string, ms = 8000) => {
    try {
      await waitFor(check, ms, 20, what);
    } catch (err) {
      const lines = rig.sidecar
        .logLines()
        .filter((l) => /conference|SUBSCRIBE|NOTIFY|subscription|DD-8|BYE|lifecycle/i.test(String(l.msg)))
        .map((l) => JSON.stringify({ ...l, timestamp: undefined }));
      const kamailio = rig.kamailio
        .logs()
        .split("\n")
        .filter((l) => /ERROR|WARN|cpm-pf/.test(l));
      throw new Error(`${(err as Error).message}; sidecar:\n${lines.slice(-20).join("\n")}\nkamailio:\n${kamailio.slice(-10).join("\n")}`);
    }
  };

  test(
    "DD-11 DD-2 BYE-B4: the client is away -> the PF SUBSCRIBEs to the focus for the served user (Event: conference, Accept, Expires 3600) through Kamailio; the focus's NOTIFY comes BEFORE its 200 (RFC 6665 4.1.2.4) and adds a participant; the GSO the CF's BYE cause=480 stores, the delivery INVITE's resource list and the delivery's GSO carry him",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["while Dave joins"], {
        ...endedIdle("dd-11-pf-subscription.xml"),
        whileDeferred: async (c) => {
          await until(() => hasApplied(c.callId), "the NOTIFY's participants applied to the record");
        },
      });
      const sub = ofSubscription(chat.trace?.cf ?? []);
      const subscribe = first(sub, { direction: "received", method: "SUBSCRIBE" });
      assert.ok(subscribe, `the focus got the PF's SUBSCRIBE: ${sub.map((m) => m.method ?? m.status).join(",")}`);
      assert.equal(header(subscribe, "event"), "conference");
      assert.equal(header(subscribe, "accept"), "application/conference-info+xml");
      assert.equal(header(subscribe, "expires"), "3600");
      assert.match(header(subscribe, "from") ?? "", /^<tel:\+16135551200>;tag=/, "for the served user");
      assert.match(header(subscribe, "to") ?? "", /^<sip:focus@127\.0\.0\.1:\d+>$/, "to the focus URI");
      assert.match(header(subscribe, "record-route") ?? "", /;cpmpfdd=/, "through Kamailio's route[CPM_PF_UA]");
      const notifySent = sub.findIndex((m) => m.direction === "sent" && m.method === "NOTIFY");
      const okSent = sub.findIndex((m) => m.direction === "sent" && m.status === 200 && /SUBSCRIBE$/.test(header(m, "cseq") ?? ""));
      assert.ok(
        notifySent >= 0 && okSent > notifySent,
        `the NOTIFY went before the 200 to the SUBSCRIBE: ${sub.map((m) => `${m.direction} ${m.method ?? m.status} ${header(m, "cseq")}`).join(", ")}`,
      );
      assert.ok(first(sub, { direction: "received", status: 200, cseqMethod: "NOTIFY" }), "the PF answered the NOTIFY 200");
      // BYE-B4: the GSO of the latest participants, Dave among them
      const gso = await theGso(rig, chat);
      assert.match(gso, /comm-addr="tel:\+16135551213"/, "DD-11: the participant the NOTIFY added is in the stored GSO");
      assert.match(gso, /comm-addr="tel:\+16135551210"/);
      // the group ended at the CF: the PF stops refreshing, no unsubscribe of its own
      assert.equal(sub.filter((m) => m.direction === "received" && m.method === "SUBSCRIBE").length, 1);
      await rig.deliveredTo(
        chat,
        "client-dd-uas.xml",
        { bye_reason: 'SIP;cause=200;text="Call completed"' },
        async ({ peer, client, invite }) => {
          assert.match(invite.body, /<entry uri="tel:\+16135551213"/, "DD-2: the latest participants, from the PF's subscription");
          const got = await rig.received(peer, chat.sent.length + 1, chat);
          const final = got[chat.sent.length] as { contentType: string; body: Uint8Array };
          assert.equal(final.contentType, GSO_TYPE);
          assert.match(Buffer.from(final.body).toString("utf8"), /comm-addr="tel:\+16135551213"/, "DD-11: the delivery's GSO");
          await triggerSipp(client.port, header(invite, "call-id") ?? "");
          assert.equal((await client.done).code, 0);
        },
      );
    },
  );

  test(
    "DD-8 ii b DD-11: the focus's first NOTIFY is garbage (answered 200, logged, nothing applied), the next one applied; the client declines (603) while the group is still active -> after its BYE to the focus the PF ends its own conference subscription with an in-dialog SUBSCRIBE Expires: 0 and answers the terminating NOTIFY 200",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["declined, subscription ends"], {
        focusOutOfCall: { scenario: "dd-8-pf-unsubscribe.xml", keys: focusKeys },
        whileDeferred: async (c) => {
          await until(() => hasApplied(c.callId), "the NOTIFY's participants applied");
          const client = await startSipp({ scenario: "dd-8-client-declines.xml", extraArgs: ["-m", "2"] });
          try {
            const reg = await rig.register(`<sip:client@127.0.0.1:${client.port}>`, c.servedUser);
            assert.equal(reg.code, 0);
            await rig.receivedInvite(client, c);
          } finally {
            await client.stop();
          }
          await until(
            () => rig.sidecar.logLines().some((l) => l.msg === "conference subscription of the PF's ended" && l.groupCallId === c.callId),
            "the subscription ended",
          );
          await new Promise((r) => setTimeout(r, 200));
        },
      });
      const cf = chat.trace?.cf ?? [];
      const sub = ofSubscription(cf);
      const subscribes = sub.filter((m) => m.direction === "received" && m.method === "SUBSCRIBE");
      assert.equal(subscribes.length, 2, `the SUBSCRIBE and the unsubscribe: ${sub.map((m) => m.method ?? m.status).join(",")}`);
      const [initial, unsub] = subscribes as [SipTraceMessage, SipTraceMessage];
      assert.equal(header(unsub, "expires"), "0", "DD-8 ii b: Expires: 0 (RFC 6665 4.1.2.3)");
      assert.equal(header(unsub, "call-id"), header(initial, "call-id"), "on the subscription's dialog");
      assert.match(header(unsub, "to") ?? "", /;tag=/, "in-dialog: the focus's tag");
      assert.match(header(unsub, "cseq") ?? "", /^2 SUBSCRIBE$/);
      const bye = cf.find((m) => m.direction === "received" && m.method === "BYE");
      assert.ok(bye, "the focus got the PF's BYE (DD-8 ii a)");
      assert.ok(bye.time <= unsub.time, "a) the BYE, then b) the unsubscribe");
      const terminated = sub.find((m) => m.direction === "sent" && /^terminated/.test(header(m, "subscription-state") ?? ""));
      assert.ok(terminated, "the focus's terminating NOTIFY");
      assert.ok(
        sub.some((m) => m.direction === "received" && m.status === 200 && header(m, "cseq") === "3 NOTIFY"),
        "answered 200 by the PF",
      );
      // bad input: the first NOTIFY's body is no XML: answered 200 (RFC 6665 4.2.2: an error would end the subscription), nothing applied, logged
      assert.ok(sub.some((m) => m.direction === "received" && m.status === 200 && header(m, "cseq") === "1 NOTIFY"));
      const garbage = rig.sidecar
        .logLines()
        .find(
          (l) =>
            l.msg === "NOTIFY of the PF's conference subscription without usable conference-info: answered 200, nothing applied" &&
            l.groupCallId === chat.callId,
        );
      assert.ok(garbage, "the garbage NOTIFY logged");
    },
  );

  test(
    "DD-11 BYE-B4: the sidecar is SIGKILLed while the client is away and restarted: it SUBSCRIBEs to the focus again (its subscriptions were its memory) and takes the focus's NOTIFY on the new dialog; the GSO the CF's BYE stores carries the participant who joined",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["across the restart"], {
        ...endedIdle("dd-11-pf-subscription.xml"),
        whileDeferred: async (c) => {
          await until(() => hasApplied(c.callId), "the first subscription's NOTIFY applied");
          await rig.crashAndRestart();
          // the record has the participant already: the new subscription's NOTIFY is taken, nothing new to apply
          await until(
            () => rig.sidecar.logLines().some((l) => l.msg === "conference NOTIFY on the PF's subscription" && l.groupCallId === c.callId),
            "the restarted sidecar's subscription got the focus's NOTIFY",
          );
        },
      });
      const subscribes = subscribesAt(chat);
      assert.equal(subscribes.length, 2, "one SUBSCRIBE before the SIGKILL, one from the restarted sidecar");
      assert.notEqual(
        header(subscribes[0] as SipTraceMessage, "call-id"),
        header(subscribes[1] as SipTraceMessage, "call-id"),
        "a new subscription dialog",
      );
      assert.ok(
        rig.sidecar.logLines().some((l) => l.msg === "conference subscriptions made again for the group sessions whose client is away"),
      );
      assert.match(await theGso(rig, chat), /comm-addr="tel:\+16135551213"/, "DD-11: the participant the new subscription's NOTIFY names");
    },
  );

  test(
    "DD-11 bad input: a NOTIFY for no subscription of the PF's (through Kamailio, on a ;cpmpfdd route) gets 481 and a log line; the sidecar goes on",
    T,
    async () => {
      const r = await startSipp({
        scenario: "dd-11-notify-unknown.xml",
        remote: rig.kamailio.address,
        keys: { ua_port: String(rig.uaPort) },
      });
      const res = await r.done;
      assert.equal(res.code, 0, `SIPp: ${res.errors}\n${res.output}`);
      assert.ok(first(res.messages, { direction: "received", status: 481, cseqMethod: "NOTIFY" }), "481 Subscription Does Not Exist");
      await waitFor(
        () => rig.sidecar.logLines().some((l) => l.msg === "NOTIFY for no conference subscription of the PF's: 481"),
        5000,
        20,
        "the log line",
      );
      assert.equal(rig.sidecar.exited(), false, "no crash");
    },
  );

  test(
    "DD-11 bad input: the focus answers the PF's SUBSCRIBE 489 Bad Event -> logged and counted, not retried (no storm); the record keeps its participants: the CF's BYE stores the GSO as before",
    T,
    async () => {
      const chat = await rig.chatWhileAway(["no conference package"], {
        ...endedIdle("dd-11-focus-489.xml"),
        whileDeferred: async (c) => {
          await waitFor(
            () => rig.sidecar.logLines().some((l) => l.msg === "conference SUBSCRIBE failed" && l.groupCallId === c.callId),
            8000,
            20,
            "the failure logged",
          );
          await new Promise((r) => setTimeout(r, 500));
        },
      });
      const failed = rig.sidecar.logLines().find((l) => l.msg === "conference SUBSCRIBE failed" && l.groupCallId === chat.callId);
      assert.equal(failed?.status, 489);
      assert.equal(failed?.retry, false, "489: the focus has no conference package: not retried");
      const subscribes = subscribesAt(chat);
      assert.equal(subscribes.length, 1, "one SUBSCRIBE only");
      const gso = await theGso(rig, chat);
      assert.match(gso, /comm-addr="tel:\+16135551210"/, "the INVITE's participants, nothing lost");
      assert.doesNotMatch(gso, /tel:\+16135551213/);
    },
  );
});

describe("DD-12 MAY (delivery.unsubscribeOnRejoin): the PF ends its own conference subscription once the delivery session joined the group", () => {
  let rig: DeferredChatRig;
  before(async () => {
    rig = await DeferredChatRig.start({
      CPM_PF__DELIVERY__CONFERENCESUBSCRIPTIONEXPIRES: "3600",
      CPM_PF__DELIVERY__UNSUBSCRIBEONREJOIN: "true",
    });
  });
  after(async () => {
    await rig?.stop();
  });

  test(
    "DD-12 DD-11: the client registers while the group goes on: after the deferred items the delivery session is joined and the PF's subscription ends with an in-dialog SUBSCRIBE Expires: 0; the terminating NOTIFY answered 200; no BYE to the focus",
    T,
    async () => {
      const ended = (callId: string) =>
        rig.sidecar.logLines().some((l) => l.msg === "conference subscription of the PF's ended" && l.groupCallId === callId);
      const chat = await rig.chatWhileAway(["joined, subscription ends"], {
        byeHeaders: ["Reason: SIP;cause=480"],
        focusOutOfCall: { scenario: "dd-8-pf-unsubscribe.xml", keys: focusKeys },
        whileDeferred: async (c) => {
          await waitFor(
            () =>
              rig.sidecar
                .logLines()
                .some((l) => l.msg === "participants from the PF's conference subscription applied" && l.groupCallId === c.callId),
            8000,
            20,
            "the NOTIFY's participants applied",
          );
          await rig.deliveredTo(c, "client-uas-msrp.xml", {}, async ({ peer: ue, client }) => {
            await rig.received(ue, c.sent.length + 1, c);
            await waitFor(
              () => rig.logged("delivery session joined with the on-going group session (DD-12)", c.callId) !== undefined,
              5000,
              20,
              "the join",
            );
            await waitFor(() => ended(c.callId), 8000, 20, "the subscription ended");
            // the group goes on: the CF ends it later, the joined session gets its BYE
            await triggerSipp(c.cfSipPort as number, c.callId, 0);
            assert.equal((await client.done).code, 0);
            await waitFor(() => rig.logged("BYE completed", c.callId) !== undefined, 5000, 20, "the CF's 200 OK");
            await new Promise((r) => setTimeout(r, 200));
          });
        },
      });
      const cf = chat.trace?.cf ?? [];
      const sub = ofSubscription(cf);
      const subscribes = sub.filter((m) => m.direction === "received" && m.method === "SUBSCRIBE");
      assert.equal(subscribes.length, 2, `the SUBSCRIBE and the unsubscribe: ${sub.map((m) => m.method ?? m.status).join(",")}`);
      assert.equal(header(subscribes[1] as SipTraceMessage, "expires"), "0", "Expires: 0 (RFC 6665 4.1.2.3)");
      assert.equal(header(subscribes[1] as SipTraceMessage, "call-id"), header(subscribes[0] as SipTraceMessage, "call-id"), "in-dialog");
      assert.ok(
        sub.some((m) => m.direction === "received" && m.status === 200 && header(m, "cseq") === "3 NOTIFY"),
        "the terminating NOTIFY answered 200",
      );
      const byeFromPf = cf.filter((m) => m.direction === "received" && m.method === "BYE");
      assert.deepEqual(byeFromPf, [], "the user stays in the group: no BYE to the focus");
    },
  );
});

describe("scale-out DD-11: the PF's conference subscription is the live work of the served user's slot holder", () => {
  let pair: OwnerPair | undefined;
  before(async () => {
    pair = await startOwnerPair({ slots: 16, leaseTtlMs: 1500, env: { CPM_PF__DELIVERY__CONFERENCESUBSCRIPTIONEXPIRES: "3600" } });
  });
  after(async () => {
    await pair?.stop();
  });

  const subscribed = (rig: DeferredChatRig, callId: string) =>
    rig.sidecar.logLines().some((l) => l.msg === "conference SUBSCRIBE to the focus for the served user" && l.groupCallId === callId);

  test(
    "scale-out DD-11 BYE-B4: A anchors the chat and, holding the served user's slot, subscribes when the client goes; A is SIGKILLed: B takes the lapsed slot and subscribes anew (no REGISTER, no client), takes the focus's NOTIFY; the CF's BYE, decided by B, stores the GSO with the participant who joined",
    T,
    async () => {
      const { a, b } = pair as OwnerPair;
      const chat = await a.chatWhileAway(["while A dies"], {
        ...endedIdle("dd-11-pf-subscription.xml"),
        whileDeferred: async (c) => {
          await waitFor(() => subscribed(a, c.callId), 8000, 20, "A's SUBSCRIBE");
          assert.equal(subscribed(b, c.callId), false, "B, not holding the slot, keeps no subscription");
          await a.sidecar.kill("SIGKILL");
          await waitFor(() => subscribed(b, c.callId), 10_000, 20, "B's SUBSCRIBE once A's lease lapsed");
          await waitFor(
            () => b.sidecar.logLines().some((l) => l.msg === "conference NOTIFY on the PF's subscription" && l.groupCallId === c.callId),
            8000,
            20,
            "the focus's NOTIFY at B",
          );
        },
      });
      const subscribes = subscribesAt(chat);
      assert.equal(subscribes.length, 2, "A's SUBSCRIBE, then B's");
      assert.notEqual(header(subscribes[0] as SipTraceMessage, "call-id"), header(subscribes[1] as SipTraceMessage, "call-id"));
      assert.match(await theGso(b, chat), /comm-addr="tel:\+16135551213"/, "DD-11: the participant the focus's NOTIFY named");
    },
  );
});
