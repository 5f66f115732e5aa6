// npm run demo: the PF on loopback, one group chat, one BYE from the
// Controlling Function with `Reason: SIP;cause=410` and Referred-By, and what
// happened on the wire and in the Message Store. Everything started here is
// stopped by PID at the end.
import { type DovecotInstance, startDovecot } from "../test/harness/dovecot.js";
import { folderMessages, groupChatCall, storeEnv } from "../test/harness/group-chat.js";
import { type KamailioInstance, startKamailio } from "../test/harness/kamailio.js";
import { type SidecarInstance, startSidecar } from "../test/harness/sidecar.js";
import { header, type SipTraceMessage } from "../test/harness/sipp.js";

function line(m: SipTraceMessage): string {
  return m.method ? `${m.method} ${header(m, "call-id") ?? ""}` : `${m.status} (${header(m, "cseq") ?? ""})`;
}

async function main(): Promise<void> {
  let dovecot: DovecotInstance | undefined;
  let sidecar: SidecarInstance | undefined;
  let kamailio: KamailioInstance | undefined;
  try {
    dovecot = await startDovecot();
    console.log(`Message Store: Dovecot pid ${dovecot.pid} on 127.0.0.1:${dovecot.port} (mailbox ${dovecot.user})`);
    sidecar = await startSidecar(storeEnv(dovecot, "b2bua"));
    console.log(`Sidecar:       pid ${sidecar.pid}, gRPC on ${sidecar.target}, mode b2bua`);
    kamailio = await startKamailio({ grpcTarget: sidecar.target });
    console.log(`Kamailio:      pid ${kamailio.pid}, SIP on udp:${kamailio.address} (kamailio/kamailio.cfg + cpm-pf.cfg)`);

    console.log("\nPlaying: the Controlling Function (SIPp) invites the served user's client (SIPp) to a group chat");
    console.log("with 3 participants, then ends it for good: BYE with Reason: SIP;cause=410 and Referred-By.\n");
    const call = await groupChatCall(kamailio, ['Reason: SIP;cause=410;text="Gone"', "Referred-By: <sip:admin@example.net>"]);
    const t0 = call.t.cfByeSent;
    const show = (who: string, msgs: SipTraceMessage[]) => {
      for (const m of msgs) console.log(`  ${who} ${m.direction === "sent" ? "->" : "<-"} ${line(m)}`);
    };
    console.log("On the wire (Controlling Function side):");
    show("CF    ", call.cf.messages);
    console.log("On the wire (client side):");
    show("client", call.client.messages);
    console.log(`\nThe client got:    Reason: ${header(call.clientBye, "reason")}`);
    console.log(`Timing after the CF's BYE: client got BYE +${(call.t.clientByeReceived - t0).toFixed(1)} ms,`);
    console.log(
      `  client answered 200 +${(call.t.client200Sent - t0).toFixed(1)} ms, CF got its 200 OK +${(call.t.cf200 - t0).toFixed(1)} ms`,
    );

    const folder = `Default/${call.conversationId}/${call.contributionId}`;
    const stored = await folderMessages(dovecot, folder);
    console.log(`\nGroup State Object stored in IMAP folder "${folder}" (${stored.length} object):\n`);
    console.log((stored[0] ?? "(none)").replace(/\r\n/g, "\n"));
    const decision = sidecar.logLines().find((l) => l.msg === "BYE decided");
    if (decision) console.log(`Sidecar decision log: ${JSON.stringify(decision)}`);
  } finally {
    await kamailio?.stop();
    await sidecar?.stop();
    await dovecot?.stop();
  }
}

main().catch((err) => {
  console.error(`demo failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
});
