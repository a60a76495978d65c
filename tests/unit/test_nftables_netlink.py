"""The netlink encoder: the bytes nft 1.0.6 sends for the same elements, and how answers are
read. (tests/integration/test_nftables.py writes through it to a real kernel.)"""

from __future__ import annotations

import errno
import socket
import struct
from typing import cast

import pytest

from dockwall.backends.nftables import netlink
from dockwall.backends.nftables.netlink import SetChange, Unsupported
from dockwall.errors import BackendError

V6_1 = bytes.fromhex("20010db8000000000000000000000001")
V6_2 = bytes.fromhex("20010db8000000000000000000000002")


def key(value: bytes, kind: int = 1) -> bytes:
    """NFTA_SET_ELEM_KEY (or _KEY_END) holding NFTA_DATA_VALUE."""
    inner = struct.pack("=HH", 4 + len(value), 1) + value + bytes(-len(value) % 4)
    return struct.pack("=HH", 4 + len(inner), kind | 0x8000) + inner


def elem(*attrs: bytes) -> bytes:
    body = b"".join(attrs)
    return struct.pack("=HH", 4 + len(body), 0x8001) + body


END = struct.pack("=HHI", 8, 3, 0x01000000)  # NFTA_SET_ELEM_FLAGS: interval end (big endian)


def test_a_host_in_an_interval_set_is_its_address_and_the_next_flagged_as_end() -> None:
    """As `strace nft add element inet t c { 2001:db8::1 }` shows (type ipv6_addr, flags
    interval), but for nft's zero-key end element in front, which it sends only when the
    set looks empty to it and which no kernel needs."""
    assert netlink._element("ipv6_addr", "2001:db8::1", adding=True) == [
        elem(key(V6_1)),
        elem(END, key(V6_2)),
    ]
    assert netlink._element("ipv6_addr", "2001:db8::1", adding=False) == [
        elem(key(V6_1)),
        elem(END, key(V6_2)),
    ]


def test_ranges_prefixes_and_the_top_of_a_field() -> None:
    prefix = netlink._element("ipv4_addr", "10.0.1.0/24", adding=True)
    assert prefix == [elem(key(bytes([10, 0, 1, 0]))), elem(END, key(bytes([10, 0, 2, 0])))]
    ports = netlink._element("inet_service", "1000-2000", adding=True)
    assert ports == [elem(key(bytes.fromhex("03e8"))), elem(END, key(bytes.fromhex("07d1")))]
    assert netlink._element("ipv4_addr", "255.255.255.255", adding=True) == [
        elem(key(bytes([255] * 4)))
    ]
    assert netlink._element("inet_service", "65535", adding=False) == [elem(key(b"\xff\xff"))]


def test_a_concatenation_has_first_and_last_values_with_fields_padded_to_4_bytes() -> None:
    """As `nft --debug=netlink` shows: `element 0100000a 00005000 - 0100000a 00005000`."""
    one = bytes.fromhex("0a00000100500000")
    assert netlink._element("ipv4_addr . inet_service", "10.0.0.1 . 80", adding=True) == [
        elem(key(one), key(one, 10))
    ]
    assert netlink._element("ipv4_addr . inet_service", "10.0.0.1 . 80", adding=False) == [
        elem(key(one))
    ]
    low, high = bytes.fromhex("0a00000003e80000"), bytes.fromhex("0a0000ff07d00000")
    for adding in (True, False):
        found = netlink._element("ipv4_addr . inet_service", "10.0.0.0/24 . 1000-2000", adding)
        assert found == [elem(key(low), key(high, 10))]
    six = netlink._element("ipv6_addr . inet_service", "2001:db8::1 . 443", adding=True)
    assert six == [
        elem(key(V6_1 + bytes.fromhex("01bb0000")), key(V6_1 + bytes.fromhex("01bb0000"), 10))
    ]


@pytest.mark.parametrize(
    ("type_", "element"),
    [
        ("ipv4_addr", "2001:db8::1"),
        ("ipv6_addr", "192.0.2.1"),
        ("ipv4_addr", "192.0.2.1 . 80"),
        ("inet_service", "80-70"),
        ("inet_service", "65536"),
        ("ipv4_addr", "192.0.2.1/24"),  # host bits set: not canonical
        ("ether_addr", "00:11:22:33:44:55"),
        ("ipv4_addr : verdict", "192.0.2.1"),
    ],
)
def test_what_it_cannot_write_is_refused_before_anything_is_sent(type_: str, element: str) -> None:
    with pytest.raises(Unsupported):
        netlink.batch("dockwall", [SetChange("s", type_, (), (element,))])


def messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, seq, body) of each message in a batch."""
    found, offset = [], 0
    while offset < len(data):
        length, kind, flags, seq, _ = struct.unpack_from("=IHHII", data, offset)
        found.append((kind, flags, seq, data[offset + 16 : offset + length]))
        offset += (length + 3) & ~3
    return found


def test_one_batch_deletions_first_each_message_acknowledged() -> None:
    changes = [
        SetChange("dst4-web", "ipv4_addr", ("192.0.2.2",), ("192.0.2.9",)),
        SetChange("dst6-web", "ipv6_addr", ("2001:db8::1",), ()),
    ]
    data, acked = netlink.batch("dockwall", changes, first_seq=7)
    found = messages(data)
    assert [(k, f, s) for k, f, s, _ in found] == [
        (0x10, 0x1, 7),  # batch begin
        (0x0A0E, 0x5, 8),  # delete from dst4-web: request, ack
        (0x0A0E, 0x5, 9),
        (0x0A0C, 0x405, 10),  # add to dst4-web: request, ack, create
        (0x11, 0x1, 11),  # batch end
    ]
    assert found[0][3] == b"\x00\x00\x00\x0a"  # AF_UNSPEC, version 0, res_id nftables
    assert found[1][3].startswith(b"\x01\x00\x00\x00" + struct.pack("=HH", 13, 1) + b"dockwall\0")
    assert acked == {
        8: "delete from set dst4-web",
        9: "delete from set dst6-web",
        10: "add to set dst4-web",
    }


def test_many_elements_are_split_over_messages_of_one_batch() -> None:
    hosts = tuple(f"10.0.{i // 250}.{i % 250 + 1}" for i in range(4000))
    data, acked = netlink.batch("dockwall", [SetChange("big", "ipv4_addr", (), hosts)])
    assert len(acked) > 1 and all(len(body) < 65535 for *_, body in messages(data))


def ack(seq: int, error: int = 0) -> bytes:
    request = struct.pack("=IHHII", 20, 0x0A0C, 5, seq, 0)
    return struct.pack("=IHHII", 36, 2, 0x100, seq, 1) + struct.pack("=i", error) + request


class FakeSocket:
    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers

    def recv(self, size: int) -> bytes:
        return self.answers.pop(0)


def wait(answers: list[bytes], acked: dict[int, str], begin: int = 1) -> None:
    netlink._await(cast(socket.socket, FakeSocket(answers)), acked, begin)


def test_answers_every_message_acknowledged_is_done() -> None:
    wait([ack(2) + ack(3)], {2: "x", 3: "y"})
    wait([ack(2), ack(5, -errno.ENOENT), ack(3)], {2: "x", 3: "y"})  # 5: an earlier batch's


def test_an_error_or_a_failed_commit_raises() -> None:
    with pytest.raises(BackendError, match="refused to delete from set s: No such file"):
        wait([ack(2), ack(3, -errno.ENOENT)], {2: "x", 3: "delete from set s"})
    with pytest.raises(BackendError, match="commit the transaction: Cannot allocate"):
        wait([ack(1, -errno.ENOMEM)], {2: "x"})


def test_the_kernels_message_is_kept() -> None:
    text = b"Set not found\0"
    tlv = struct.pack("=HH", 4 + len(text), 1) + text + bytes(-len(text) % 4)
    answer = ack(2, -errno.ENOENT)
    answer = (
        struct.pack("=I", len(answer) + len(tlv))
        + answer[4:6]
        + struct.pack("=H", 0x300)
        + answer[8:]
        + tlv
    )
    assert netlink.parse_answers(answer) == [(2, -errno.ENOENT, "Set not found")]


# What `nft --debug=netlink add element inet t s { ... }` printed (nft 1.0.6, x86_64) for a set
# of type `ipv4_addr . inet_proto . inet_service`, flags interval (the proxy path's host
# ports): each word is 4 bytes as a little-endian number, the key, then the key end.
CAPTURED_LISTENERS = {
    "0.0.0.0/0 . tcp . 8081": "00000000 00000006 0000911f  - ffffffff 00000006 0000911f",
    "198.51.100.1 . udp . 53": "016433c6 00000011 00003500  - 016433c6 00000011 00003500",
}


def _words(text: str) -> bytes:
    return b"".join(int(word, 16).to_bytes(4, "little") for word in text.split())


@pytest.mark.parametrize("element", list(CAPTURED_LISTENERS))
def test_a_host_port_element_is_what_nft_sends(element: str) -> None:
    first, last = CAPTURED_LISTENERS[element].split(" - ")
    kind = "ipv4_addr . inet_proto . inet_service"
    assert netlink._element(kind, element, adding=True) == [
        elem(key(_words(first)), key(_words(last), 10))
    ]
