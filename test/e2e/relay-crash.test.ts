// An anchored relay when the sidecar is SIGKILLed, from the wire: the CF
// invites the served user through Kamailio (media anchored), both MSRP legs
// connect to the sidecar, the CF sends chat messages pipelined (16 SENDs
// outstanding) and the sidecar is SIGKILLed mid-way. What the CF got a 200
// for must have reached the client: the PF answers a relayed SEND once the
// client's own 200 came back (relay-policy.ts), so a crash can leave a
// message unacknowledged, never acknowledged and gone.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { chatCpim } from "../fixtures/cpim.js";
import { anchoredChatCall, msrpMedia } from "../harness/anchored-chat.js";
import { DeferredChatRig, lastLine, SERVED_USER } from "../harness/deferred-chat.js";
import { waitFor } from "../harness/wait.js";

const MESSAGES = 400;
const KILL_AT = 100;
const OUTSTANDING = 16;

describe("scale-out fault case (c), short form: an anchored MSRP relay when the sidecar is SIGKILLed", () => {
  let rig: DeferredChatRig | undefined;
  before(async () => {
    rig = await DeferredChatRig.start();
  });
  after(async () => {
    await rig?.stop();
  });

  test(`MEDIA-RELAY: the CF sends ${MESSAGES} messages through the anchored PF, the sidecar is SIGKILLed after the client got ${KILL_AT}: every SEND the CF got 200 for reached the client, in order, once; 0 acknowledged and lost`, async (t) => {
    const r = rig as DeferredChatRig;
    const cf = await r.peer("CF");
    const ue = await r.peer("client");
    const texts = Array.from({ length: MESSAGES }, (_, i) => `relayed ${i}`);
    const acked: string[] = [];
    let unanswered = 0;
    let played = false;
    await anchoredChatCall(r.kamailio, {
      servedUser: SERVED_USER,
      cfMsrpPath: cf.path,
      cfSetup: "active",
      clientMsrpPath: ue.path,
      byeHeaders: ["Reason: SIP;cause=480"],
      timeoutS: 60,
      during: async ({ callId, clientInvite, cf200 }) => {
        await waitFor(() => r.logged("media answer anchored", callId), 5000, 20, "ReportMediaAnswer");
        await ue.open(msrpMedia(clientInvite.body).path, "active");
        await cf.open(msrpMedia(cf200.body).path, "active");
        let killed: Promise<void> | undefined;
        ue.on("message", () => {
          if (!killed && ue.received.length >= KILL_AT) killed = r.sidecar.kill("SIGKILL");
        });
        // pipelined: OUTSTANDING SENDs at a time, each outcome recorded
        let next = 0;
        const worker = async () => {
          while (next < texts.length) {
            const text = texts[next++] as string;
            const outcome = await cf.send(chatCpim(text, `imdn-relay-${text}`), "message/cpim").then(
              (res) => res.code,
              () => 0,
            );
            if (outcome === 200) acked.push(text);
            else {
              unanswered++;
              if (killed) return;
            }
          }
        };
        await Promise.all(Array.from({ length: OUTSTANDING }, worker));
        await killed;
        // what the client's socket held when the sidecar died is read by now
        await new Promise((res) => setTimeout(res, 300));
        played = true;
      },
      // the CF's BYE meets a dead sidecar (the fail-safe): the call's own outcome is not this case's
    }).catch((err: unknown) => {
      if (!played) throw err;
    });
    const delivered = ue.received.map(lastLine);
    const got = new Set(delivered);
    const lost = acked.filter((x) => !got.has(x)).length;
    t.diagnostic(
      `${MESSAGES} sent by the CF: ${acked.length} acknowledged (200), ${unanswered} not (the kill); the client got ${delivered.length}; acknowledged and lost ${lost}`,
    );
    assert.ok(delivered.length >= KILL_AT && acked.length < MESSAGES, "killed mid-way");
    assert.equal(lost, 0, "every SEND the CF got 200 for reached the client");
    assert.equal(got.size, delivered.length, "nothing reached the client twice");
    assert.deepEqual(delivered, texts.slice(0, delivered.length), "in the CF's order, without a gap");
    await r.restart();
  });
});
