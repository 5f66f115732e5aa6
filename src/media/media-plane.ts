// Seam between the SIP procedures and the MSRP media plane (RFC 4975).
// src/pf and src/grpc only see this interface; src/media/msrp-media-plane.ts
// implements it with the MSRP stack of src/msrp, and `NoMediaPlane` is the PF
// that stays out of the media path (proxy-only deployments, unit tests).
import { CpmError } from "../errors/catalogue.js";
import type { SetupAttribute } from "../msrp/setup.js";
import type { GroupSessionRef } from "./ports.js";

/** One MSRP endpoint of the PF, as it goes into an SDP (RFC 4975 8.1). */
export interface MediaLeg {
  host: string;
  port: number;
  /** The PF's complete a=path value for this leg (one msrp:// or msrps:// URI). */
  path: string;
  setup: SetupAttribute;
  tls: boolean;
}

/**
 * Who sent the INVITE whose offer is anchored: "network" = the Controlling
 * Function (focus) invites the served user; "client" = the served user's
 * client creates or joins the group chat (INVITE towards the conference
 * factory / focus, whose 2xx carries Contact ;isfocus).
 */
export type Offerer = "network" | "client";

export interface AnchorOfferRequest {
  session: GroupSessionRef;
  /** The SDP offer of the INVITE (from the Controlling Function, or from the client when `offerer` is "client"). */
  offerSdp: string;
  /** Default "network". */
  offerer?: Offerer;
  /** The session's allow-offline-storage (CPM); with config `recording` it enables 8.5.2 recording (BYE-B8). */
  allowOfflineStorage: boolean;
}

/**
 * Field names are those of the CF-initiated flow (and of the gRPC contract's
 * client_body / cf_leg); what they mean is "towards the INVITE's recipient"
 * and "facing the INVITE's sender".
 */
export interface AnchorOfferResult {
  /**
   * The SDP offer to send on with the INVITE: a=path, port and c= of the PF's
   * client-facing leg (offerer "network"), or of its CF-facing leg (offerer
   * "client", a=setup:actpass towards the CF).
   */
  clientOfferSdp: string;
  /**
   * The PF's leg facing the INVITE's sender, what the 2xx answer going back
   * to it must carry: the CF-facing leg (offerer "network"), the
   * client-facing leg (offerer "client").
   */
  cfLeg: MediaLeg;
}

/** What an SDP answer revealed of the session besides the path (client-initiated: the focus). */
export interface AnswerFacts {
  /** The focus URI (the 2xx's Contact ;isfocus): replaces the provisional one of the session's ref. */
  focus?: string;
  /**
   * BYE-B7, CF-initiated: the answering device's key, the 2xx's To tag; what
   * releaseDevice() names its client leg with. Default "".
   */
  deviceKey?: string;
}

/** What the SIP side knows of the session when it is recorded (8.5.2 session-info object). */
export interface RecordFacts {
  /** The latest participants (URIs). Default: none. */
  participants?: string[];
  subject?: string;
}

export interface MediaPlane {
  /** Anchors a new group session: allocates both legs, returns the SDP for the client side. */
  anchorOffer(req: AnchorOfferRequest): Promise<AnchorOfferResult>;
  /**
   * The SDP answer of the INVITE's recipient (its 2xx): the client's (offerer
   * "network") or the CF's (offerer "client"); learns that peer's path and
   * returns the SDP answer for the INVITE's sender.
   */
  anchorAnswer(sessionKey: string, answerSdp: string, facts?: AnswerFacts): string;
  /**
   * BYE-B7: a further device of the served user answered the forked
   * CF-initiated INVITE `sessionKey` with 2xx (`deviceKey`: that 2xx's To
   * tag; the SIP side forwards only the first 2xx, to anchorAnswer()). The
   * device gets a client leg of its own, towards its a=path, with the role its
   * a=setup answers the PF's actpass with (RFC 6135 4.1); it may come before
   * or after anchorAnswer(), and again (a retransmitted 2xx: nothing more).
   * Throws CpmError CPM_ERR_MEDIA_NOT_ANCHORED (unknown or client-initiated
   * session), CPM_ERR_BAD_SDP.
   */
  addDevice(sessionKey: string, deviceKey: string, answerSdp: string): void;
  /** BYE-B7: device `deviceKey` left (its BYE): its client leg is released, the rest of the session goes on; returns how many resources were released. */
  releaseDevice(sessionKey: string, deviceKey: string): number;
  /** 8.3.2.3 2.b.iv: MSRP SEND/IMDN from the clients on this session get 481 from now on. */
  refuseClientMedia(sessionKey: string): void;
  /** 8.3.2.3 2.d: record the CPM session (8.5.2) when allow-offline-storage or recording is on. */
  recordSession(sessionKey: string, facts?: RecordFacts): Promise<boolean>;
  /** 8.3.2.3 2.f: release sockets, timers, buffers, table entries; returns how many were released. */
  release(sessionKey: string): number;
  /** Whether the session holds media (anchored legs) that release() would free. */
  holds(sessionKey: string): boolean;
}

/** The PF out of the media path: nothing to anchor, refuse, record or release. */
export class NoMediaPlane implements MediaPlane {
  async anchorOffer(): Promise<AnchorOfferResult> {
    throw new CpmError("CPM_ERR_MEDIA_DISABLED", "media.enabled=false");
  }
  anchorAnswer(): string {
    throw new CpmError("CPM_ERR_MEDIA_DISABLED", "media.enabled=false");
  }
  addDevice(): void {
    throw new CpmError("CPM_ERR_MEDIA_DISABLED", "media.enabled=false");
  }
  releaseDevice(): number {
    return 0;
  }
  refuseClientMedia(): void {}
  async recordSession(): Promise<boolean> {
    return false;
  }
  release(): number {
    return 0;
  }
  holds(): boolean {
    return false;
  }
}
