#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Requirements of the NBD specification checked on the wire with a raw
# client (tests/interop/nbdraw.py), one action of raw-spec.py each:
#  - fua: with NBD_FLAG_SEND_FUA advertised, NBD_CMD_FLAG_FUA is accepted
#    on every command (compact requests, structured replies, extended
#    headers).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 truncate
is_our_server || skip "the raw checks are written against nbd-serverd"

export PYTHONPATH="$(cd "$(dirname "$0")" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
disk=$T/disk.img
make_image "$disk" 16M

cat >"$T/raw-spec.py" <<'EOF'
import struct
import sys

from nbdraw import *

MiB = 1024 * 1024


def fua(addr):
    """NBD_CMD_FLAG_FUA: "valid for all commands, provided
    NBD_FLAG_SEND_FUA has been negotiated, in which case the server MUST
    accept all commands with this bit set (even by ignoring the bit)"."""
    for mode in ("compact", "structured", "extended"):
        c = Conn(addr).handshake()
        if mode == "structured":
            c.structured_reply()
        elif mode == "extended":
            c.extended_headers()
        if c.structured:
            c.expect_option(OPT_SET_META_CONTEXT,
                            meta_data("disk", ["base:allocation"]), REP_ACK,
                            "SET_META_CONTEXT base:allocation")
        size, flags = c.go("disk")
        if not flags & FLAG_SEND_FUA:
            fail("transmission flags %#x lack NBD_FLAG_SEND_FUA" % flags)
        cmds = [(CMD_READ, 0, 4096, b""),
                (CMD_WRITE, 0, 4096, b"\x5a" * 4096),
                (CMD_FLUSH, 0, 0, b"")]
        if flags & FLAG_SEND_TRIM:
            cmds.append((CMD_TRIM, MiB, 65536, b""))
        if flags & FLAG_SEND_WRITE_ZEROES:
            cmds.append((CMD_WRITE_ZEROES, 2 * MiB, 65536, b""))
        if flags & FLAG_SEND_CACHE:
            cmds.append((CMD_CACHE, 0, 65536, b""))
        if c.structured:
            cmds.append((CMD_BLOCK_STATUS, 0, MiB, b""))
        bad = []
        for i, (cmd, off, ln, payload) in enumerate(cmds):
            err, _ = c.command(cmd, 0x100 + i, off, ln, CMD_FLAG_FUA, payload)
            if err:
                bad.append("%s+FUA: error %d" % (CMD_NAMES[cmd], err))
        if bad:
            fail("%s: %s" % (mode, "; ".join(bad)))
        log("%s: FUA accepted on %s" % (
            mode, ", ".join(CMD_NAMES[x[0]] for x in cmds)))
        c.disconnect()


action = sys.argv[1]
globals()[action](*sys.argv[2:])
EOF

raw()
{
    tmo python3 "$T/raw-spec.py" "$@"
}

port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -t 2 -e "disk=$disk"

step "FUA on every command"
raw fua "$addr" || fail "FUA refused on some command"

server_alive
stop_server
step pass
