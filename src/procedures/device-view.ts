// DD-1 "for a CPM Client" (8.3.2.9.1.2: "the pending CPM Group Session data
// (i.e. that the CPM User has missed, or it has incompletely received)"),
// per device: each of the served user's devices (its +sip.instance, RFC 5626
// 4.1) has its own view of a group session's deferred queue. Pure.
//
// Layout (decisions, the spec is silent on several devices):
//   - a device is named in the store by an IMAP keyword (RFC 9051 2.3.2)
//     derived from a hash of its +sip.instance: `CpmPfDev_<16 hex>` (SHA-256,
//     64 bits), 25 characters: an atom, under Dovecot's
//     mail_max_keyword_length (50), and no device identifier (an IMEI) in
//     the user's mailbox. A registration or re-join without +sip.instance is
//     one anonymous device, `CpmPfDev_anonymous` (the behaviour before per
//     device delivery for a user with one such client);
//   - an item a device confirmed (MSRP 200, or refused for good) carries the
//     device's keyword; the device's reads skip items with it;
//   - the members of a group session's queue: the devices the record knows
//     for the served user (its dialogs' clientInstance; a dialog without one
//     names no device: it cannot be told apart from the registered ones),
//     the devices that registered (or re-joined) while data was pending
//     (GroupSession.devices), and the device delivering now;
//   - an item leaves the queue once every member's keyword is on it, or once
//     it is older than delivery.deviceRetentionMs and one device got it (a
//     device that never comes back cannot keep data for ever); an item no
//     device got never leaves by age (the record's retention covers that);
//   - deviceRetentionMs 0: the device delivering now is the only member: an
//     item leaves once one device got it (one delivery per user).
import { createHash } from "node:crypto";
import type { DeliveredThrough, DeliveringTo, GroupSession, SeenDevice } from "../session/group-session.js";
import type { DeferredHandle } from "../store/deferred-queue.js";

export const DEVICE_KEYWORD_PREFIX = "CpmPfDev_";
export const ANONYMOUS_KEYWORD = `${DEVICE_KEYWORD_PREFIX}anonymous`;

/** One device of the served user, as deferred delivery tells it apart. */
export interface Device {
  /** +sip.instance without quotes; undefined: the anonymous device. */
  instanceId: string | undefined;
  /** Its IMAP keyword in the queue folders. */
  keyword: string;
}

export type { SeenDevice };

/** The record keeps at most this many devices seen (the newest). */
export const MAX_SEEN_DEVICES = 32;
/** A device seen again within this (a refresh REGISTER) leaves the record as it is: no journal write per refresh. */
export const SEEN_REFRESH_MS = 60_000;

/** Whether `keyword` seen at `now` changes the record's devices (absent, or last seen more than SEEN_REFRESH_MS ago). */
export function seenChanges(devices: readonly SeenDevice[] | undefined, keyword: string, now: number): boolean {
  const d = devices?.find((x) => x.keyword === keyword);
  return d === undefined || now - d.at >= SEEN_REFRESH_MS;
}

/** RFC 5626 4.1: +sip.instance is a quoted "<urn>"; quotes and blanks do not name another device. */
export function normaliseInstance(instanceId: string | undefined): string | undefined {
  const v = instanceId?.trim().replace(/^"|"$/g, "").trim();
  return v ? v : undefined;
}

export function deviceOf(instanceId: string | undefined): Device {
  const id = normaliseInstance(instanceId);
  if (!id) return { instanceId: undefined, keyword: ANONYMOUS_KEYWORD };
  const hash = createHash("sha256").update(id, "utf8").digest("hex").slice(0, 16);
  return { instanceId: id, keyword: `${DEVICE_KEYWORD_PREFIX}${hash}` };
}

/** IMAP flags compare case-insensitively (RFC 9051 2.3.2). */
function has(keywords: readonly string[], keyword: string): boolean {
  const k = keyword.toLowerCase();
  return keywords.some((x) => x.toLowerCase() === k);
}

function anyDevice(keywords: readonly string[]): boolean {
  const p = DEVICE_KEYWORD_PREFIX.toLowerCase();
  return keywords.some((x) => x.toLowerCase().startsWith(p));
}

/** The keywords of the devices the queue waits for (see the header); `current` (a device's keyword) always among them. */
export function memberKeywords(
  session: Pick<GroupSession, "dialogs" | "devices"> | undefined,
  current: string,
  now: number,
  retentionMs: number,
): string[] {
  const out = new Set<string>([current]);
  if (retentionMs === 0 || !session) return [...out];
  for (const d of session.dialogs) {
    if (normaliseInstance(d.clientInstance)) out.add(deviceOf(d.clientInstance).keyword);
  }
  // a device not seen for longer than the retention is no member any more
  for (const d of session.devices ?? []) if (now - d.at <= retentionMs) out.add(d.keyword);
  return [...out];
}

/** The record's devices with `keyword` seen at `now` (the newest MAX_SEEN_DEVICES kept). */
export function withSeenDevice(devices: readonly SeenDevice[] | undefined, keyword: string, now: number): SeenDevice[] {
  const rest = (devices ?? []).filter((d) => d.keyword !== keyword);
  const before = devices?.find((d) => d.keyword === keyword);
  return [...rest, { ...before, keyword, at: now }].sort((a, b) => a.at - b.at).slice(-MAX_SEEN_DEVICES);
}

/**
 * DD-10: the device confirmed every item up to `through`: its position moves
 * on (never back; a new UIDVALIDITY starts over). Undefined: nothing changes.
 */
export function withDeliveredThrough(
  devices: readonly SeenDevice[] | undefined,
  keyword: string,
  through: DeliveredThrough,
  now: number,
): SeenDevice[] | undefined {
  const d = devices?.find((x) => x.keyword === keyword);
  const was = d?.deliveredThrough;
  if (was && was.uidValidity === through.uidValidity && was.uid >= through.uid) return undefined;
  const seen = withSeenDevice(devices, keyword, d?.at ?? now);
  return seen.map((x) => (x.keyword === keyword ? { ...x, deliveredThrough: { uidValidity: through.uidValidity, uid: through.uid } } : x));
}

/** The device's delivery under way (`to`), the device seen at `now`. */
export function withDelivering(devices: readonly SeenDevice[] | undefined, keyword: string, to: DeliveringTo, now: number): SeenDevice[] {
  return withSeenDevice(devices, keyword, now).map((x) => (x.keyword === keyword ? { ...x, delivering: to } : x));
}

/** The device's delivery ended; undefined: nothing changes (none was under way). */
export function withoutDelivering(devices: readonly SeenDevice[] | undefined, keyword: string): SeenDevice[] | undefined {
  if (!devices?.some((x) => x.keyword === keyword && x.delivering)) return undefined;
  return devices.map((x) => {
    if (x.keyword !== keyword) return x;
    const { delivering: _ended, ...rest } = x;
    return rest;
  });
}

/** Where the device's confirmed items end in the queue of `uidValidity` (undefined: nothing known). */
export function deliveredThroughOf(
  devices: readonly SeenDevice[] | undefined,
  keyword: string,
  uidValidity?: string,
): DeliveredThrough | undefined {
  const t = devices?.find((d) => d.keyword === keyword)?.deliveredThrough;
  if (!t || !Number.isInteger(t.uid) || t.uid < 1 || typeof t.uidValidity !== "string") return undefined;
  return uidValidity === undefined || t.uidValidity === uidValidity ? t : undefined;
}

/** An item's marks as the store read them: its keywords, and when it reached the store (INTERNALDATE, ms). */
export interface ItemMarks {
  handle: DeferredHandle;
  keywords: readonly string[];
  storedAt: number | undefined;
}

export interface Retirement {
  /** Items that leave the queue (UID EXPUNGE / MOVE). */
  retire: DeferredHandle[];
  /** Items kept for other member devices. */
  kept: number;
  /** Items the device confirmed whose mark the store did not keep (e.g. no keyword left in the mailbox): retired, as before per device delivery. */
  unmarked: number;
}

/**
 * Which items leave the queue: those every member got, those older than
 * `retentionMs` that one device got; with `confirmedBy`, the items that
 * device just confirmed and whose mark is missing (the store refused a new
 * keyword: the device would get them again and the others could never be
 * told apart) leave as well.
 */
export function retirable(
  items: readonly ItemMarks[],
  members: readonly string[],
  now: number,
  retentionMs: number,
  confirmedBy?: string,
): Retirement {
  const out: Retirement = { retire: [], kept: 0, unmarked: 0 };
  for (const it of items) {
    if (confirmedBy !== undefined && !has(it.keywords, confirmedBy)) {
      out.unmarked++;
      out.retire.push(it.handle);
      continue;
    }
    if (!anyDevice(it.keywords)) {
      out.kept++;
      continue;
    }
    const everyMember = members.every((k) => has(it.keywords, k));
    const expired = it.storedAt !== undefined && now - it.storedAt >= retentionMs;
    if (everyMember || expired) out.retire.push(it.handle);
    else out.kept++;
  }
  return out;
}
