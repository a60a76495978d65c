"""nftables' change stream, read from the kernel itself: the nfnetlink multicast group that
`nft monitor` reads, without nft. Pure where it can be: `lines` turns what one recv returned
into the lines nft monitor would start with ("delete rule inet dockwall governed",
"# new generation 8 by process 6601 (nft)"), which Transactions (kernelwatch.py) reads.

Why not `nft monitor`: nft 1.0.6 (Debian 12) renders every rule and element of every change
as text, looking sets up as it goes; under Docker 29's nftables backend and dockwall's own
writes it fell a second behind, and it crashes ("utils.c:38: Memory allocation failure",
SIGSEGV), leaving only the timed drift check until it is started again. The kernel's own
messages say all dockwall needs: what kind of object changed, in which family and table, and
at the end of each transaction which process made it. Messages and attributes are split
by netlink.py, which writes dockwall's own element changes.

Layout (linux/netfilter/nf_tables.h): nlmsghdr (length, type = NFNL_SUBSYS_NFTABLES << 8 |
NFT_MSG_*, flags, seq, port id), nfgenmsg (family, version, resource id), then attributes
(length, type; padded to 4 bytes). Attribute 1 names the table in every table, chain, rule,
set, element, object and flowtable message; attribute 2 (3 for a chain) names the object.
NFT_MSG_NEWGEN carries the generation (1), the pid (2) and the name (3) of the process.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

from dockwall.backends.nftables import netlink

NETLINK_NETFILTER = netlink.NETLINK_NETFILTER
SOL_NETLINK = netlink.SOL_NETLINK
NETLINK_ADD_MEMBERSHIP = 1
NFNLGRP_NFTABLES = 7
SO_RCVBUFFORCE = 33
RECEIVE_BUFFER = 8 << 20  # bytes: a replaced table of 10,000 elements fits many times over
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15
_HEADER_SIZE = 16  # nlmsghdr
_NFGEN = 4  # nfgenmsg's size
FAMILIES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
# NFT_MSG_* -> (verb, object, attribute that names the object)
KINDS = {
    0: ("add", "table", 0),
    2: ("delete", "table", 0),
    3: ("add", "chain", 3),
    5: ("delete", "chain", 3),
    6: ("add", "rule", 2),
    8: ("delete", "rule", 2),
    9: ("add", "set", 2),
    11: ("delete", "set", 2),
    12: ("add", "element", 2),
    14: ("delete", "element", 2),
    18: ("add", "object", 2),
    20: ("delete", "object", 2),
    22: ("add", "flowtable", 2),
    24: ("delete", "flowtable", 2),
    26: ("destroy", "table", 0),
    27: ("destroy", "chain", 3),
    28: ("destroy", "rule", 2),
    29: ("destroy", "set", 2),
    30: ("destroy", "element", 2),
    31: ("destroy", "object", 2),
    32: ("destroy", "flowtable", 2),
}


def subscribe() -> socket.socket:
    """A socket that receives every nftables change in this network namespace (root).
    Raises OSError where that is not allowed."""
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
    )
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
    except OSError:
        sock.close()
        raise
    return sock


def lines(data: bytes) -> Iterator[str]:
    """The nft monitor lines (their beginning) of the messages in one datagram; messages of
    other kinds, or cut short, are skipped."""
    for kind, _flags, _seq, message in netlink.messages(data):
        body = message[_HEADER_SIZE:]
        if kind >> 8 != NFNL_SUBSYS_NFTABLES or len(body) < _NFGEN:
            continue
        line = _line(kind & 0xFF, body[0], netlink.attributes(body[_NFGEN:]))
        if line is not None:
            yield line


def _line(message: int, family: int, attrs: dict[int, bytes]) -> str | None:
    if message == NFT_MSG_NEWGEN:
        gen, pid = _u32(attrs.get(1)), _u32(attrs.get(2))
        if pid is None:
            return f"# new generation {gen}"
        return f"# new generation {gen} by process {pid} ({_text(attrs.get(3))})"
    known = KINDS.get(message)
    if known is None:
        return None
    verb, what, name = known
    words = [verb, what, FAMILIES.get(family, str(family)), _text(attrs.get(1))]
    if name and name in attrs:
        words.append(_text(attrs[name]))
    return " ".join(words)


def _text(value: bytes | None) -> str:
    if value is None:
        return "?"
    text = value.split(b"\0", 1)[0].decode(errors="replace")
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in text) or "?"


def _u32(value: bytes | None) -> int | None:
    return None if value is None or len(value) < 4 else int(struct.unpack(">I", value[:4])[0])


NFT_MSG_GETGEN = 16
GENERATION_TIMEOUT = 1.0  # seconds


def generation() -> int:
    """The kernel's nftables generation now (the number each committed transaction raises,
    told at its end as "# new generation N"). Raises OSError where it can't be asked."""
    request = netlink.request(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN, 1)
    with socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
    ) as sock:
        sock.settimeout(GENERATION_TIMEOUT)
        sock.bind((0, 0))
        sock.sendto(request, (0, 0))
        while True:
            for kind, _flags, seq, message in netlink.messages(sock.recv(65536)):
                if seq != 1:
                    continue
                if kind == netlink.NLMSG_ERROR:
                    raise OSError("the kernel refused to tell its nftables generation")
                found = _u32(netlink.attributes(message[_HEADER_SIZE + _NFGEN :]).get(1))
                if kind & 0xFF == NFT_MSG_NEWGEN and found is not None:
                    return found
