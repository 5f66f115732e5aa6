// RFC 3261 18.1.1 on the PF's own SIP UA, from the wire, nothing seeded:
// a big group (the CF's INVITE names 72 more participants) makes a ~10 KB
// delivery INVITE (DD-2: the participants of the CF's INVITE). The sidecar
// runs its default sip.transport (auto), Kamailio listens on UDP and TCP and
// sends the client's requests to the UA over TCP (CPM_PF_UA_ADDRESS with
// ;transport=tcp); SIPp plays the CF, the client (first over UDP, then, for
// the delivery, over TCP with a ;transport=tcp contact) and the S-CSCF.
// Then Kamailio's WITH_UDP_MTU_TCP switch (udp_mtu, udp_mtu_try_proto) on
// the hop to the client, and why it is off by default.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { triggerSipp } from "../harness/anchored-chat.js";
import { DeferredChatRig, deferredFolder, GSO_TYPE } from "../harness/deferred-chat.js";
import { type KamailioInstance, startKamailio } from "../harness/kamailio.js";
import { freePort } from "../harness/ports.js";
import { scrape, value } from "../harness/prometheus.js";
import { first, header, type SipTraceMessage, startSipp } from "../harness/sipp.js";
import { waitFor } from "../harness/wait.js";

const T = { timeout: 90_000 };

const vias = (m: SipTraceMessage | undefined): string[] => m?.headers.get("via") ?? [];

/** Kamailio's TCP connections (kamcmd core.tcp_list: one "{ key: value ... }" block each), as the ports at both ends. */
async function kamailioTcpPorts(kamailio: KamailioInstance): Promise<number[][]> {
  const out = await kamailio.kamcmd("core.tcp_list");
  return out
    .split("}")
    .map((block) => [/src_port: (\d+)/.exec(block)?.[1], /dst_port: (\d+)/.exec(block)?.[1]].filter((p) => p !== undefined).map(Number))
    .filter((ports) => ports.length === 2);
}

/** A big group: 72 participants besides the CF's three, IMS public identities with display names. */
const PARTICIPANTS = Array.from({ length: 72 }, (_, i) => ({
  uri: `sip:+1613555${String(3000 + i)}@ims.mnc001.mcc302.3gppnetwork.org`,
  displayName: `Participant ${i + 1}`,
}));

describe("DD-2 RFC 3261 18.1.1: the PF's SIP UA sends a large delivery INVITE over TCP (sip.transport auto), from the wire", () => {
  let rig: DeferredChatRig;
  let metricsUrl = "";
  let uaPort = 0;

  before(async () => {
    const metricsPort = await freePort();
    metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
    rig = await DeferredChatRig.start(
      {
        CPM_PF__SIP__TRANSPORT: "auto", // the default, which the rig pins to udp otherwise
        CPM_PF__METRICS__ENABLED: "true",
        CPM_PF__METRICS__PORT: String(metricsPort),
      },
      undefined,
      { uaAddressTransport: "tcp" },
    );
    uaPort = rig.uaPort;
  });
  after(async () => {
    await rig?.stop();
  });

  test(
    "DD-2 RFC 3261 18.1.1: a group of 75 participants: the CF's INVITE anchored, the client gone, the CF's messages kept, the CF's BYE, the REGISTER; the ~10 KB delivery INVITE goes from the UA to Kamailio over TCP and on to the client's TCP contact, every participant in it; the client's BYE reaches the UA over TCP and is answered",
    T,
    async (t) => {
      const metric = async (name: string, labels: Record<string, string>) => value((await scrape(metricsUrl)).samples, name, labels);
      const chat = await rig.chatWhileAway(["to the big group 1", "to the big group 2"], {
        byeHeaders: ['Reason: SIP;cause=480;text="Temporarily Unavailable"'],
        moreParticipants: PARTICIPANTS,
      });
      // the first leg: the CF's INVITE as large, relayed by Kamailio to the client's UDP contact (example cfg default)
      const firstLeg = first(chat.trace?.client ?? [], { direction: "received", method: "INVITE" });
      assert.ok(firstLeg);
      assert.equal(firstLeg.transport, "UDP");
      assert.ok(Number(header(firstLeg, "content-length")) > 9000, "the CF's INVITE is large too");
      assert.equal(await metric("cpmpf_sip_requests_total", { transport: "tcp", method: "INVITE" }), 0, "nothing sent by the UA yet");

      await rig.deliveredTo(
        chat,
        "dd-2-delivery-invite-tcp.xml",
        { bye_reason: 'SIP;cause=200;text="Call completed"' },
        async ({ peer: ue, client, invite }) => {
          // Kamailio -> client over TCP (the registered contact says ;transport=tcp)
          assert.equal(invite.transport, "TCP");
          const length = Number(header(invite, "content-length"));
          assert.ok(length >= 9000, `Content-Length ${length}`);
          t.diagnostic(`delivery INVITE at the client: ${Buffer.byteLength(invite.text)} bytes, Content-Length ${length}`);
          for (const p of [PARTICIPANTS[0], PARTICIPANTS[71]]) assert.ok(invite.body.includes(`uri="${p?.uri}"`), `DD-2: ${p?.uri}`);
          // UA -> Kamailio over TCP: the UA's Via says TCP and its own port; Kamailio's rport= is the UA's connection's port
          const [kamailioVia = "", ua = ""] = vias(invite);
          assert.match(kamailioVia, /^SIP\/2\.0\/TCP 127\.0\.0\.1:\d+;branch=z9hG4bK/, "Kamailio's hop to the client");
          assert.match(ua, new RegExp(`^SIP/2\\.0/TCP 127\\.0\\.0\\.1:${uaPort};.*branch=z9hG4bK[0-9a-f]+`), "the UA's Via");
          const uaVia = /;rport=(\d+)/.exec(ua);
          assert.ok(uaVia, `Kamailio's rport= in the UA's Via: ${ua}`);
          assert.notEqual(
            Number(uaVia[1]),
            uaPort,
            "sent on a connection the UA opened (an ephemeral port), not as a datagram from its port",
          );
          const uaConnectionPort = Number(uaVia[1]);
          assert.ok(
            (await kamailioTcpPorts(rig.kamailio)).some((ports) => ports.includes(uaConnectionPort)),
            "Kamailio holds that connection (kamcmd core.tcp_list)",
          );
          assert.equal(await metric("cpmpf_sip_requests_total", { transport: "tcp", method: "INVITE" }), 1);
          assert.equal(await metric("cpmpf_sip_requests_total", { transport: "udp", method: "INVITE" }), 0);
          // the delivery itself, over MSRP as ever
          const got = await rig.received(ue, chat.sent.length + 1, chat);
          assert.deepEqual(
            got.slice(0, chat.sent.length).map((m) => Buffer.from(m.body).toString("utf8")),
            chat.sent.map((s) => s.body.toString("utf8")),
          );
          assert.equal(got[chat.sent.length]?.contentType, GSO_TYPE);
          await waitFor(async () => (await rig.folder(deferredFolder(chat), chat.servedUser)).length === 0, 5000, 50, "queue emptied");
          // the client's BYE: client -> Kamailio over TCP -> the UA over TCP (CPM_PF_UA_ADDRESS ;transport=tcp) -> 200 back
          await triggerSipp(client.port, header(invite, "call-id") ?? "", 0, "tcp");
          const r = await client.done;
          assert.equal(r.code, 0, `client SIPp: ${r.errors}\n${r.output}`);
          const byeOk = first(r.messages, { direction: "received", status: 200, cseqMethod: "BYE" });
          assert.equal(byeOk?.transport, "TCP");
          assert.ok(
            (await kamailioTcpPorts(rig.kamailio)).some((ports) => ports.includes(uaPort)),
            "Kamailio opened a connection to the UA's port (kamcmd core.tcp_list)",
          );
          // the 2xx's ACK pinned to the INVITE's transport; nothing refused
          assert.equal(await metric("cpmpf_sip_requests_total", { transport: "tcp", method: "ACK" }), 1);
          assert.equal(await metric("cpmpf_sip_refused_total", { transport: "tcp" }), 0);
        },
        undefined,
        "tcp",
      );
    },
  );
});

describe("Kamailio WITH_UDP_MTU_TCP (RFC 3261 18.1.1 on the hop Kamailio relays to): a large INVITE bound for a UDP contact goes over TCP", () => {
  let kamailio: KamailioInstance;
  before(async () => {
    // no sidecar: ObserveSession fails at once and the fail-safe relays the INVITE unchanged
    kamailio = await startKamailio({ grpcTarget: "unix:/nonexistent/cpm-pf.sock", deadlineMs: 100, defines: ["WITH_UDP_MTU_TCP"] });
  });
  after(async () => {
    await kamailio?.stop();
  });

  /** The CF's INVITE of a big group to a SIPp client (over `transport`); what the client and the CF saw. */
  async function bigInvite(transport: "udp" | "tcp") {
    const client = await startSipp({
      scenario: "client-uas-msrp.xml",
      keys: { client_msrp_port: "9", client_msrp_path: "msrp://127.0.0.1:9/ue1;tcp", contact_params: "" },
      timeoutS: 5,
      transport,
    });
    try {
      const cf = await startSipp({
        scenario: "cf-invite-msrp.xml",
        remote: kamailio.address,
        timeoutS: 5,
        keys: {
          client_port: String(client.port),
          conversation_id: "conv-big",
          contribution_id: "contrib-big",
          cf_msrp_port: "7394",
          cf_msrp_path: "msrp://127.0.0.1:7394/cf1;tcp",
          cf_setup: "actpass",
          bye_headers: "",
          served_user: "tel:+16135551200",
          more_participants: PARTICIPANTS.map(
            (p) => `\r\n<entry uri="${p.uri}"><display-name>${p.displayName}</display-name></entry>`,
          ).join(""),
        },
      });
      // the CF's SIPp exits on an error answer (its trace goes with it) or waits for its BYE trigger
      let exited = false;
      void cf.done.then(() => {
        exited = true;
      });
      await waitFor(
        async () => exited || (await cf.messagesSoFar()).some((m) => m.direction === "received" && (m.status ?? 0) >= 200),
        5000,
        20,
        "a final response at the CF",
      );
      return { cf: await cf.stop(), client: await client.stop() };
    } finally {
      await client.stop();
    }
  }

  test(
    "RFC 3261 18.1.1: with WITH_UDP_MTU_TCP the ~10 KB INVITE to a contact without ;transport reaches a client listening on TCP over TCP",
    T,
    async () => {
      const { client, cf } = await bigInvite("tcp");
      const invite = first(client.messages, { direction: "received", method: "INVITE" });
      assert.equal(invite?.transport, "TCP");
      assert.match(vias(invite)[0] ?? "", /^SIP\/2\.0\/TCP /, "Kamailio's Via says TCP");
      assert.ok(first(cf.messages, { direction: "received", status: 200, cseqMethod: "INVITE" }), "the CF got the client's 200");
    },
  );

  test(
    "RFC 3261 18.1.1: why WITH_UDP_MTU_TCP is off by default: a client that listens on UDP only gets nothing, the CF an error (Kamailio does not retry over UDP)",
    T,
    async () => {
      const { client, cf } = await bigInvite("udp");
      assert.equal(first(client.messages, { direction: "received", method: "INVITE" }), undefined);
      const final = cf.messages.find((m) => m.direction === "received" && (m.status ?? 0) >= 200);
      // the plugin's relay answers 500 "Relay Failed"; the example cfg's own route[RELAY] a 477
      assert.ok((final?.status ?? 0) >= 500, `the CF got ${final?.status}`);
      assert.match(kamailio.logs(), /connect 127\.0\.0\.1:\d+ failed \(RST\) Connection refused/);
    },
  );
});
