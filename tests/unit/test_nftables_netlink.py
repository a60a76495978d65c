"""The netlink encoder: the bytes nft 1.0.6 sends for the same elements, and how answers are
read. (tests/integration/test_nftables.py writes through it to a real kernel.)"""

from __future__ import annotations

import errno
import json
import socket
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

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


# The batches nft itself sent for the same changes, captured once from a real nft and kernel
# (tests/unit/fixtures/netlink/, each file with its command and nft's version; capture.py there
# captures them again). Numbers below are the kernel's (linux/netlink.h, netfilter/nf_tables.h),
# written out here rather than taken from netlink.py, so that a wrong one there shows.
FIXTURES = Path(__file__).parent / "fixtures" / "netlink"
ACK_FLAG = 0x4  # NLM_F_ACK
NESTED = 0x8000  # NLA_F_NESTED
NEW_ELEMENTS, DEL_ELEMENTS = 0x0A0C, 0x0A0E  # NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_{NEW,DEL}SETELEM
LIST_SET_ID, LIST_ELEMENTS = 4, 3  # NFTA_SET_ELEM_LIST_*
LIST_ELEM = NESTED | 1  # NFTA_LIST_ELEM
ELEM_KEY, ELEM_USERDATA, ELEM_KEY_END = NESTED | 1, 6, NESTED | 10  # NFTA_SET_ELEM_*

Node = tuple[int, "bytes | tuple[Node, ...]"]  # an attribute: its type (with flags), payload


@dataclass(frozen=True)
class Message:
    """One netlink message, fully parsed: equal Messages are equal bytes (see parse)."""

    kind: int
    flags: int
    seq: int
    port: int
    nfgen: bytes
    attrs: tuple[Node, ...]


def attributes(data: bytes) -> tuple[Node, ...]:
    """Strictly: each length exactly its payload, padding zero and inside the parent, nested
    (NLA_F_NESTED) payloads parsed in turn. So nothing in the bytes is lost in the tree."""
    found: list[Node] = []
    offset = 0
    while offset < len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        padded = offset + (length + 3) // 4 * 4
        assert length >= 4 and padded <= len(data), data.hex()
        assert data[offset + length : padded] == bytes(padded - offset - length), data.hex()
        payload = data[offset + 4 : offset + length]
        found.append((kind, attributes(payload) if kind & NESTED else payload))
        offset = padded
    return tuple(found)


def parse(batch_messages: list[bytes]) -> list[Message]:
    """The messages of a batch, each sequence number counted from the batch's begin message."""
    found = []
    for data in batch_messages:
        length, kind, flags, seq, port = struct.unpack_from("=IHHII", data)
        assert length == len(data)
        found.append(Message(kind, flags, seq, port, data[16:20], attributes(data[20:])))
    return [replace(m, seq=m.seq - found[0].seq) for m in found]


def split(data: bytes) -> list[bytes]:
    found, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("=I", data, offset)
        found.append(data[offset : offset + length])
        offset += (length + 3) & ~3
    return found


def fixture(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return found


def captured_changes(found: dict[str, Any]) -> list[SetChange]:
    return [
        SetChange(c["set"], c["type"], tuple(c["removed"]), tuple(c["added"]))
        for c in found["changes"]
    ]


def without(nodes: tuple[Node, ...], kinds: set[int]) -> tuple[Node, ...]:
    return tuple(n for n in nodes if n[0] not in kinds)


def as_dockwall_sends(m: Message) -> Message:
    """What nft sent, but for what it adds that the kernel's nf_tables does not read (seen in
    its source, net/netfilter/nf_tables_api.c and nft_set_pipapo.c, and by writing through
    netlink.py to the kernel the fixtures were captured on); each is a difference between nft
    and netlink.py, and anything else that differs fails the test:
    - NFTA_SET_ELEM_LIST_SET_ID (NEWSETELEM): nft's own number for the set, which the kernel
      looks at only when no set of that name exists (one created in the same batch);
    - the type of each entry of NFTA_SET_ELEM_LIST_ELEMENTS: nft numbers them 1, 2, 3...
      (libnftnl), netlink.py writes NFTA_LIST_ELEM (1) for each, as the header says; the
      kernel walks the entries without looking at their type;
    - NFTA_SET_ELEM_USERDATA: nft's note (NFTNL_SET_ELEM_F_INTERVAL_OPEN) on an interval
      reaching the top of its field, for itself; the kernel keeps it opaque, and nft lists such
      an element written without it the same (65000-65535);
    - NFTA_SET_ELEM_KEY_END on a delete from a concatenation, where it equals the key:
      pipapo finds the element to delete by its key alone (nft_pipapo_deactivate)."""
    if m.kind not in (NEW_ELEMENTS, DEL_ELEMENTS):
        return m
    attrs = []
    for kind, value in without(m.attrs, {LIST_SET_ID}):
        if kind != NESTED | LIST_ELEMENTS:
            attrs.append((kind, value))
            continue
        assert not isinstance(value, bytes)
        attrs.append((kind, tuple((LIST_ELEM, _element(e, m.kind)) for _, e in value)))
    return replace(m, attrs=tuple(attrs))


def _element(element: bytes | tuple[Node, ...], kind: int) -> tuple[Node, ...]:
    assert not isinstance(element, bytes)
    found = without(element, {ELEM_USERDATA})
    values = dict(found)
    if kind == DEL_ELEMENTS and values.get(ELEM_KEY_END, ()) == values[ELEM_KEY]:
        found = without(found, {ELEM_KEY_END})
    return found


def acks_cleared(m: Message) -> Message:
    """netlink.py asks for an acknowledgement of every message that changes elements
    (NLM_F_ACK), so that Writer knows each was done; nft 1.0.6 asks for none and hears only of
    errors. The one flag netlink.py adds on purpose."""
    return replace(m, flags=m.flags & ~ACK_FLAG)


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_the_batch_is_the_one_nft_sends(name: str) -> None:
    """Sequence numbers are counted from the batch's begin message on both sides (parse): nft
    starts from its own count, Writer from where its last batch ended, and the kernel only
    pairs an answer with its request by them. The port id (0: the kernel fills in the
    sender's) and the batch's resource id (NFNL_SUBSYS_NFTABLES) need no such care: nft
    sends the same. Everything else is compared, but for as_dockwall_sends' list."""
    found = fixture(name)
    data, acked = netlink.batch("dockwall", captured_changes(found), first_seq=41)
    ours = parse(split(data))
    theirs = parse([bytes.fromhex(m) for m in found["batch"]])
    assert sorted(m.seq + 41 for m in ours if m.flags & ACK_FLAG) == sorted(acked)
    assert all(m.flags & ACK_FLAG for m in ours[1:-1])
    assert [acks_cleared(m) for m in ours] == [as_dockwall_sends(m) for m in theirs]


def test_elements_nft_sends_as_they_are_need_no_normalising() -> None:
    """The bytes of a change nft and netlink.py write alike (a delete of one range from a
    concatenation: no set id, one entry, no note, a key end unlike the key), compared as
    they are but for the acknowledgement flag and where the sequence numbers start."""
    found = fixture("v6-prefix-port-range-delete")
    first = int.from_bytes(bytes.fromhex(found["batch"][0])[8:12], "little")
    data, _ = netlink.batch("dockwall", captured_changes(found), first_seq=first)
    ours = split(data)
    assert ours[1][6:8] == struct.pack("=H", 0x5)  # request, ack
    ours[1] = ours[1][:6] + struct.pack("=H", 0x1) + ours[1][8:]
    assert [m.hex() for m in ours] == found["batch"]


def test_the_helpers_above_encode_as_nft_does() -> None:
    """key(), elem() and END, which the tests above build their expectations with, against
    nft's bytes: an element's header aside (nft numbers a message's elements, see
    as_dockwall_sends), each is found in what nft sent."""
    host = bytes.fromhex(fixture("v6-host-add")["batch"][1])
    assert elem(key(V6_1)) in host and elem(END, key(V6_2))[4:] in host
    one = bytes.fromhex("c000020700500000")  # 192.0.2.7 . 80
    assert elem(key(one), key(one, 10)) in bytes.fromhex(fixture("v4-host-port-add")["batch"][1])
