// Scale-out, deferred delivery owned by one sidecar (session.store "redis"):
// two sidecars on one Redis and one Dovecot, each behind its own Kamailio
// (its CPM_PF_GRPC_TARGET lists its own sidecar first, the other next), so
// the S-CSCF's third-party REGISTER can be sent to the sidecar that does not
// own the served user's slot. Played from the wire as in
// deferred-delivery.test.ts: the CF's INVITE (SIPp), the media anchored, the
// client's MSRP connection drops, the CF's messages are deferred, its BYE;
// then the REGISTER and the delivery INVITE at the client (SIPp + MSRP peer).
// Then the owner is SIGKILLed in the middle of a delivery and the device's next
// REGISTER reaches the other sidecar, which takes the slot over; the
// survivor's SIGTERM drain gives its slots up. Last, an owner killed
// mid-delivery with no REGISTER after it: the other resumes the delivery.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import { Keyspace } from "../../src/session/redis/keyspace.js";
import { slotOf } from "../../src/session/redis/slot-leases.js";
import { triggerSipp } from "../harness/anchored-chat.js";
import { type Chat, type DeferredChatRig, deferredFolder, GSO_TYPE, SERVED_USER } from "../harness/deferred-chat.js";
import { deliveryAcrossCrash, type OwnerPair, SENT_TWICE_BOUND, startOwnerPair } from "../harness/delivery-takeover.js";
import { sdpPath } from "../harness/msrp-peer.js";
import { waitFor } from "../harness/wait.js";

const T = { timeout: 120_000 };
const SLOTS = 16;
const LEASE_TTL_MS = 1500;
const SLOT = slotOf(SERVED_USER, SLOTS);
const TAKEOVER_MESSAGES = 600;
const KILL_AT = 60;
const keys = new Keyspace();

describe("scale-out DD-1: two sidecars on one Redis: the owner of the served user's slot delivers, whichever sidecar got the REGISTER", () => {
  let pair: OwnerPair | undefined;
  let watch: Redis | undefined;
  let a: DeferredChatRig | undefined;
  let b: DeferredChatRig | undefined;

  before(async () => {
    pair = await startOwnerPair({ slots: SLOTS, leaseTtlMs: LEASE_TTL_MS });
    ({ a, b } = pair);
    watch = new Redis(pair.redis.url, { maxRetriesPerRequest: 1 });
  });
  after(async () => {
    watch?.disconnect();
    await pair?.stop();
  });

  const ownerName = (rig: DeferredChatRig) => String(rig.sidecar.logLines().find((l) => l.msg === "sidecar ready")?.owner);
  const leasesTaken = (rig: DeferredChatRig) => rig.sidecar.logLines().filter((l) => l.msg === "slot lease taken" && l.slot === SLOT);
  const deliveriesStarted = (rig: DeferredChatRig) =>
    rig.sidecar
      .logLines()
      .filter((l) => l.msg === "registration: deferred delivery started" && l.servedUser === SERVED_USER && Number(l.deliveries) > 0);

  /** The delivery to a SIPp client after `register(contact)`: every kept message once, in order, then the GSO (DD-10, DD-11); the client's BYE cause=200 ends it and the queue is empty. */
  async function delivered(by: DeferredChatRig, chat: Chat, register: (contact: string) => Promise<void>) {
    await by.deliveredTo(
      chat,
      "client-dd-uas.xml",
      { bye_reason: 'SIP;cause=200;text="Call completed"' },
      async ({ peer, client, invite }) => {
        assert.match(sdpPath(invite.body), new RegExp(`^msrp://127\\.0\\.0\\.1:${by.mediaPort}/`), "the delivery leg is the owner's");
        const got = await by.received(peer, chat.sent.length + 1, chat);
        assert.deepEqual(
          got.slice(0, chat.sent.length).map((m) => Buffer.from(m.body).toString("utf8")),
          chat.sent.map((s) => s.body.toString("utf8")),
          "every deferred message, in the order the CF sent them",
        );
        assert.equal(got[chat.sent.length]?.contentType, GSO_TYPE);
        await waitFor(async () => (await by.folder(deferredFolder(chat))).length === 0, 5000, 50, "deferred queue emptied");
        await triggerSipp(client.port, invite.headers.get("call-id")?.[0] ?? "");
        const r = await client.done;
        assert.equal(r.code, 0, `client SIPp: ${r.errors}`);
        // the delivery is over: what the peer got is all it gets (nothing twice), one INVITE for the group session
        assert.equal(peer.received.length, chat.sent.length + 1, "nothing delivered twice");
        assert.equal(r.messages.filter((m) => m.direction === "received" && m.method === "INVITE").length, 1, "one delivery INVITE");
      },
      register,
    );
  }

  test(
    "scale-out DD-1: the REGISTER reaches the sidecar that does not own the slot: it wakes the owner over Redis and delivers nothing; the owner's delivery INVITE brings every message once, in order",
    T,
    async () => {
      const ra = a as DeferredChatRig;
      const rb = b as DeferredChatRig;
      // the user's device registers through A first (nothing pending yet): A takes the user's slot
      assert.equal((await ra.register("<sip:earlier@127.0.0.1:9>")).code, 0);
      await waitFor(() => leasesTaken(ra).length === 1, 5000, 20, "A holds the served user's slot");
      assert.equal(await watch?.get(keys.lease(SLOT)), `${ownerName(ra)} ${leasesTaken(ra)[0]?.token}`);
      const chat = await ra.chatWhileAway(["one", "two", "three", "four", "five"], { byeHeaders: ["Reason: SIP;cause=480"] });
      await ra.lifecycleMoved(chat, "client-absent -> inactive");
      await delivered(ra, chat, async (contact) => {
        // the S-CSCF's REGISTER to B's Kamailio: B is asked
        const reg = await rb.register(contact, SERVED_USER);
        assert.equal(reg.code, 0, `S-CSCF SIPp: ${reg.errors}`);
      });
      const published = rb.loggedAll("registration wake-up published").filter((l) => l.servedUser === SERVED_USER);
      assert.deepEqual(
        published.map((l) => [l.owner, l.slot, l.received]),
        [[ownerName(ra), SLOT, 1]],
        "B published the registration once, to A",
      );
      assert.equal(deliveriesStarted(rb).length, 0, "B started no delivery");
      assert.equal(leasesTaken(rb).length, 0, "B never took the slot");
      assert.equal(ra.loggedAll("registration wake-up received").length, 1);
      assert.equal(deliveriesStarted(ra).length, 1, "A delivered, once");
    },
  );

  test(
    "scale-out DD-1: the owner is SIGKILLed; once its lease lapsed, a REGISTER (new pending data) at the survivor: it takes the slot with a newer token and delivers; nothing twice, nothing lost",
    T,
    async () => {
      const ra = a as DeferredChatRig;
      const rb = b as DeferredChatRig;
      const oldToken = Number(leasesTaken(ra)[0]?.token);
      await ra.sidecar.kill("SIGKILL");
      await waitFor(async () => (await watch?.exists(keys.lease(SLOT))) === 0, 10_000, 50, "the dead owner's lease lapses");
      // the CF's next group chat through B's Kamailio (A is gone), deferred by B
      const chat = await rb.chatWhileAway(["after the kill 1", "after the kill 2", "after the kill 3"], {
        byeHeaders: ["Reason: SIP;cause=480"],
      });
      await rb.lifecycleMoved(chat, "client-absent -> inactive");
      await delivered(rb, chat, async (contact) => {
        const reg = await rb.register(contact, SERVED_USER);
        assert.equal(reg.code, 0, `S-CSCF SIPp: ${reg.errors}`);
      });
      const taken = leasesTaken(rb);
      assert.equal(taken.length, 1, "B took the slot");
      assert.ok(Number(taken[0]?.token) > oldToken, "with a newer fencing token");
      assert.equal(deliveriesStarted(rb).length, 1, "B delivered, once");
      assert.equal(
        rb.loggedAll("registration wake-up published").filter((l) => l.servedUser === SERVED_USER).length,
        1,
        "no wake-up this time (only the first case's)",
      );
    },
  );

  test(
    `scale-out DD-1 DD-10: the owner is SIGKILLed in the middle of a delivery of ${TAKEOVER_MESSAGES} messages; the next REGISTER reaches the other sidecar: it takes the slot once the lease lapsed and delivers the rest: 0 lost, order kept, re-sent only the tail the device had not confirmed in the record`,
    T,
    async (t) => {
      const ra = a as DeferredChatRig;
      const rb = b as DeferredChatRig;
      // A is back (a new process on its ports); B holds the slot since the previous case
      await ra.restart();
      const texts = Array.from({ length: TAKEOVER_MESSAGES }, (_, i) => `takeover ${i}`);
      const chat = await rb.chatWhileAway(texts, { byeHeaders: ["Reason: SIP;cause=480"] });
      await rb.lifecycleMoved(chat, "client-absent -> inactive");

      // B delivers; SIGKILLed once items are leaving the queue (the rest still in B's window or queue); the device's REGISTER through A's Kamailio
      const c = await deliveryAcrossCrash(rb, ra, chat, () => rb.sidecar.kill("SIGKILL"), KILL_AT);
      t.diagnostic(
        `${c.sent} deferred; ${c.before} by the killed owner, ${c.after} by the new owner; lost ${c.lost}; twice ${c.twice} (same IMDN Message-ID); reordered ${c.reordered}; left ${c.left}`,
      );
      assert.ok(c.before >= KILL_AT && c.before < texts.length, `killed mid-delivery (${c.before} of ${texts.length} came)`);
      // the new owner starts behind the position the record kept for the device: a contiguous tail of what B sent again, then the rest
      assert.equal(c.reordered, 0, "each delivery in the CF's order, the second from where the record's position ends");
      assert.ok(c.twice < c.before, "what the device confirmed to the dead owner (the record's position) is not delivered again");
      assert.equal(c.lost, 0, "nothing lost");
      assert.ok(c.gso, "DD-11: the GSO after the rest");
      assert.equal(c.left, 0, "the queue empty");
      // whether the new owner had confirmed items to mark depends on whether the SIGKILL came between
      // a confirmation's record write and its IMAP mark: the bound below holds either way
      t.diagnostic(
        `confirmed items marked by the new owner: ${ra.loggedAll("items the device confirmed before a crash marked, not sent again").some((l) => l.servedUser === SERVED_USER)}`,
      );
      assert.ok(c.twice <= SENT_TWICE_BOUND, `sent twice ${c.twice}: at most ${SENT_TWICE_BOUND}`);
      assert.equal(c.twiceUnmarked, 0, "every copy carries its first copy's IMDN Message-ID: the client can drop it (RFC 5438 6.3)");
      const taken = leasesTaken(ra);
      assert.equal(taken.length, 1, "A took the slot");
      assert.ok(
        ra.loggedAll("registration wake-up published").some((l) => l.servedUser === SERVED_USER),
        "A asked the dead holder first",
      );
    },
  );

  test(
    "scale-out DD-1: the SIGTERM drain releases the slots the sidecar holds (the next registration's sidecar takes them at once)",
    T,
    async () => {
      // A: the owner since the takeover
      const owner = a as DeferredChatRig;
      const holder = ownerName(owner);
      assert.equal((await watch?.get(keys.lease(SLOT)))?.split(" ")[0], holder, "A holds the slot before the drain");
      const lines = await owner.terminate();
      const released = lines.filter((l) => l.msg === "slot leases released");
      // the served user's slot, and the slot of the probe user whose REGISTERs checked that Kamailio reached the restarted A
      const taken = [...new Set(lines.filter((l) => l.msg === "slot lease taken").map((l) => Number(l.slot)))].sort((x, y) => x - y);
      assert.ok(taken.includes(SLOT));
      assert.deepEqual(
        released.map((l) => [...(l.slots as number[])].sort((x, y) => x - y)),
        [taken],
      );
      for (const slot of taken) assert.equal(await watch?.exists(keys.lease(slot)), 0, `no lease left for slot ${slot}`);
    },
  );

  test(
    "scale-out DD-1 DD-10 (delivery.resumeInterrupted): the owner is SIGKILLed mid-delivery and the device does not register again: the other sidecar takes the slot once its lease lapsed and resumes the delivery from the shared record, to the same contact: 0 lost, in order",
    T,
    async (t) => {
      const ra = a as DeferredChatRig;
      const rb = b as DeferredChatRig;
      // both back (A drained, B killed before); B takes the slot with the device's REGISTER
      await rb.restart();
      await ra.restart();
      const texts = Array.from({ length: TAKEOVER_MESSAGES }, (_, i) => `resumed ${i}`);
      const chat = await rb.chatWhileAway(texts, { byeHeaders: ["Reason: SIP;cause=480"] });
      await rb.lifecycleMoved(chat, "client-absent -> inactive");
      const c = await deliveryAcrossCrash(rb, ra, chat, () => rb.sidecar.kill("SIGKILL"), KILL_AT, "resumed");
      t.diagnostic(
        `${c.sent} deferred; ${c.before} by the killed owner, ${c.after} resumed by the other; lost ${c.lost}; twice ${c.twice}`,
      );
      assert.ok(c.before >= KILL_AT && c.before < texts.length, `killed mid-delivery (${c.before} of ${texts.length} came)`);
      assert.equal(c.lost, 0, "nothing lost");
      assert.equal(c.reordered, 0);
      assert.ok(c.gso, "DD-11: the GSO after the rest");
      assert.equal(c.left, 0, "the queue empty");
      assert.ok(c.twice <= SENT_TWICE_BOUND, `sent twice ${c.twice}: at most ${SENT_TWICE_BOUND}`);
      assert.equal(c.twiceUnmarked, 0, "every copy carries its first copy's IMDN Message-ID: the client can drop it (RFC 5438 6.3)");
      assert.ok(
        ra
          .loggedAll("deferred delivery resumed: the record says it was under way and nobody ran it")
          .some((l) => l.servedUser === SERVED_USER),
        "A resumed it by itself",
      );
    },
  );
});
