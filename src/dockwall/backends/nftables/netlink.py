"""Change the elements of sets in dockwall's table straight over netlink: one nfnetlink batch,
so one kernel transaction (all of it, or nothing), carrying the messages `nft delete element`
and `nft add element` send.

Why not `nft -f`: before any element update, nft 1.0.6 fetches and decodes every element of
every non-concatenated interval set in the ruleset (to merge intervals in userspace). With
10,000 source addresses that alone cost 25-45 ms per call, for one added container. This
writes only what changed, and starts no process.

Elements are the canonical text render.py writes ("192.0.2.7", "198.51.100.0/24", "80",
"8000-8100", "192.0.2.7 . 80"), each parsed and range-checked again here; a set type other
than ipv4_addr, ipv6_addr, inet_proto, inet_service and their concatenations (the host
ports of the proxy path are `address . protocol . port`) raises Unsupported, before
anything is sent. How nft 1.0.6 encodes them (seen with `nft --debug=netlink`):

- an interval set of one field (the kernel's rbtree): each range is two elements, its first
  value, and the value after its last flagged as an interval end (left out when the range
  reaches the top of the field);
- a concatenation (pipapo): one element per range, with its first and last values (each field
  padded to 4 bytes); nft sends the last value on a delete too, but the kernel finds the
  element to delete by its first value alone, so it is left out here when it equals the first;
- nft also puts a zero-key interval end in front when a set looks empty to it; that is left
  out: a delta never fills an empty set (a set appearing or emptied changes the rules, and
  then the table is replaced whole by nft);
- so is what nft adds for itself, which the kernel does not read: the set's id (for a set
  made in the same batch), its numbering of a message's elements (each is NFTA_LIST_ELEM
  here) and its note on a range that reaches the top of its field (NFTA_SET_ELEM_USERDATA).
  tests/unit/fixtures/netlink holds what nft sent, captured, to compare with.

Every message asks for an acknowledgement, and the batch counts as written only when each
was acknowledged without error; the socket has a timeout.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from dockwall.errors import BackendError

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # acknowledgements without a copy of the request
NETLINK_EXT_ACK = 11  # errors with the kernel's message
SO_SNDBUFFORCE = 32
NLMSG_ERROR = 2
_HEADER_SIZE = 16  # nlmsghdr: length, type, flags, sequence number, port id
NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE = 0x1, 0x4, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # flags of an acknowledgement
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFPROTO_INET = 1
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY_END = 1, 3, 10
NFTA_DATA_VALUE = 1
NFT_SET_ELEM_INTERVAL_END = 1

WIDTH = {"ipv4_addr": 4, "ipv6_addr": 16, "inet_proto": 1, "inet_service": 2}  # bytes a field
PROTOCOLS = {"tcp": 6, "udp": 17}  # inet_proto values render.py writes
CHUNK = 40_000  # bytes of elements per message: a netlink attribute holds at most 64 KiB


class Unsupported(ValueError):
    """A set type or element this encoder does not write (then nft -f does)."""


@dataclass(frozen=True)
class SetChange:
    """What goes from one set and what comes to it (canonical element text)."""

    name: str
    type: str
    removed: tuple[str, ...]
    added: tuple[str, ...]


def batch(
    table: str, changes: Sequence[SetChange], first_seq: int = 1
) -> tuple[bytes, dict[int, str]]:
    """The batch (its begin message numbered first_seq, its end message one after the last
    entry of the dict) and what each acknowledged message does, by sequence number. Every
    removal comes before every addition. Raises Unsupported."""
    seq = first_seq
    parts = [_message(NFNL_MSG_BATCH_BEGIN, 0, seq, _nfgen(0, NFNL_SUBSYS_NFTABLES))]
    acked: dict[int, str] = {}
    for adding in (False, True):
        for change in changes:
            encoded = [
                blob
                for text in (change.added if adding else change.removed)
                for blob in _element(change.type, text, adding)
            ]
            verb = "add to" if adding else "delete from"
            for chunk in _chunks(encoded):
                seq += 1
                parts.append(_elements(table, change.name, chunk, adding, seq))
                acked[seq] = f"{verb} set {change.name}"
    parts.append(_message(NFNL_MSG_BATCH_END, 0, seq + 1, _nfgen(0, NFNL_SUBSYS_NFTABLES)))
    return b"".join(parts), acked


class Writer:
    """Writes batches through one netlink socket, kept open from one write to the next:
    closing a socket right after a transaction waits for the kernel to finish releasing that
    transaction (an RCU grace period, often several milliseconds). After a failure the socket
    is closed and the next write opens a new one."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._seq = 0

    def write(self, table: str, changes: Sequence[SetChange], timeout: float) -> None:
        """Send the changes as one transaction and wait for the kernel's word on every
        message. Raises Unsupported (nothing sent) or BackendError (nothing changed)."""
        begin = self._seq + 1 if self._seq < 1 << 30 else 1
        data, acked = batch(table, changes, begin)
        if not acked:
            return
        self._seq = max(acked) + 1
        try:
            sock = self._socket(timeout, len(data))
            sock.sendto(data, (0, 0))
            _await(sock, acked, begin)
        except TimeoutError:
            self.close()
            raise BackendError(f"no answer from the kernel within {timeout:g} s") from None
        except OSError as exc:
            self.close()
            raise BackendError(f"netlink: {exc.strerror or exc}") from None
        except BackendError:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _socket(self, timeout: float, size: int) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
            )
            try:
                sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
                sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
                sock.bind((0, 0))
            except OSError:
                sock.close()
                raise
            self._sock = sock
        self._sock.settimeout(timeout)
        if size + 64 > self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):  # root may go beyond wmem_max
                self._sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, size + 4096)
        return self._sock


def _await(sock: socket.socket, acked: dict[int, str], begin: int) -> None:
    """Read answers until every message of this batch is acknowledged; an error raises. The
    kernel answers each message that asks, and the batch (its begin message) when the commit
    fails. Answers to earlier batches are skipped."""
    waiting = set(acked)
    while waiting:
        for seq, error, message in parse_answers(sock.recv(65536)):
            if error and (seq in acked or seq == begin):
                what = acked.get(seq, "commit the transaction")
                detail = f" ({message})" if message else ""
                raise BackendError(f"the kernel refused to {what}: {os.strerror(-error)}{detail}")
            waiting.discard(seq)


def parse_answers(data: bytes) -> list[tuple[int, int, str]]:
    """(sequence number, error (0: done), the kernel's message) per acknowledgement."""
    return [
        (seq, struct.unpack_from("=i", message, 16)[0], _ext_message(message, flags))
        for kind, flags, seq, message in messages(data)
        if kind == NLMSG_ERROR and len(message) >= 20
    ]


def messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, sequence number, the whole message) of each netlink message in one
    datagram, up to one that is cut short."""
    offset = 0
    while offset + _HEADER_SIZE <= len(data):
        length, kind, flags, seq, _ = struct.unpack_from("=IHHII", data, offset)
        if length < _HEADER_SIZE or offset + length > len(data):
            return
        yield kind, flags, seq, data[offset : offset + length]
        offset += _align(length)


def attributes(data: bytes) -> dict[int, bytes]:
    """The payload of each attribute by its type (without NLA_F_NESTED and byte-order
    flags), the first of each type, up to one that is cut short."""
    found: dict[int, bytes] = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4 or offset + length > len(data):
            break
        found.setdefault(kind & 0x3FFF, data[offset + 4 : offset + length])
        offset += _align(length)
    return found


def _ext_message(answer: bytes, flags: int) -> str:
    """NLMSGERR_ATTR_MSG from the attributes after the request (or its header), if any."""
    if not flags & NLM_F_ACK_TLVS or len(answer) < 36:
        return ""
    (request,) = struct.unpack_from("=I", answer, 20)
    attrs = answer[36 if flags & NLM_F_CAPPED else 20 + _align(request) :]
    text = attributes(attrs).get(NLMSGERR_ATTR_MSG, b"")
    return text.split(b"\0", 1)[0].decode(errors="replace")


def _element(type_: str, text: str, adding: bool) -> list[bytes]:
    """One element as the kernel takes it (two for a range of a one-field interval set)."""
    kinds = type_.split(" . ")
    parts = text.split(" . ")
    if any(k not in WIDTH for k in kinds) or len(parts) != len(kinds):
        raise Unsupported(f"cannot write element {text!r} of a set of type {type_!r}")
    bounds = [_bounds(k, p) for k, p in zip(kinds, parts, strict=True)]
    if len(kinds) > 1:
        key = b"".join(_padded(k, low) for k, (low, _) in zip(kinds, bounds, strict=True))
        end = b"".join(_padded(k, high) for k, (_, high) in zip(kinds, bounds, strict=True))
        last = _key(end, NFTA_SET_ELEM_KEY_END) if adding or end != key else b""
        return [_attr(NFTA_LIST_ELEM, _key(key) + last, True)]
    (kind,), ((low, high),) = kinds, bounds
    width = WIDTH[kind]
    out = [_attr(NFTA_LIST_ELEM, _key(low.to_bytes(width, "big")), True)]
    if high + 1 < 1 << (8 * width):
        flags = _attr(NFTA_SET_ELEM_FLAGS, struct.pack(">I", NFT_SET_ELEM_INTERVAL_END))
        out.append(_attr(NFTA_LIST_ELEM, flags + _key((high + 1).to_bytes(width, "big")), True))
    return out


def _bounds(kind: str, text: str) -> tuple[int, int]:
    if kind == "inet_proto":
        if text not in PROTOCOLS:
            raise Unsupported(f"not a protocol: {text!r}")
        return PROTOCOLS[text], PROTOCOLS[text]
    if kind == "inet_service":
        first, _, last = text.partition("-")
        if not first.isdigit() or not (last or first).isdigit():
            raise Unsupported(f"not a port or port range: {text!r}")
        low, high = int(first), int(last or first)
        if not 0 <= low <= high <= 65535:
            raise Unsupported(f"not a port range: {text!r}")
        return low, high
    try:
        net = ipaddress.ip_network(text)
    except ValueError:
        raise Unsupported(f"not an address or prefix: {text!r}") from None
    if net.version != (4 if kind == "ipv4_addr" else 6):
        raise Unsupported(f"{text!r} is not of type {kind}")
    return int(net.network_address), int(net.broadcast_address)


def _padded(kind: str, value: int) -> bytes:
    width = WIDTH[kind]
    return value.to_bytes(width, "big") + bytes(-width % 4)


def _key(value: bytes, kind: int = NFTA_SET_ELEM_KEY) -> bytes:
    return _attr(kind, _attr(NFTA_DATA_VALUE, value), True)


def _chunks(encoded: list[bytes]) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    size = 0
    for blob in encoded:
        if chunk and size + len(blob) > CHUNK:
            yield chunk
            chunk, size = [], 0
        chunk.append(blob)
        size += len(blob)
    if chunk:
        yield chunk


def _elements(table: str, name: str, elements: list[bytes], adding: bool, seq: int) -> bytes:
    kind = NFT_MSG_NEWSETELEM if adding else NFT_MSG_DELSETELEM
    flags = NLM_F_ACK | (NLM_F_CREATE if adding else 0)
    body = (
        _nfgen(NFPROTO_INET, 0)
        + _attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
        + _attr(NFTA_SET_ELEM_LIST_SET, name.encode() + b"\0")
        + _attr(NFTA_SET_ELEM_LIST_ELEMENTS, b"".join(elements), True)
    )
    return _message(NFNL_SUBSYS_NFTABLES << 8 | kind, flags, seq, body)


def request(kind: int, seq: int) -> bytes:
    """A request with no attributes (family unspecified), e.g. for the generation."""
    return _message(kind, 0, seq, _nfgen(0, 0))


def _message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body


def _nfgen(family: int, res_id: int) -> bytes:
    return struct.pack("=BBH", family, 0, socket.htons(res_id))


def _attr(kind: int, payload: bytes, nested: bool = False) -> bytes:
    length = 4 + len(payload)
    if length > 0xFFFF:
        raise Unsupported("a netlink attribute holds at most 64 KiB")
    header = struct.pack("=HH", length, kind | (NLA_F_NESTED if nested else 0))
    return header + payload + bytes(-length % 4)


def _align(length: int) -> int:
    return (length + 3) & ~3
