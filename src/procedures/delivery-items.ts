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
   * Ids (itemId) settled without being sent (interim GSOs left out by
   * policy) above lastUid: never taken again. Sent items need no entry:
   * nothing at or below lastUid is sent again (order), so this stays small
   * whatever the queue length.
   */
  delivered: readonly string[];
  /** Sent, not yet confirmed, in send order. */
  inFlight: readonly PendingItem[];
  /** Highest UID sent, and the UIDVALIDITY it belongs to: sends only go up. */
  lastUid: number;
  uidValidity: string | undefined;
}

export const emptyTracker: ItemTracker = { delivered: [], inFlight: [], lastUid: 0, uidValidity: undefined };

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
 * The part of a read that may be sent: UID order, nothing confirmed or in
 * flight, nothing below what was already sent (order), and interim GSOs only
 * when `interimGsos`.
 */
export function takeBatch(t: ItemTracker, items: readonly PendingItem[], interimGsos: boolean): Batch {
  const notes: string[] = [];
  const seen = new Set([...t.delivered, ...t.inFlight.map((i) => itemId(i.handle))]);
  let { lastUid, uidValidity } = t;
  const deliver: PendingItem[] = [];
  const skipped: PendingItem[] = [];
  for (const item of [...items].sort((a, b) => a.handle.uid - b.handle.uid)) {
    const id = itemId(item.handle);
    if (seen.has(id)) {
      notes.push(`item uid ${item.handle.uid} already sent: not sent twice`);
      continue;
    }
    if (uidValidity !== undefined && item.handle.uidValidity !== uidValidity) {
      // RFC 9051 2.3.1.1: a new UIDVALIDITY means a new folder; its UIDs start over
      notes.push(`queue folder recreated (UIDVALIDITY ${uidValidity} -> ${item.handle.uidValidity})`);
      lastUid = 0;
    }
    uidValidity = item.handle.uidValidity;
    if (item.handle.uid <= lastUid) {
      notes.push(`item uid ${item.handle.uid} is older than one already sent: left in the queue (order)`);
      continue;
    }
    seen.add(id);
    if (item.kind === "gso" && !interimGsos) {
      skipped.push(item);
      continue;
    }
    lastUid = item.handle.uid;
    deliver.push(item);
  }
  if (skipped.length) notes.push(`${skipped.length} interim GSO(s) not delivered (delivery.sendInterimGsos off)`);
  // skipped ones count as settled: a read before their ack must not see them as new
  const above = (id: string) => id.split("\n")[1] === uidValidity && Number(id.slice(id.lastIndexOf("\n") + 1)) > lastUid;
  const delivered = [...t.delivered.filter(above), ...skipped.map((i) => itemId(i.handle))];
  return { tracker: { delivered, inFlight: [...t.inFlight, ...deliver], lastUid, uidValidity }, deliver, skipped, notes };
}

/** The client confirmed (or permanently refused) `handle`; `known` false when it was not in flight. */
export function settle(t: ItemTracker, handle: DeferredHandle): { tracker: ItemTracker; known: boolean } {
  const id = itemId(handle);
  const inFlight = t.inFlight.filter((i) => itemId(i.handle) !== id);
  if (inFlight.length === t.inFlight.length) return { tracker: t, known: false };
  // a sent item is at or below lastUid: it is never taken again (takeBatch), no entry needed
  return { tracker: { ...t, inFlight }, known: true };
}
