// The Lua scripts of the shared record store and the leases. Redis runs a
// script atomically (no other command in between, EVAL docs "Script
// atomicity"), so a record, its index entries, its retention score, its
// pending-set membership, the change log and the notice move together or not at all.
// Sent as EVALSHA, and as EVAL once when the server does not know the script
// yet (after a restart).
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

export interface Script {
  readonly lua: string;
  readonly sha: string;
  readonly keys: number;
}

function script(keys: number, lua: string): Script {
  return { lua, keys, sha: createHash("sha1").update(lua).digest("hex") };
}

export async function runScript(redis: Redis, s: Script, keys: string[], args: (string | number)[]): Promise<unknown> {
  if (keys.length !== s.keys) throw new Error(`script takes ${s.keys} keys, got ${keys.length}`);
  try {
    return await redis.evalsha(s.sha, s.keys, ...keys, ...args);
  } catch (err) {
    if (!String((err as Error).message).startsWith("NOSCRIPT")) throw err;
    return await redis.eval(s.lua, s.keys, ...keys, ...args);
  }
}

/**
 * A change, "<rev> <writer> <id>": appended to the change log (a stream
 * trimmed to about `maxlen` entries, XADD MAXLEN ~) and published with the
 * log entry's id in front, "<entry id> <rev> <writer> <id>", so a sidecar
 * whose subscription dropped reads what it missed from its last entry id on.
 */
const NOTE_CHANGE = `
local function noteChange(log, maxlen, channel, notice)
  local at = redis.call('XADD', log, 'MAXLEN', '~', maxlen, '*', 'n', notice)
  redis.call('PUBLISH', channel, at .. ' ' .. notice)
end
`;

/**
 * Puts a record.
 * KEYS: rec, callids, retention, pending:<user>, fence:<slot> (or any key when unfenced), changelog
 * ARGV: id, value, base revision, writer, purge-at score, pending 0/1, Call-IDs ("\n"-joined), channel, fencing token ("" unfenced), change log length
 * Returns {"ok", rev} | {"stale", current rev} | {"fenced", newest token}.
 *
 * Compare-and-set: a write is refused when its base revision is older than
 * the newest revision another sidecar wrote (`mark`, or `rev` when the last
 * writer is another). A sidecar's own writes in a row are not compared with
 * each other (one sidecar handles a record's events one at a time,
 * src/session/serial.ts; its later write knows its earlier one).
 */
export const PUT_RECORD = script(
  6,
  `${NOTE_CHANGE}
local rec, callids, retention, pending, fence, changelog = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, value, base, writer, purgeAt, isPending, calls, channel, token, maxlen =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
if token ~= '' then
  local newest = tonumber(redis.call('GET', fence) or '0')
  if tonumber(token) < newest then return {'fenced', tostring(newest)} end
end
local cur = redis.call('HMGET', rec, 'rev', 'by', 'mark', 'calls')
local rev = tonumber(cur[1] or '0')
local mark = tonumber(cur[3] or '0')
if rev > 0 then
  if cur[2] == writer then
    if base < mark then return {'stale', tostring(rev)} end
  else
    if base < rev then return {'stale', tostring(rev)} end
    mark = rev
  end
end
local keep = {}
for c in string.gmatch(calls, '[^\\n]+') do
  keep[c] = true
  redis.call('HSET', callids, c, id)
end
if cur[4] then
  for c in string.gmatch(cur[4], '[^\\n]+') do
    if not keep[c] and redis.call('HGET', callids, c) == id then redis.call('HDEL', callids, c) end
  end
end
local nextRev = rev + 1
redis.call('HSET', rec, 'v', value, 'rev', nextRev, 'by', writer, 'mark', mark, 'calls', calls)
redis.call('ZADD', retention, purgeAt, id)
if isPending == '1' then redis.call('SADD', pending, id) else redis.call('SREM', pending, id) end
noteChange(changelog, maxlen, channel, nextRev .. ' ' .. writer .. ' ' .. id)
return {'ok', tostring(nextRev)}
`,
);

/**
 * Purges a record.
 * KEYS: rec, callids, retention, pending:<user>, changelog
 * ARGV: id, writer, channel, due ("" always; else only when its retention score is below it: the sweep), change log length
 * Returns the record's value, or nil when there was none (or it is not due).
 */
export const PURGE_RECORD = script(
  5,
  `${NOTE_CHANGE}
local rec, callids, retention, pending, changelog = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, writer, channel, due, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if due ~= '' then
  local score = redis.call('ZSCORE', retention, id)
  if score and (score == 'inf' or tonumber(score) >= tonumber(due)) then return false end
end
local cur = redis.call('HMGET', rec, 'v', 'calls')
redis.call('ZREM', retention, id)
redis.call('SREM', pending, id)
if not cur[1] then return false end
if cur[2] then
  for c in string.gmatch(cur[2], '[^\\n]+') do
    if redis.call('HGET', callids, c) == id then redis.call('HDEL', callids, c) end
  end
end
redis.call('DEL', rec)
noteChange(changelog, maxlen, channel, '0 ' .. writer .. ' ' .. id)
return cur[1]
`,
);

/**
 * Acquires (or extends, when already held by this holder) a slot's lease.
 * KEYS: lease:<slot>, fence:<slot>; ARGV: holder, ttl ms
 * Returns the lease's fencing token, or nil when another holder has it.
 */
export const ACQUIRE_LEASE = script(
  2,
  `
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder, token = string.match(cur, '^(%S+) (%d+)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return false
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return token
`,
);

/**
 * Renews a lease still held with this token (1), or tells it is gone (0).
 * KEYS: lease:<slot>; ARGV: holder, token, ttl ms
 */
export const RENEW_LEASE = script(
  1,
  `
if redis.call('GET', KEYS[1]) == ARGV[1] .. ' ' .. ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
`,
);

/** Releases a lease held with this token. KEYS: lease:<slot>; ARGV: holder, token */
export const RELEASE_LEASE = script(
  1,
  `
if redis.call('GET', KEYS[1]) == ARGV[1] .. ' ' .. ARGV[2] then return redis.call('DEL', KEYS[1]) end
return 0
`,
);
