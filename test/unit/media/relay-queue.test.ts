// RelayQueue with a fake leg and a fake absent path: order, pipelining, the
// switch to deferred storage when the leg breaks, and release (BYE-B10).
import assert from "node:assert/strict";
import { test } from "node:test";
import type { PayloadKind } from "../../../src/media/classify.js";
import type { LegState } from "../../../src/media/relay-policy.js";
import { type RelayItem, RelayQueue, type RelayTarget } from "../../../src/media/relay-queue.js";

const tick = () => new Promise((resolve) => setImmediate(resolve));

class FakeLeg implements RelayTarget {
  state: LegState;
  readonly sent: string[] = [];
  readonly answers = new Map<string, { resolve: (code: number) => void; reject: (e: Error) => void }>();
  private waiters: (() => void)[] = [];
  constructor(state: LegState = "up") {
    this.state = state;
  }
  settled(): Promise<void> {
    if (this.state !== "pending") return Promise.resolve();
    return new Promise((r) => this.waiters.push(r));
  }
  send(item: RelayItem): Promise<number> {
    this.sent.push(item.messageId);
    return new Promise((resolve, reject) => this.answers.set(item.messageId, { resolve, reject }));
  }
  singleChunk(item: RelayItem): boolean {
    return item.body.length <= 10;
  }
  broken(): void {
    this.set("gone");
  }
  set(state: LegState): void {
    this.state = state;
    for (const w of this.waiters.splice(0)) w();
  }
  answer(id: string, code = 200): void {
    this.answers.get(id)?.resolve(code);
  }
  fail(id: string): void {
    this.answers.get(id)?.reject(new Error("connection closed"));
  }
}

function setup(state: LegState = "up", maxInFlight = 3, deferCode = 200) {
  const leg = new FakeLeg(state);
  const deferred: string[] = [];
  const relayed: string[] = [];
  const codes = new Map<string, number>();
  const queue = new RelayQueue({
    direction: "from-network",
    target: leg,
    absent: {
      defer: async (item) => {
        deferred.push(`${item.kind}:${item.messageId}`);
        return deferCode;
      },
    },
    onRelayed: (item) => relayed.push(item.messageId),
    maxInFlight,
  });
  const push = (id: string, kind: PayloadKind = "message", size = 5) =>
    queue.push({
      kind,
      contentType: "message/cpim",
      body: Buffer.alloc(size),
      messageId: id,
      receivedAt: new Date(0),
      settle: (code) => {
        assert.equal(codes.has(id), false, `${id} settled twice`);
        codes.set(id, code);
      },
    });
  return { leg, queue, push, deferred, relayed, codes };
}

test("media plane relay queue: single-chunk messages are pipelined in order up to maxInFlight", async () => {
  const { leg, push, codes, relayed, queue } = setup("up", 3);
  for (const id of ["m1", "m2", "m3", "m4", "m5"]) push(id);
  await tick();
  assert.deepEqual(leg.sent, ["m1", "m2", "m3"], "window of 3");
  assert.equal(queue.size, 5);
  leg.answer("m1");
  await tick();
  assert.deepEqual(leg.sent, ["m1", "m2", "m3", "m4"]);
  for (const id of ["m2", "m3", "m4"]) leg.answer(id);
  await tick();
  leg.answer("m5");
  await queue.idle();
  assert.deepEqual(relayed, ["m1", "m2", "m3", "m4", "m5"]);
  assert.deepEqual([...codes.values()], [200, 200, 200, 200, 200]);
  assert.equal(queue.size, 0);
});

test("media plane relay queue: a chunked message goes out whole before the next one starts", async () => {
  const { leg, push } = setup("up");
  push("small1");
  push("big", "message", 100);
  push("small2");
  await tick();
  assert.deepEqual(leg.sent, ["small1", "big"]);
  leg.answer("big");
  await tick();
  assert.deepEqual(leg.sent, ["small1", "big"], "waits for every earlier message too");
  leg.answer("small1");
  await tick();
  assert.deepEqual(leg.sent, ["small1", "big", "small2"]);
});

test("media plane relay queue: a pending leg holds messages until it is up, or defers them when it is declared absent", async () => {
  const up = setup("pending");
  up.push("a");
  await tick();
  assert.deepEqual(up.leg.sent, []);
  up.leg.set("up");
  await tick();
  assert.deepEqual(up.leg.sent, ["a"]);

  const absent = setup("pending");
  absent.push("b", "imdn");
  absent.push("c", "isComposing");
  absent.push("d", "gso");
  await tick();
  assert.deepEqual(absent.deferred, []);
  absent.leg.set("gone");
  await absent.queue.idle();
  assert.deepEqual(absent.deferred, ["imdn:b", "gso:d"]);
  assert.deepEqual(Object.fromEntries(absent.codes), { b: 200, c: 200, d: 200 });
});

test("media plane relay queue: when the leg breaks mid-flight, the unrelayed messages and all later ones are deferred in arrival order", async () => {
  const { leg, push, deferred, relayed, codes, queue } = setup("up", 8);
  for (const id of ["a", "b", "c"]) push(id);
  await tick();
  leg.answer("a");
  leg.fail("b"); // the client's connection went away
  await tick();
  push("d");
  leg.answer("c", 481); // the client lost the session too
  await queue.idle();
  assert.equal(leg.state, "gone");
  assert.deepEqual(relayed, ["a"]);
  assert.deepEqual(deferred, ["message:b", "message:c", "message:d"]);
  assert.deepEqual(Object.fromEntries(codes), { a: 200, b: 200, c: 200, d: 200 });
});

test("media plane relay queue: a refusal by the next hop (415) goes back to the sender; a failing store answers its error", async () => {
  const refused = setup("up");
  refused.push("x");
  await tick();
  refused.leg.answer("x", 415);
  await refused.queue.idle();
  assert.equal(refused.codes.get("x"), 415);
  assert.equal(refused.leg.state, "up");
  assert.deepEqual(refused.relayed, []);

  const failing = setup("gone", 3, 403);
  failing.push("y");
  await failing.queue.idle();
  assert.equal(failing.codes.get("y"), 403);
});

test("BYE-B10: closing the relay queue answers every queued and unanswered message with 481 and counts them", async () => {
  const { leg, push, codes, queue } = setup("up", 2);
  for (const id of ["a", "b", "c", "d"]) push(id);
  await tick();
  assert.deepEqual(leg.sent, ["a", "b"]);
  assert.equal(queue.close(), 4);
  assert.equal(queue.size, 0);
  assert.deepEqual(Object.fromEntries(codes), { a: 481, b: 481, c: 481, d: 481 });
  leg.answer("a"); // a late answer changes nothing
  await tick();
  assert.equal(codes.get("a"), 481);
  push("e");
  assert.equal(codes.get("e"), 481);
  assert.equal(queue.close(), 0);
  await queue.idle();
});
