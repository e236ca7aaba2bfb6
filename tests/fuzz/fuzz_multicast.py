"""Target: multicast datagrams (``MulticastTransport.open_datagram``).

A receiver in a group, and two senders: a member of the same group and a member of another
group. Each datagram is the fuzzer's bytes, or a member's real datagram carrying the fuzzer's
packet (addressed to us, to everyone, or to someone else), maybe altered or replayed. The
receiver documents that ``open_datagram`` is total: it returns ``(sender, packet)`` or None and
never raises. A packet it returns must be the one the member sealed, and a frame.
"""

from __future__ import annotations

from mvds_node.transports._framing import decode_frame
from mvds_node.transports._multicast import BROADCAST, MulticastTransport
from tests.fuzz._support import GROUP_KEY, Input, keypair, seed_bytes

MAX_LEN = 4096
RECEIVER = keypair("node")
MEMBER = keypair("peer")
OTHER = keypair("other")


def _transport(node_id: bytes, group_key: bytes) -> MulticastTransport:
    return MulticastTransport(node_id, group_key, event_queue_size=1024)


def TestOneInput(data: bytes) -> None:
    fdp = Input(data)
    receiver = _transport(RECEIVER.public, GROUP_KEY)
    member = _transport(MEMBER.public, GROUP_KEY)
    foreign = _transport(OTHER.public, seed_bytes("other-group-key"))
    sent: list[bytes] = []
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        choice = fdp.ConsumeIntInRange(0, 4)
        if choice == 0:
            datagram = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1500))
            expected = None
        elif choice == 3 and sent:
            datagram = sent[fdp.ConsumeIntInRange(0, len(sent) - 1)]  # a replay
            expected = None
        else:
            sender = foreign if choice == 4 else member
            to = (RECEIVER.public, BROADCAST, OTHER.public)[fdp.ConsumeIntInRange(0, 2)]
            packet = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, sender.max_payload))
            datagram = sender.seal(to, packet)
            sent.append(datagram)
            expected = packet
            if fdp.ConsumeBool():
                altered = bytearray(datagram)
                altered[fdp.ConsumeIntInRange(0, len(altered) - 1)] ^= fdp.ConsumeIntInRange(1, 255)
                datagram = bytes(altered)
                expected = None
        opened = receiver.open_datagram(datagram, "127.0.0.1:7701")
        if opened is None:
            continue
        sender_key, packet = opened
        if sender_key != MEMBER.public or (expected is not None and packet != expected):
            raise AssertionError("open_datagram returned a packet no member sent")
        decode_frame(packet)  # it said this is a frame
    receiver.events.close()
