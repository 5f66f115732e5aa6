// Stream entry ids as the change log's catch-up compares them (src/session/redis/redis-record-store.ts).
import assert from "node:assert/strict";
import { test } from "node:test";
import { compareEntryIds } from "../../../src/session/redis/redis-record-store.js";

test("session.redisChangeLog: stream entry ids <ms>-<seq> order by time, then sequence, as numbers (not as text)", () => {
  assert.equal(compareEntryIds("1700000000000-0", "1700000000000-0"), 0);
  assert.equal(compareEntryIds("1700000000000-9", "1700000000000-10"), -1, "10 after 9");
  assert.equal(compareEntryIds("999-5", "1000-0"), -1, "a shorter time is earlier");
  assert.equal(compareEntryIds("1700000000001-0", "1700000000000-99"), 1);
  assert.equal(compareEntryIds("0-0", "1-0"), -1);
  assert.equal(compareEntryIds("18446744073709551615-18446744073709551615", "18446744073709551615-0"), 1, "beyond 2^53");
});
