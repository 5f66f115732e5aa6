// DD-10: how far a device has confirmed a delivery's items without a gap.
// The delivery reads items in UID order and the device confirms them (MSRP
// 200) in about that order; the UID below which every item read is
// confirmed is what the group session record keeps for the device
// (SeenDevice.deliveredThrough), so that a delivery taking over after a crash
// marks those items and does not send them again. Pure: the delivery
// service feeds it what was read and what was confirmed.
import type { DeliveredThrough } from "../session/group-session.js";

export interface ConfirmedPrefix {
  uidValidity: string | undefined;
  /** UIDs read and not yet passed by `through`, ascending. */
  open: readonly number[];
  /** Of `open`, those confirmed (ahead of an older one still out). */
  confirmed: ReadonlySet<number>;
  /** Every item read up to this UID is confirmed (0: none). */
  through: number;
}

export const noConfirmedPrefix: ConfirmedPrefix = { uidValidity: undefined, open: [], confirmed: new Set(), through: 0 };

interface Handle {
  uidValidity: string;
  uid: number;
}

/**
 * Items read for delivery, each once (an item the delivery cannot send is
 * read too: it is never confirmed, so `through` stops before it). Another
 * UIDVALIDITY starts over: the old UIDs name nothing any more.
 */
export function itemsRead(p: ConfirmedPrefix, items: readonly Handle[]): ConfirmedPrefix {
  let cur = p;
  for (const h of items) {
    if (cur.uidValidity !== h.uidValidity) cur = { ...noConfirmedPrefix, uidValidity: h.uidValidity };
    if (h.uid <= cur.through || cur.open.includes(h.uid)) continue;
    const open = [...cur.open, h.uid];
    if (open.length > 1 && (open.at(-2) ?? 0) > h.uid) open.sort((a, b) => a - b);
    cur = { ...cur, open };
  }
  return cur;
}

/** Items the device confirmed (or that leave its view otherwise): `through` moves past every confirmed item with none still out below it. */
export function itemsConfirmed(p: ConfirmedPrefix, items: readonly Handle[]): { prefix: ConfirmedPrefix; moved?: DeliveredThrough } {
  const confirmed = new Set(p.confirmed);
  for (const h of items) if (h.uidValidity === p.uidValidity && p.open.includes(h.uid)) confirmed.add(h.uid);
  let i = 0;
  while (i < p.open.length && confirmed.has(p.open[i] as number)) confirmed.delete(p.open[i++] as number);
  if (i === 0) return { prefix: { ...p, confirmed } };
  const through = p.open[i - 1] as number;
  const prefix = { ...p, open: p.open.slice(i), confirmed, through };
  return { prefix, moved: { uidValidity: p.uidValidity as string, uid: through } };
}
