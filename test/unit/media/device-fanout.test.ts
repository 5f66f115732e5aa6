// DeviceFanout: the CF's messages to every client leg that is up (BYE-B7),
// one leg up = that leg's send; the CF answered with the first 2xx.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DeviceFanout } from "../../../src/media/device-fanout.js";
import type { LegState } from "../../../src/media/relay-policy.js";
import type { RelayItem, RelayTarget } from "../../../src/media/relay-queue.js";

/** A leg that answers every SEND with `code` after `delayMs` (reject: the connection went away). */
class Device implements RelayTarget {
  readonly sent: string[] = [];
  brokenBy: string | undefined;
  private waiters: (() => void)[] = [];
  constructor(
    public state: LegState,
    public code: number | "reject" = 200,
    private readonly delayMs = 0,
  ) {}
  settled(): Promise<void> {
    return this.state === "pending" ? new Promise((r) => this.waiters.push(r)) : Promise.resolve();
  }
  async send(item: RelayItem): Promise<number> {
    this.sent.push(item.messageId);
    await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.code === "reject") throw new Error("connection closed");
    return this.code;
  }
  singleChunk(): boolean {
    return true;
  }
  broken(reason: string): void {
    this.brokenBy = reason;
    this.set("gone");
  }
  set(state: LegState): void {
    this.state = state;
    for (const w of this.waiters.splice(0)) w();
  }
}

function item(id: string, answers: number[] = []): RelayItem {
  return {
    kind: "message",
    contentType: "message/cpim",
    body: Buffer.from(id),
    messageId: id,
    receivedAt: new Date(),
    settle: (code) => answers.push(code),
    via: undefined,
  };
}

test("BYE-B7 state: up when any leg is up; the joined session's state otherwise; pending while one is pending; else gone", () => {
  const a = new Device("gone");
  const fanout = new DeviceFanout(a);
  assert.equal(fanout.state, "gone");
  const b = new Device("pending");
  fanout.add(b);
  assert.equal(fanout.state, "pending");
  const joined = new Device("gone");
  fanout.join(joined);
  assert.equal(fanout.state, "gone", "joined: its state stands for the client while no leg is up");
  b.set("up");
  assert.equal(fanout.state, "up");
  fanout.leave(joined);
  fanout.remove(b);
  assert.equal(fanout.state, "gone");
});

test("BYE-B7 one leg up: that leg's send, and a broken relay breaks that leg only", async () => {
  const a = new Device("up", 481);
  const b = new Device("gone");
  const fanout = new DeviceFanout(a);
  fanout.add(b);
  const i = item("m1");
  assert.equal(await fanout.send(i), 481);
  assert.equal(i.via, a);
  b.set("up"); // another device came up meanwhile
  fanout.broken("relay failed", i);
  assert.equal(a.state, "gone");
  assert.equal(b.state, "up");
});

test("BYE-B7 several legs up: each gets it, the CF's answer is the first 2xx; broken legs are marked; refusals before broken codes", async () => {
  const slow = new Device("up", 200, 30);
  const fast = new Device("up", 200);
  const dead = new Device("up", "reject");
  const fanout = new DeviceFanout(slow);
  fanout.add(fast);
  fanout.add(dead);
  const answers: number[] = [];
  const sending = fanout.send(item("m1", answers));
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(answers, [200], "answered once the fast device took it, before the slow one did");
  assert.equal(await sending, 200);
  assert.deepEqual([slow.sent, fast.sent, dead.sent], [["m1"], ["m1"], ["m1"]]);
  assert.equal(dead.state, "gone");

  const refusing = new Device("up", 415);
  const breaking = new Device("up", 481);
  const both = new DeviceFanout(breaking);
  both.add(refusing);
  assert.equal(await both.send(item("m2")), 415, "a refusal of the message before a broken leg");
  assert.equal(breaking.state, "gone");
  assert.equal(refusing.state, "up");
});

test("BYE-B7 settled(): waits for a device added while waiting", async () => {
  const a = new Device("pending");
  const fanout = new DeviceFanout(a);
  let done = false;
  const waiting = fanout.settled().then(() => {
    done = true;
  });
  const b = new Device("pending");
  fanout.add(b);
  b.set("up");
  await waiting;
  assert.equal(done, true);
  assert.equal(a.state, "pending");
  assert.equal(fanout.state, "up");
});

test("DD-12 BYE-B7: two devices' delivery sessions joined: the CF's messages reach both in order; one leaving keeps the other joined", async () => {
  const original = new Device("gone");
  const fanout = new DeviceFanout(original);
  const phone = new Device("up");
  const tablet = new Device("up");
  fanout.join(phone);
  fanout.join(tablet);
  fanout.join(tablet); // joined once
  const answers: number[] = [];
  assert.equal(await fanout.send(item("m1", answers)), 200);
  assert.equal(await fanout.send(item("m2", answers)), 200);
  assert.deepEqual(phone.sent, ["m1", "m2"]);
  assert.deepEqual(tablet.sent, ["m1", "m2"]);
  fanout.leave(phone);
  assert.equal(await fanout.send(item("m3", answers)), 200);
  assert.deepEqual(phone.sent, ["m1", "m2"], "the phone left");
  assert.deepEqual(tablet.sent, ["m1", "m2", "m3"]);
  assert.equal(fanout.state, "up");
  fanout.leave();
  assert.equal(fanout.state, "gone");
});
