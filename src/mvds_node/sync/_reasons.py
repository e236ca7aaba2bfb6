"""Why input was refused: the fixed reasons of ``PayloadRejected`` and of the node's refusals.

A :class:`RejectReason` is a ``str`` whose value is the text reported before it existed, so JSON,
logs and comparisons with the text read as they did; code names the member instead of copying the
sentence. Reasons that carry a measure of the input (``payload of N bytes exceeds M``, ``N records
exceed M per payload``) stay formatted text: the numbers are the point of them.
"""

from __future__ import annotations

import enum
from typing import final

__all__ = ["RejectReason"]


@final
class RejectReason(enum.StrEnum):
    """A stable reason a payload, a record or a packet was refused."""

    # --- the engine (PayloadRejected.reason) -------------------------------------------------
    NOT_A_MEMBER = "peer is not a member of any group"
    """A payload from a peer that shares no group with us, refused whole."""
    REQUEST_NOT_HELD = "request for a message we do not hold"
    REQUEST_OUTSIDE_GROUP = "request from a peer outside the message's group"
    MESSAGE_UNKNOWN_GROUP = "message for a group we do not sync"
    MESSAGE_OUTSIDE_GROUP = "message from a peer outside its group"
    NEGATIVE_EXPIRY = "negative expiry"
    SELF_PARENT = "message names itself as parent"
    PARENT_ID_SIZE = "parent id not 32 bytes"
    PEER_FULL = (
        "offers and parents ignored: too many outstanding requests to this peer "
        "(Limits.max_requests_per_peer); reported once until half of them are answered"
    )
    GROUP_FULL = (
        "parents ignored: too many outstanding requests for missing parents in this group "
        "(Limits.max_requests_per_group); reported once until half of them are answered"
    )
    TOTAL_FULL = (
        "offers and parents ignored: too many outstanding requests in all "
        "(Limits.max_pending_requests); reported once until half of them are answered"
    )
    OFFERS_UNANSWERED = "offered messages not sent when requested (SyncConfig.request_timeout)"
    PARENTS_UNANSWERED = (
        "named parents nobody sent; gave up on them (SyncConfig.missing_parent_timeout)"
    )

    # --- the engine's validator (the node's envelopes), per message -----------------------
    BAD_SIGNATURE = "bad-signature"
    """A signed envelope whose signature does not verify against its author's key."""
    UNKNOWN_AUTHOR = "unknown-author"
    """A signed envelope by a key that is not a member's of the group (nor ours)."""
    UNSIGNED = "unsigned"
    """A message without an envelope in a group whose envelope is ``signed``."""
    ENVELOPE_MALFORMED = "envelope-malformed"
    """An envelope that opens like ours but whose bytes are damaged (lengths, version)."""

    # --- the node (InputRejected.reason, beside the carriers' tokens) ------------------------
    NOSYNC_NOT_MEMBER = "nosync-not-member"
    """An ephemeral (NOSYNC) message for a group the sender is not in with us."""
    REMOTE_LOG = "remote-log"
    """A remote log's head, page or record is forged, rolled back or malformed."""
