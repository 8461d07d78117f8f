# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# Shared by the robustness-<scenario>.sh scripts whose misbehaving
# clients share one server (robustness-garbage, -disconnects, -midwrite,
# -clients), on top of lib.sh: a 48 MiB image, the server with its open
# file descriptors counted, the checks that close each scenario, and a
# check of the image.  The raw clients speak through tests/lib/nbdwire.py.

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MiB=$((1024 * 1024))
disk=$T/disk.img

# robust_start: a fresh 48 MiB image as export "disk", the server on a
# free port of 127.0.0.1 (ADDR) with two threads, its fds counted.
robust_start()
{
    make_image "$disk" 48M
    port=$(free_port)
    addr=127.0.0.1:$port
    start_server -l "$addr" -t 2 -e "disk=$disk"
    fds_before=$(server_fds)
    step "server has $fds_before open file descriptors"
}

# robust_finish: the server still runs and serves, every connection the
# clients abandoned has been closed within 5 s (no fd may leak), and it
# exits 0 on SIGTERM.
robust_finish()
{
    server_alive
    tmo nbdinfo --size "$(uri disk)" >/dev/null ||
        fail "nbdinfo fails after the misbehaving clients"
    step "server still serves"
    wait_fds_at_most $((fds_before + 2)) 5
    step "open file descriptors: $fds_before before, $(server_fds) after"
    stop_server
}

# image_holds START END WHAT...: the image is 48 MiB, and bytes [START,
# END) of it hold WHAT, for each triple: "zero", one byte repeated
# ("0x33"), either of two ("0x33|zero"), or "@FILE", the bytes of FILE.
# What no triple covers is not checked.
image_holds()
{
    python3 - "$disk" $((48 * MiB)) "$@" <<'EOF' ||
import sys

image, size, specs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
with open(image, "rb") as f:
    d = f.read()
if len(d) != size:
    sys.exit("  image size %d, want %d" % (len(d), size))
for i in range(0, len(specs), 3):
    start, end, what = int(specs[i]), int(specs[i + 1]), specs[i + 2]
    wants = []
    for w in what.split("|"):
        if w == "zero":
            wants.append(bytes(end - start))
        elif w.startswith("@"):
            with open(w[1:], "rb") as f:
                wants.append(f.read())
        else:
            wants.append(bytes([int(w, 0)]) * (end - start))
    if d[start:end] not in wants:
        sys.exit("  bytes [%d, %d) of the image are not %s"
                 % (start, end, what))
EOF
        fail "the image does not hold what was acknowledged"
    step "the image holds what was acknowledged"
}
