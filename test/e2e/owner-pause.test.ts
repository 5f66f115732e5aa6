// Scale-out split brain, from the wire: the sidecar that owns the served
// user's slot is frozen (SIGSTOP: a GC pause, a starved VM) in the middle of
// a deferred delivery, long enough for its lease to lapse; the device's next
// REGISTER reaches the other sidecar, which takes the slot and delivers; then
// the frozen one runs again (SIGCONT). It must stand down at once, not go on
// sending its read-ahead to the device next to the new owner's delivery.
// Two sidecars on one Redis and one Dovecot, each behind its own Kamailio
// (test/harness/delivery-takeover.ts startOwnerPair).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import { defaults } from "../../src/config/config.js";
import { Keyspace } from "../../src/session/redis/keyspace.js";
import { slotOf } from "../../src/session/redis/slot-leases.js";
import { triggerSipp } from "../harness/anchored-chat.js";
import { deferredFolder, GSO_TYPE, lastLine, SERVED_USER } from "../harness/deferred-chat.js";
import { type OwnerPair, startOwnerPair } from "../harness/delivery-takeover.js";
import { waitFor } from "../harness/wait.js";

const SLOTS = 16;
const LEASE_TTL_MS = 1500;
const MESSAGES = 1200;
const BYE_REASON = { bye_reason: 'SIP;cause=200;text="Call completed"' };

describe("scale-out DD-1 DD-10: the slot's owner frozen past its lease mid-delivery, the other sidecar takes over, the frozen one runs again", () => {
  let pair: OwnerPair | undefined;
  let watch: Redis | undefined;
  before(async () => {
    pair = await startOwnerPair({ slots: SLOTS, leaseTtlMs: LEASE_TTL_MS });
    watch = new Redis(pair.redis.url, { maxRetriesPerRequest: 1 });
  });
  after(async () => {
    await pair?.a.sidecar.kill("SIGCONT");
    watch?.disconnect();
    await pair?.stop();
  });

  test(
    `SIGSTOP of the owner while it delivers ${MESSAGES} messages; the REGISTER through the other sidecar once the lease lapsed: it delivers the rest; SIGCONT: the old owner stops at once (at most its MSRP window more), nothing lost, each delivery in order`,
    { timeout: 120_000 },
    async (t) => {
      const { a, b } = pair as OwnerPair;
      const texts = Array.from({ length: MESSAGES }, (_, i) => `frozen owner ${i}`);
      // the device registers through A first (nothing pending): A takes the user's slot
      assert.equal((await a.register("<sip:earlier@127.0.0.1:9>", SERVED_USER)).code, 0);
      const chat = await a.chatWhileAway(texts, { byeHeaders: ["Reason: SIP;cause=480"] });
      const lease = new Keyspace().lease(slotOf(SERVED_USER, SLOTS));

      let atStop = 0;
      let atResume = 0;
      let fromA: string[] = [];
      let fromB: string[] = [];
      await a.deliveredTo(
        chat,
        "client-dd-uas.xml",
        BYE_REASON,
        async ({ peer: legOfA }) => {
          await a.untilRetiring(legOfA, chat, 60);
          await a.sidecar.kill("SIGSTOP");
          // what A's socket held is read; then A's lease lapses in Redis
          await new Promise((r) => setTimeout(r, 300));
          atStop = legOfA.received.length;
          await waitFor(async () => (await watch?.exists(lease)) === 0, 10_000, 50, "the frozen owner's lease lapses");
          // the device's next REGISTER, through B's Kamailio: B takes the slot and delivers
          await b.deliveredTo(
            chat,
            "client-dd-uas.xml",
            BYE_REASON,
            async ({ peer: legOfB, client, invite }) => {
              await b.received(legOfB, 1, chat);
              atResume = legOfA.received.length;
              await a.sidecar.kill("SIGCONT");
              await waitFor(() => legOfB.received.at(-1)?.contentType === GSO_TYPE, 60_000, 20, "B delivers the rest and the GSO");
              // A runs again meanwhile: its lease timer fires within a third of the TTL; what it sends by then is counted
              await new Promise((r) => setTimeout(r, LEASE_TTL_MS));
              fromB = legOfB.received.slice(0, -1).map(lastLine);
              await triggerSipp(client.port, invite.headers.get("call-id")?.[0] ?? "");
              assert.equal((await client.done).code, 0);
            },
            async (contact) => {
              const reg = await b.register(contact, SERVED_USER);
              assert.equal(reg.code, 0, `S-CSCF SIPp: ${reg.errors}`);
            },
          );
          fromA = legOfA.received.filter((m) => m.contentType !== GSO_TYPE).map(lastLine);
        },
        async (contact) => {
          const reg = await a.register(contact, SERVED_USER);
          assert.equal(reg.code, 0, `S-CSCF SIPp: ${reg.errors}`);
        },
      );
      const afterResume = fromA.length - atResume;
      const seen = new Set([...fromA, ...fromB]);
      const lost = texts.filter((x) => !seen.has(x)).length;
      const twice = fromA.filter((x) => fromB.includes(x)).length;
      t.diagnostic(
        `${texts.length} deferred; A: ${atStop} before SIGSTOP, ${afterResume} after SIGCONT; B: ${fromB.length}; lost ${lost}; both sent ${twice}`,
      );
      assert.ok(atStop < texts.length, "frozen mid-delivery");
      assert.equal(atResume, atStop, "nothing from A while it was stopped");
      assert.ok(afterResume <= defaults.media.deliveryWindow, `A sent ${afterResume} after SIGCONT: at most its MSRP window`);
      assert.ok(
        a.loggedAll("slot lease lapsed while this sidecar did not run").length > 0,
        "A saw by its own clock that its lease had lapsed",
      );
      assert.ok(
        a.loggedAll("slot lease lost: this sidecar's delivery stops, the rest stays queued for the slot's new owner").length > 0,
        "A stood down",
      );
      assert.equal(lost, 0, "nothing lost");
      assert.deepEqual(fromA, texts.slice(0, fromA.length), "A's part in order");
      const resumedAt = texts.indexOf(fromB[0] ?? "");
      assert.ok(resumedAt > 0, "B starts behind what the device confirmed to A");
      assert.deepEqual(fromB, texts.slice(resumedAt), "B's part in order, to the end");
      await waitFor(async () => (await b.folder(deferredFolder(chat))).length === 0, 10_000, 50, "the queue empty");
    },
  );
});
