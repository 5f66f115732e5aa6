// The executor of deferred delivery's actions on the group session itself:
// the PF's BYE to the focus on the group session's dialog, which the PF only
// proxies (src/session/proxied-dialog.ts), through its SIP UA and Kamailio
// (DD-8 ii; the joined client's BYE, 8.2.2.3); the release of the group
// session's anchored media (DD-8 ii); the unsubscription from the focus's
// conference event package; the join of the delivery session with the
// on-going group session and the relay of the client's messages to the CF
// (DD-12, RJ-5). The record's lifecycle is written (left) before a BYE goes out.
import { CpmError } from "../errors/catalogue.js";
import type { Logger } from "../log/logger.js";
import type { JoinedClient } from "../media/anchored-session.js";
import type { GroupSession, SessionDialog } from "../session/group-session.js";
import { type ProxiedDialog, towardsClient, towardsFocus } from "../session/proxied-dialog.js";

/** The PF's SIP UA, as far as this executor uses it (src/sip/ua.ts). */
export interface GroupDialogUa {
  readonly outboundRoute: string;
  bye(dialog: ProxiedDialog, headers?: [string, string][]): Promise<number>;
}

export interface GroupDialogDeps {
  /** The record's lifecycle step (ParticipatingFunction.userLeaves). */
  userLeaves(sessionKey: string): Promise<{ session: GroupSession; dialog: SessionDialog } | undefined>;
  /** The record's lifecycle step (ParticipatingFunction.clientJoined). */
  clientJoined(sessionKey: string): Promise<void>;
  ua: GroupDialogUa;
  /** The media plane (src/media/msrp-media-plane.ts). */
  media: {
    /** 8.3.2.3 2.f; how many resources it freed. */
    release(sessionKey: string): number;
    /** DD-12 / RJ-5; throws CpmError CPM_ERR_MEDIA_NOT_ANCHORED. */
    joinClient(sessionKey: string, client: JoinedClient): void;
    relayToCf(sessionKey: string, m: { contentType: string; body: Buffer; messageId: string }): Promise<number>;
  };
  log: Logger;
}

export interface ByeOutcome {
  /** The focus's final answer to the PF's BYE. */
  focus: number;
  /** The served user's client's answer on the same dialog, when its Contact is known. */
  client?: number;
}

export class GroupDialogs {
  constructor(private readonly deps: GroupDialogDeps) {}

  /**
   * DD-8 ii a: BYE with `reason` to the focus on the group session's dialog;
   * the served user's client, still in that dialog while its MSRP leg is gone,
   * gets one too, so neither end keeps it up. Throws CpmError
   * CPM_ERR_NOT_FOUND when the record holds no confirmed dialog.
   */
  async byeToFocus(sessionKey: string, reason: string): Promise<ByeOutcome> {
    const left = await this.deps.userLeaves(sessionKey);
    if (!left) throw new CpmError("CPM_ERR_NOT_FOUND", `group session ${sessionKey}: no confirmed dialog towards the focus`);
    const headers: [string, string][] = [["Reason", reason]];
    const toFocus = this.viaProxy(towardsFocus(left.session, left.dialog));
    const towardsUser = towardsClient(left.session, left.dialog);
    const [focus, client] = await Promise.all([
      this.deps.ua.bye(toFocus, headers),
      towardsUser ? this.deps.ua.bye(this.viaProxy(towardsUser), headers) : Promise.resolve(undefined),
    ]);
    this.deps.log.info("BYE to the focus for the served user", {
      reason,
      callId: left.dialog.callId,
      conversationId: left.session.conversationId,
      contributionId: left.session.contributionId,
      focus: left.session.focusUri,
      focusStatus: focus,
      clientStatus: client ?? "no client Contact known",
    });
    return client === undefined ? { focus } : { focus, client };
  }

  /** DD-8 ii a: the group session's media resources (anchored legs); how many went. */
  releaseMedia(sessionKey: string): number {
    return this.deps.media.release(sessionKey);
  }

  /** DD-12 / RJ-5: the delivery session's MSRP session becomes the group session's client leg (the CF's messages go to it). */
  async join(sessionKey: string, client: JoinedClient): Promise<void> {
    this.deps.media.joinClient(sessionKey, client);
    await this.deps.clientJoined(sessionKey);
  }

  /** DD-12 / RJ-5: a message of the joined client to the CF; resolves with the CF's code. */
  relayToCf(sessionKey: string, m: { contentType: string; body: Buffer; messageId: string }): Promise<number> {
    return this.deps.media.relayToCf(sessionKey, m);
  }

  /**
   * DD-8 ii b: the PF's own subscription to the focus's conference event
   * package ends with an in-dialog SUBSCRIBE, Expires: 0. The PF holds none
   * (the participants come from the client's NOTIFYs, which the PF
   * observes): false, and the caller logs it.
   */
  unsubscribe(_sessionKey: string): Promise<boolean> {
    return Promise.resolve(false);
  }

  /** The request goes through Kamailio first: the UA's outbound Route before the dialog's route set. */
  private viaProxy(d: ProxiedDialog): ProxiedDialog {
    return { ...d, routeSet: [this.deps.ua.outboundRoute, ...d.routeSet] };
  }
}
