// The index from every dialog's Call-ID to its record id, shared by the record
// stores: a record names its current dialog (`key`) and its dialogs; a record
// drops its oldest ended dialogs (group-session.ts withDialog), and their
// Call-IDs leave the index. A Call-ID another record took since stays that one's.
import type { GroupSession } from "./group-session.js";

type Dialogs = Pick<GroupSession, "key" | "dialogs">;

/** The Call-IDs a record is found by: its current dialog's and every dialog's. */
export function callIdsOf(s: Dialogs): string[] {
  return [...new Set([s.key, ...s.dialogs.map((d) => d.callId)])];
}

export class CallIdIndex {
  private readonly byCallId = new Map<string, string>();

  get(callId: string): string | undefined {
    return this.byCallId.get(callId);
  }

  /** Record `id` is now found by `after`; `before` are the Call-IDs it was found by (those it dropped leave the index). */
  replace(id: string, before: readonly string[] | undefined, after: readonly string[]): void {
    if (before) {
      const keep = new Set(after);
      for (const c of before) if (!keep.has(c) && this.byCallId.get(c) === id) this.byCallId.delete(c);
    }
    for (const c of after) this.byCallId.set(c, id);
  }

  /** Record `id` is gone: its Call-IDs leave the index, unless another record took one since. */
  remove(id: string, callIds: Iterable<string>): void {
    for (const c of callIds) if (this.byCallId.get(c) === id) this.byCallId.delete(c);
  }

  clear(): void {
    this.byCallId.clear();
  }
}
