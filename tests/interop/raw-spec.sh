#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Requirements of the NBD specification checked on the wire with a raw
# client (tests/interop/nbdraw.py), one action of raw-spec.py each:
#  - fua: with NBD_FLAG_SEND_FUA advertised, NBD_CMD_FLAG_FUA is accepted
#    on every command (compact requests, structured replies, extended
#    headers).
#  - meta-set: NBD_OPT_SET_META_CONTEXT with the namespace-only query
#    "base:" selects nothing, and a SET that fails (unknown export,
#    malformed data) leaves no context selected, not the earlier one:
#    NBD_CMD_BLOCK_STATUS then fails with EINVAL.
#  - meta-list: NBD_REP_META_CONTEXT replies to LIST_META_CONTEXT carry
#    context id 0, whatever the query (none, "base:", "base:allocation").
#  - sr-after-eh: NBD_OPT_STRUCTURED_REPLY once extended headers are
#    negotiated gets NBD_REP_ERR_EXT_HEADER_REQD, and the haggling goes
#    on with extended headers; the other orders and repeats get ACK or
#    NBD_REP_ERR_INVALID.
#  - big-options: an option with more data than the server takes
#    (64 KiB): NBD_OPT_EXPORT_NAME, which has no error reply, ends the
#    connection without a byte sent (an option reply would be read as
#    the export's size and flags); ABORT is acknowledged; others get
#    NBD_REP_ERR_TOO_BIG and the haggling goes on.  With --tls=require,
#    before STARTTLS, every option but STARTTLS and ABORT gets
#    NBD_REP_ERR_TLS_REQD whatever its size (EXPORT_NAME: a disconnect).
#  - log-flood: log lines a client causes are rate-limited per
#    connection: 2,000 NBD_OPT_INFO options naming an export hidden from
#    it (allow list) write a handful of lines, and the ones held back
#    are counted in a line of their own (logged + counted = 2,000).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires python3 truncate certtool
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


def block_status_error(c):
    """NBD_CMD_BLOCK_STATUS of the first MiB: its error (0: success)."""
    err, _ = c.command(CMD_BLOCK_STATUS, 0xB5, 0, MiB)
    return err


def meta_set(addr):
    # SET base:allocation selects it; a later SET of "base:" alone must
    # select nothing ("the server MUST ignore this form during
    # NBD_OPT_SET_META_CONTEXT") and replace the earlier selection.
    c = Conn(addr).handshake()
    c.structured_reply()
    got = meta_contexts(c.expect_option(
        OPT_SET_META_CONTEXT, meta_data("disk", ["base:allocation"]),
        REP_ACK, "SET base:allocation"))
    if [n for _, n in got] != ["base:allocation"]:
        fail("SET base:allocation selected %r" % got)
    got = meta_contexts(c.expect_option(
        OPT_SET_META_CONTEXT, meta_data("disk", ["base:"]), REP_ACK,
        "SET base:"))
    if got:
        fail("SET with the query 'base:' selected %r; it must select "
             "nothing" % got)
    c.go("disk")
    err = block_status_error(c)
    if err != EINVAL:
        fail("BLOCK_STATUS after SET 'base:': error %d, want EINVAL" % err)
    log("after SET 'base:' no context is selected: BLOCK_STATUS fails "
        "with EINVAL")
    c.disconnect()

    # "Issuing this command replaces all previously-set metadata contexts
    # (including when this command fails)".
    failing = (("an unknown export", meta_data("nosuch", ["base:allocation"]),
                REP_ERR_UNKNOWN),
               ("malformed data", meta_data("disk", ["base:allocation"])[:-3],
                REP_ERR_INVALID))
    for what, data, want in failing:
        c = Conn(addr).handshake()
        c.structured_reply()
        c.expect_option(OPT_SET_META_CONTEXT,
                        meta_data("disk", ["base:allocation"]), REP_ACK,
                        "SET base:allocation")
        c.expect_option(OPT_SET_META_CONTEXT, data, want,
                        "SET naming " + what)
        c.go("disk")
        err = block_status_error(c)
        if err != EINVAL:
            fail("BLOCK_STATUS after a failed SET (%s): error %d, want "
                 "EINVAL: the failed SET kept the earlier selection"
                 % (what, err))
        log("a failed SET (%s) left no context selected" % what)
        c.disconnect()

    # The selection that counts is the last one, made for the export
    # that GO chooses.
    c = Conn(addr).handshake()
    c.structured_reply()
    c.expect_option(OPT_SET_META_CONTEXT, meta_data("disk", ["base:"]),
                    REP_ACK, "SET base:")
    c.expect_option(OPT_SET_META_CONTEXT,
                    meta_data("disk", ["x-other:thing", "base:allocation"]),
                    REP_ACK, "SET x-other:thing, base:allocation")
    c.go("disk")
    err = block_status_error(c)
    if err:
        fail("BLOCK_STATUS after SET base:allocation: error %d" % err)
    log("BLOCK_STATUS works after the last SET selected base:allocation")
    c.disconnect()


def meta_list(addr):
    """LIST_META_CONTEXT: "The metadata context ID in these replies is
    reserved and SHOULD be set to zero"."""
    c = Conn(addr).handshake()
    c.structured_reply()
    for queries in ([], ["base:"], ["base:allocation"]):
        got = meta_contexts(c.expect_option(
            OPT_LIST_META_CONTEXT, meta_data("disk", queries), REP_ACK,
            "LIST %r" % queries))
        if got != [(0, "base:allocation")]:
            fail("LIST %r: replies %r, want [(0, 'base:allocation')]"
                 % (queries, got))
    log("LIST replies name base:allocation with context id 0")
    # A SET after the LISTs still selects base:allocation.
    got = meta_contexts(c.expect_option(
        OPT_SET_META_CONTEXT, meta_data("disk", ["base:allocation"]),
        REP_ACK, "SET base:allocation"))
    if [n for _, n in got] != ["base:allocation"]:
        fail("SET after LIST selected %r" % got)
    c.go("disk")
    err = block_status_error(c)
    if err:
        fail("BLOCK_STATUS after LIST and SET: error %d" % err)
    c.disconnect()


def sr_after_eh(addr):
    c = Conn(addr).handshake()
    c.extended_headers()
    c.expect_option(OPT_STRUCTURED_REPLY, b"", REP_ERR_EXT_HEADER_REQD,
                    "STRUCTURED_REPLY after EXTENDED_HEADERS")
    c.expect_option(OPT_STRUCTURED_REPLY, b"x", REP_ERR_INVALID,
                    "STRUCTURED_REPLY with data")
    c.expect_option(OPT_EXTENDED_HEADERS, b"", REP_ERR_INVALID,
                    "EXTENDED_HEADERS twice")
    c.go("disk")
    err, chunks = c.command(CMD_READ, 0xE1, 0, 512)
    if err or chunks[0]["magic"] != EXTENDED_REPLY_MAGIC:
        fail("READ: error %d, reply magic %#x, want the extended reply"
             % (err, chunks[0]["magic"]))
    log("transmission uses extended headers")
    c.disconnect()
    c = Conn(addr).handshake()
    c.structured_reply()
    c.expect_option(OPT_STRUCTURED_REPLY, b"", REP_ERR_INVALID,
                    "STRUCTURED_REPLY twice")
    c.extended_headers()
    c.expect_option(OPT_ABORT, b"", REP_ACK, "ABORT")
    c.close()


BIG = 64 * 1024 + 1     # one byte over what the server takes


def big_options(addr, tls_required="no"):
    tls = tls_required == "yes"
    name = b"n" * BIG
    c = Conn(addr).handshake()
    c.send_option(OPT_EXPORT_NAME, name)
    c.expect_closed("EXPORT_NAME with %d bytes" % BIG)
    c = Conn(addr).handshake()
    other = REP_ERR_TLS_REQD if tls else REP_ERR_TOO_BIG
    for opt, what in ((OPT_INFO, "INFO"), (OPT_GO, "GO"), (OPT_LIST, "LIST"),
                      (OPT_STRUCTURED_REPLY, "STRUCTURED_REPLY"),
                      (OPT_SET_META_CONTEXT, "SET_META_CONTEXT"),
                      (0x4242, "an unknown option")):
        c.expect_option(opt, info_data("disk") + b"\0" * BIG, other,
                        "%s with %d bytes" % (what, BIG))
    c.expect_option(OPT_STARTTLS, b"\0" * BIG, REP_ERR_TOO_BIG,
                    "STARTTLS with %d bytes" % BIG)
    if not tls:
        # The haggling went on: the export is still there.
        c.go("disk")
        c.disconnect()
    else:
        c.close()
    c = Conn(addr).handshake()
    c.expect_option(OPT_ABORT, b"\0" * BIG, REP_ACK,
                    "ABORT with %d bytes" % BIG)
    c.expect_closed("after ABORT")


def log_flood(addr, count, name_file):
    """`count` INFO options for the hidden export on one connection."""
    c = Conn(addr).handshake()
    host, port = c.sock.getsockname()[:2]
    with open(name_file, "w") as f:
        f.write("%s:%d\n" % (host, port))
    data = info_data("hidden")
    for _ in range(int(count)):
        c.send_option(OPT_INFO, data)
        final, _ = c.replies(OPT_INFO)
        if final != REP_ERR_UNKNOWN:
            fail("INFO of the hidden export: %s, want ERR_UNKNOWN"
                 % rep_name(final))
    c.expect_option(OPT_ABORT, b"", REP_ACK, "ABORT")
    c.expect_closed("after ABORT")
    log("%s INFO options for the hidden export: NBD_REP_ERR_UNKNOWN each"
        % count)


action = sys.argv[1]
globals()[action](*sys.argv[2:])
EOF

# check WHAT ACTION ARGS...: run one action; a failure is reported at
# the end, after the other actions have run.
FAILED=()
check()
{
    local what=$1
    shift
    step "$what"
    tmo python3 "$T/raw-spec.py" "$@" || FAILED+=("$1: $what")
}

port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -t 2 -e "disk=$disk"

check "FUA on every command" fua "$addr"

check "SET_META_CONTEXT: 'base:' selects nothing; a failed SET leaves none" \
    meta_set "$addr"
check "LIST_META_CONTEXT replies carry context id 0" meta_list "$addr"
check "STRUCTURED_REPLY after EXTENDED_HEADERS" sr_after_eh "$addr"

check "options over the size limit" big_options "$addr"

server_alive
stop_server

pki=$T/pki
make_pki "$pki"
port=$(free_port)
addr=127.0.0.1:$port
start_server -l "$addr" -t 2 -e "disk=$disk" --tls=require \
    --tls-certs "$pki/server"
check "--tls=require: options over the size limit before STARTTLS" \
    big_options "$addr" yes

server_alive
stop_server

conf=$T/hidden.conf
port=$(free_port)
addr=127.0.0.1:$port
printf '[export disk]\npath = %s\n[export hidden]\npath = %s\nallow = 10.0.0.0/8\n' \
    "$disk" "$disk" >"$conf"
start_server -c "$conf" -l "$addr" -t 2
log_start=$(wc -l <"$SERVER_LOG")
FLOOD=2000
if check "$FLOOD INFO options naming a hidden export" log_flood "$addr" \
    "$FLOOD" "$T/flood.peer"; then
    peer=$(cat "$T/flood.peer")
    # The count of held-back lines is logged when the haggling ends.
    for ((i = 0; i < 100; i++)); do
        tail -n +"$log_start" "$SERVER_LOG" | grep -q "^nbd-serverd: info: $peer: .* held back" &&
            break
        sleep 0.05
    done
    tail -n +"$log_start" "$SERVER_LOG" | grep "^nbd-serverd: [a-z]*: $peer: " \
        >"$T/flood.log" || true
    lines=$(wc -l <"$T/flood.log")
    logged=$(grep -c "export 'hidden' is not allowed to this client" \
        "$T/flood.log" || true)
    held=$(awk '/ more messages? about this client (was|were) held back$/ {
        for (i = 1; i < NF; i++) if ($(i + 1) == "more") n += $i
    } END { print n + 0 }' "$T/flood.log")
    step "log lines of that connection: $lines ($logged about the export, $held counted as held back)"
    if [ "$((logged + held))" != "$FLOOD" ]; then
        FAILED+=("log_flood: $logged lines logged and $held counted as held back, want $FLOOD in all")
    fi
    # One window of CONN_LOG_BURST (10) lines, or a few if the client
    # were slow enough to see a window end; never one line per option.
    if [ "$lines" -gt 40 ]; then
        FAILED+=("log_flood: $lines log lines for $FLOOD refused options; the log is not rate-limited")
        head -n 3 "$T/flood.log" >&2
    fi
fi

server_alive
stop_server
[ "${#FAILED[@]}" = 0 ] || fail "failed: $(printf '[%s] ' "${FAILED[@]}")"
step pass
