// What the PF knows of one CPM group session, keyed by the Call-ID of the
// dialog that passes through Kamailio. Built from the INVITE (RFC 5366
// resource-list, Conversation-ID, Contribution-ID, Subject, the focus Contact
// with `isfocus`, RFC 4579 3.4), its 2xx, and the focus's conference-event
// NOTIFYs (RFC 4575).
import type { Participant } from "../xml/gso.js";

export interface GroupSession {
  /** Call-ID of the dialog through the PF. */
  key: string;
  conversationId: string;
  contributionId: string;
  /** The focus URI (Contact with `isfocus`): the GSO's lastfocussessionid. */
  focusUri: string;
  /** Tag of the Controlling Function's side of the dialog: a BYE with this From-tag comes from the network. */
  networkTag: string;
  /** The served user's address (mailbox owner; GSO `To`). */
  servedUser: string;
  groupType: "Open" | "Closed";
  subject: string | undefined;
  icon: string | undefined;
  /** Latest list of known Participants (8.3.2.3 2.b.ii). */
  participants: Participant[];
  /** Last conference-info version applied (RFC 4575 4.1). */
  conferenceVersion: number;
  /** The SDP offer of the original invitation (8.3.2.9.1.2 b). */
  sdpOffer: string;
  state: "active" | "ended";
  createdAt: number;
  updatedAt: number;
}
