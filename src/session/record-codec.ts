// A group session record as stored (JSON), in the journal and in Redis alike:
// records written before the lifecycle existed are upgraded; anything that
// is not a record is refused (the store logs it and skips it).
import type { GroupSession, Lifecycle, SessionDialog } from "./group-session.js";

/** A record as an older sidecar wrote it: `state` instead of the lifecycle, no dialogs. */
export type LegacyRecord = Omit<
  GroupSession,
  "lifecycle" | "lifecycleAt" | "dialogs" | "pendingDeferred" | "endCause" | "conferenceFactoryUri"
> & {
  state?: "active" | "ended";
} & Partial<GroupSession>;

export function upgrade(s: LegacyRecord): GroupSession {
  if (s.lifecycle !== undefined && Array.isArray(s.dialogs)) return s as GroupSession;
  const lifecycle: Lifecycle = s.lifecycle ?? (s.state === "ended" ? "inactive" : "active");
  const dialog: SessionDialog = {
    callId: s.key,
    cfTag: s.networkTag,
    clientTag: "",
    remoteTarget: s.focusUri,
    routeSet: [],
    inviteCseq: 1,
    clientInstance: "",
    state: lifecycle === "active" ? "confirmed" : "terminated",
  };
  const { state: _legacy, ...rest } = s;
  return {
    ...rest,
    conferenceFactoryUri: s.conferenceFactoryUri ?? "",
    lifecycle,
    lifecycleAt: s.lifecycleAt ?? s.updatedAt,
    endCause: s.endCause,
    pendingDeferred: s.pendingDeferred ?? true,
    dialogs: s.dialogs ?? [dialog],
  };
}

export function isRecord(s: unknown): s is LegacyRecord {
  const v = s as GroupSession | null;
  return (
    typeof v === "object" &&
    v !== null &&
    typeof v.key === "string" &&
    typeof v.conversationId === "string" &&
    typeof v.contributionId === "string" &&
    Array.isArray(v.participants)
  );
}

/** The record in `text` (JSON), upgraded; throws on anything that is not a record. */
export function decodeRecord(text: string): GroupSession {
  const s: unknown = JSON.parse(text);
  if (!isRecord(s)) throw new Error("not a session record");
  return upgrade(s);
}
