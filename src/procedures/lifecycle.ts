// The group session record's lifecycle (see src/session/group-session.ts).
// Pure: record + event in, the new record (or a purge) and the transition
// out. Written by the PF for every event of a group session, so each log
// line can name the transition and a record is removed only here: by the
// retention policy, or when an INVITE that never became a dialog leaves it
// empty; never as a side effect of a BYE or a fail-safe.
import { type DeliveredThrough, type GroupSession, type Lifecycle, type SessionDialog, withDialog } from "../session/group-session.js";
import { seenChanges, withDeliveredThrough, withDelivering, withoutDelivering, withSeenDevice } from "./device-view.js";
import type { ByeCause } from "./handle-bye.js";

export type LifecycleEvent =
  /**
   * An initial INVITE of the group session passed the PF (a new dialog:
   * creation, re-join, re-start); `focusUri`: the focus its 2xx named, when
   * it changed (a re-start via the conference factory, DD-13).
   */
  | { type: "invited"; dialog: SessionDialog; focusUri?: string }
  /** Its 2xx: the dialog is confirmed. */
  | { type: "answered"; callId: string; clientTag: string; clientInstance: string }
  /** A final non-2xx, CANCEL or timeout of that INVITE. */
  | { type: "inviteFailed"; callId: string; status: number }
  /** The media plane stored an item in the deferred queue: the client leg is absent. */
  | { type: "deferred" }
  /** 8.3.2.3: a BYE from the network side, with the class of its reason-cause. */
  | { type: "networkBye"; callId: string; cause: ByeCause; reasonCause: number }
  /** The served user's client ended the dialog (8.2.2.3). */
  | { type: "clientBye"; callId: string }
  /** The PF ends the dialog for the served user, who declined the deferred delivery (DD-8 ii: its BYE to the focus). */
  | { type: "userLeft"; callId: string }
  /** A delivery session of the served user's client joined the on-going group session (DD-12, RJ-5): the client is there again. */
  | { type: "clientJoined" }
  /** Deferred delivery emptied or discarded the session's queue (DD-8, DD-10, DD-14). */
  | { type: "queueSettled" }
  /** DD-1 per device: a device of the served user registered (or re-joined) while data was pending: a member of the queue (device-view.ts). */
  | { type: "deviceSeen"; keyword: string }
  | { type: "deviceDelivered"; keyword: string; through: DeliveredThrough }
  /** A registration's delivery of the group session to the device began (to `contact`), or ended: an interrupted one is resumed (see SeenDevice.delivering). */
  | { type: "deliveryBegan"; keyword: string; contact: string; instanceId?: string }
  | { type: "deliveryEnded"; keyword: string }
  /** The PF answered the CF's in-dialog request of `callId` with this CSeq for the client (a session refresh). */
  | { type: "cfRequest"; callId: string; cseq: number };

export interface LifecycleStep {
  /** The new record; undefined: purge it. */
  record: GroupSession | undefined;
  /** Set when the lifecycle changed. */
  transition?: { from: Lifecycle; to: Lifecycle };
  notes: string[];
}

export interface RetentionPolicy {
  /** Terminated / left records with no pending data are kept this long after they ended (ms). */
  retentionMs: number;
  /** Records of groups that may come back (active, client absent, inactive) without pending data are kept this long after their last event (ms). */
  inactiveRetentionMs: number;
}

/** 8.3.2.3 2.b: where a network BYE leaves the group session. */
export function lifecycleAfterBye(cause: ByeCause): Lifecycle {
  switch (cause) {
    case "participant-left":
      return "left"; // 2.a / 2.b.i
    case "terminated":
      return "terminated"; // 2.b.ii: no long-lived re-start
    case "inactivity":
    case "network":
      return "inactive"; // 2.b.iii and "other": may be re-started
  }
}

function withLifecycle(s: GroupSession, to: Lifecycle, now: number, notes: string[] = []): LifecycleStep {
  if (s.lifecycle === to) return { record: { ...s, updatedAt: now }, notes };
  return { record: { ...s, lifecycle: to, lifecycleAt: now, updatedAt: now }, transition: { from: s.lifecycle, to }, notes };
}

function setDialog(s: GroupSession, callId: string, change: Partial<SessionDialog>): SessionDialog[] {
  return s.dialogs.map((d) => (d.callId === callId ? { ...d, ...change } : d));
}

export function stepLifecycle(s: GroupSession, ev: LifecycleEvent, now: number): LifecycleStep {
  switch (ev.type) {
    case "invited": {
      // a new dialog of a known group (re-join, re-start) makes it active again
      const dialogs = withDialog(s.dialogs, ev.dialog);
      // the new dialog's CF tag (when known) tells its network BYE from the client's
      const networkTag = ev.dialog.cfTag || s.networkTag;
      // the GSOs stored from now on carry it as lastfocussessionid
      const focusUri = ev.focusUri || s.focusUri;
      return withLifecycle({ ...s, dialogs, key: ev.dialog.callId, networkTag, focusUri, endCause: undefined }, "active", now);
    }
    case "answered":
      return {
        record: {
          ...s,
          dialogs: setDialog(s, ev.callId, { state: "confirmed", clientTag: ev.clientTag, clientInstance: ev.clientInstance }),
          updatedAt: now,
        },
        notes: [],
      };
    case "inviteFailed": {
      const dialogs = s.dialogs.filter((d) => d.callId !== ev.callId);
      const everUp = dialogs.some((d) => d.state !== "early") || s.lifecycle !== "active" || s.pendingDeferred;
      if (!everUp) return { record: undefined, notes: [`INVITE answered ${ev.status}: the group session never started`] };
      // a re-join or re-start that failed: the group is where it was before it
      const back: Lifecycle = dialogs.some((d) => d.state === "confirmed")
        ? s.lifecycle
        : s.lifecycle === "active"
          ? "inactive"
          : s.lifecycle;
      const current = dialogs.find((d) => d.state !== "terminated") ?? dialogs.at(-1);
      return withLifecycle({ ...s, dialogs, key: current?.callId ?? s.key }, back, now, [`INVITE answered ${ev.status}`]);
    }
    case "deferred":
      if (s.lifecycle !== "active" && s.pendingDeferred) return { record: s, notes: [] };
      return withLifecycle({ ...s, pendingDeferred: true }, s.lifecycle === "active" ? "client-absent" : s.lifecycle, now);
    case "networkBye": {
      const to = lifecycleAfterBye(ev.cause);
      return withLifecycle({ ...s, dialogs: setDialog(s, ev.callId, { state: "terminated" }), endCause: ev.reasonCause }, to, now);
    }
    case "clientBye":
    case "userLeft":
      return withLifecycle({ ...s, dialogs: setDialog(s, ev.callId, { state: "terminated" }) }, "left", now);
    case "clientJoined":
      return s.lifecycle === "client-absent" ? withLifecycle(s, "active", now) : { record: s, notes: [`clientJoined in ${s.lifecycle}`] };
    case "queueSettled":
      // the devices seen were members of what was pending; the next deferred data starts a new membership
      return { record: { ...s, pendingDeferred: false, devices: undefined, updatedAt: now }, notes: [] };
    case "deviceSeen":
      if (!s.pendingDeferred) return { record: s, notes: ["deviceSeen with no data pending: not a member of anything"] };
      if (!seenChanges(s.devices, ev.keyword, now)) return { record: s, notes: [] };
      return { record: { ...s, devices: withSeenDevice(s.devices, ev.keyword, now), updatedAt: now }, notes: [] };
    case "deviceDelivered": {
      if (!s.pendingDeferred) return { record: s, notes: ["deviceDelivered with no data pending: nothing to remember"] };
      const devices = withDeliveredThrough(s.devices, ev.keyword, ev.through, now);
      return devices ? { record: { ...s, devices, updatedAt: now }, notes: [] } : { record: s, notes: [] };
    }
    case "deliveryBegan": {
      if (!s.pendingDeferred) return { record: s, notes: ["deliveryBegan with no data pending: nothing to resume"] };
      const to = { contact: ev.contact, ...(ev.instanceId ? { instanceId: ev.instanceId } : {}), since: now };
      return { record: { ...s, devices: withDelivering(s.devices, ev.keyword, to, now), updatedAt: now }, notes: [] };
    }
    case "deliveryEnded": {
      const devices = withoutDelivering(s.devices, ev.keyword);
      return devices ? { record: { ...s, devices, updatedAt: now }, notes: [] } : { record: s, notes: [] };
    }
    case "cfRequest": {
      const d = s.dialogs.find((x) => x.callId === ev.callId);
      if (!d || ev.cseq <= (d.cfCseq ?? d.inviteCseq)) return { record: s, notes: [] };
      return { record: { ...s, dialogs: withDialog(s.dialogs, { ...d, cfCseq: ev.cseq }), updatedAt: now }, notes: [] };
    }
  }
}

/** The retention policy: when the record may be purged (never while data is pending). */
export function purgeAt(
  s: Pick<GroupSession, "pendingDeferred" | "lifecycle" | "lifecycleAt" | "updatedAt">,
  policy: RetentionPolicy,
): number {
  if (s.pendingDeferred) return Number.POSITIVE_INFINITY;
  if (s.lifecycle === "terminated" || s.lifecycle === "left") return s.lifecycleAt + policy.retentionMs;
  return s.updatedAt + policy.inactiveRetentionMs;
}

export function shouldPurge(s: GroupSession, now: number, policy: RetentionPolicy): boolean {
  return now > purgeAt(s, policy);
}
