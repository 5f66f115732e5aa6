// What the MSRP media plane needs from the Message Store, as interfaces: src/media
// stays free of IMAP, src/store free of MSRP. src/store implements them
// (deferred-queue.ts, session-record.ts); main.ts wires the two together.

/** Identity of one group session as the PF serves it. */
export interface GroupSessionRef {
  /** PF session key: the dialog's Call-ID (same key as HandleBye's). */
  sessionKey: string;
  /** The served user's address (URI). */
  servedUser: string;
  /** CPM Conversation-ID and Contribution-ID of the group session. */
  conversationId: string;
  contributionId: string;
  /**
   * The group session's focus URI (the Controlling Function). For a
   * client-initiated session the INVITE's Request-URI (conference factory)
   * until the CF's 2xx names the focus (MediaPlane.anchorAnswer updates it).
   */
  focus: string;
}

/** What an MSRP message from the CF carries (decided from the CPIM payload's content type). */
export type DeferredKind = "message" | "imdn" | "gso";

/** One complete MSRP message from the CF leg, kept while the served user's client leg is absent. */
export interface DeferredItem {
  kind: DeferredKind;
  /** The MSRP Content-Type, e.g. `message/cpim`. */
  contentType: string;
  /** The complete MSRP message body, byte for byte as received (chunks reassembled). */
  body: Uint8Array;
  /** The MSRP Message-ID (RFC 4975 7.1.1): at-least-once storage dedupes on it. */
  msrpMessageId: string;
  receivedAt: Date;
}

/** The deferred-messages queue, written by the media plane. */
export interface DeferredSink {
  /**
   * Resolves once `item` is durably stored (IMAP APPEND done, or in the durable
   * local spool); the CF's SEND gets its 200 only after that. Items of one
   * session are stored in call order.
   */
  storeDeferred(session: GroupSessionRef, item: DeferredItem): Promise<void>;
}

/** One message the PF relayed during a session, for OMA CPM 8.5.2 Record CPM Session. */
export interface RecordedMessage {
  /** "from-network": CF -> client; "from-client": client -> CF. */
  direction: "from-network" | "from-client";
  contentType: string;
  body: Uint8Array;
  msrpMessageId: string;
  at: Date;
}

export interface RecordedSessionInfo {
  startedAt: Date;
  endedAt: Date;
  participants: string[];
  subject?: string;
}

/** OMA CPM 8.5.2 "Record CPM Session" (BYE-B8). */
export interface SessionRecorder {
  /** Stores the session's messages as message/cpim objects and one Application/X-CPM-Session object. */
  recordSession(session: GroupSessionRef, info: RecordedSessionInfo, messages: readonly RecordedMessage[]): Promise<void>;
}
