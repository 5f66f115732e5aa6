// The deferred items of one delivery, in order and once (DD-10 "deliver in
// order", RJ-2): what was sent, what the client confirmed. Pure. Items are
// what DeferredQueue.read returned (UID order = arrival order); their handles
// identify them across reads.
import type { DeferredKind } from "../media/ports.js";
import type { DeferredHandle } from "../store/deferred-queue.js";

export interface PendingItem {
  handle: DeferredHandle;
  kind: DeferredKind;
  msrpMessageId: string;
}

export interface ItemTracker {
  /**
   * Sent, in send order; `sent[head..]` are not confirmed yet. Answers come
   * in send order (RFC 4975 7.1: one connection, in order), so confirming the
   * oldest moves `head` on without copying (the array is never changed).
   */
  sent: readonly PendingItem[];
  head: number;
  /**
   * Highest UID taken (sent, or settled without sending), and the UIDVALIDITY
   * it belongs to: nothing at or below it is taken again, so the tracker stays
   * small whatever the queue length, and the next read starts above it.
   */
  lastUid: number;
  uidValidity: string | undefined;
}

export const emptyTracker: ItemTracker = { sent: [], head: 0, lastUid: 0, uidValidity: undefined };

/** Sent, not yet confirmed, in send order. */
export function inFlight(t: ItemTracker): readonly PendingItem[] {
  return t.head === 0 ? t.sent : t.sent.slice(t.head);
}

/** How many items are sent and not yet confirmed. */
export function inFlightCount(t: ItemTracker): number {
  return t.sent.length - t.head;
}

export function itemId(h: DeferredHandle): string {
  return `${h.folder}\n${h.uidValidity}\n${h.uid}`;
}

export interface Batch {
  tracker: ItemTracker;
  /** To send, in this order. */
  deliver: PendingItem[];
  /** Interim GSOs left out by policy (DD-11 / RJ-3 MAY off): acked without sending. */
  skipped: PendingItem[];
  notes: string[];
}

/**
 * The part of a read that may be taken: UID order, nothing at or below what
 * was already taken (once, in order), and interim GSOs only when
 * `interimGsos` (the others are settled without sending).
 */
export function takeBatch(t: ItemTracker, items: readonly PendingItem[], interimGsos: boolean): Batch {
  const notes: string[] = [];
  let { lastUid, uidValidity } = t;
  const deliver: PendingItem[] = [];
  const skipped: PendingItem[] = [];
  for (const item of [...items].sort((a, b) => a.handle.uid - b.handle.uid)) {
    if (uidValidity !== undefined && item.handle.uidValidity !== uidValidity) {
      // RFC 9051 2.3.1.1: a new UIDVALIDITY means a new folder; its UIDs start over
      notes.push(`queue folder recreated (UIDVALIDITY ${uidValidity} -> ${item.handle.uidValidity})`);
      lastUid = 0;
    }
    uidValidity = item.handle.uidValidity;
    if (item.handle.uid <= lastUid) {
      notes.push(`item uid ${item.handle.uid} is not above uid ${lastUid} already taken: not sent (once, in order)`);
      continue;
    }
    lastUid = item.handle.uid;
    if (item.kind === "gso" && !interimGsos) skipped.push(item);
    else deliver.push(item);
  }
  if (skipped.length) notes.push(`${skipped.length} interim GSO(s) not delivered (delivery.sendInterimGsos off)`);
  const sent = deliver.length === 0 ? t.sent : [...inFlight(t), ...deliver];
  return { tracker: { sent, head: deliver.length === 0 ? t.head : 0, lastUid, uidValidity }, deliver, skipped, notes };
}

/** Where the next read starts: above everything taken, in the same folder incarnation. */
export function readCursor(t: ItemTracker): { afterUid: number; uidValidity: string } | undefined {
  return t.uidValidity === undefined ? undefined : { afterUid: t.lastUid, uidValidity: t.uidValidity };
}

/** The client confirmed (or permanently refused) `handle`; `known` false when it was not in flight. */
export function settle(t: ItemTracker, handle: DeferredHandle): { tracker: ItemTracker; known: boolean } {
  // a sent item is at or below lastUid: never taken again (takeBatch), no entry needed
  const oldest = t.sent[t.head];
  if (oldest !== undefined && sameItem(oldest.handle, handle)) return { tracker: { ...t, head: t.head + 1 }, known: true };
  let at = -1;
  for (let i = t.head + 1; i < t.sent.length; i++) {
    if (sameItem((t.sent[i] as PendingItem).handle, handle)) {
      at = i;
      break;
    }
  }
  if (at < 0) return { tracker: t, known: false };
  return { tracker: { ...t, sent: [...t.sent.slice(t.head, at), ...t.sent.slice(at + 1)], head: 0 }, known: true };
}

function sameItem(a: DeferredHandle, b: DeferredHandle): boolean {
  return a.uid === b.uid && a.uidValidity === b.uidValidity && a.folder === b.folder;
}
