#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A SIGHUP reload that is refused changes nothing at all: a new file
# that changes the TLS settings (good ones) and adds an export whose
# image cannot be opened is refused, and the TLS mode and credentials in
# force stay those of the running configuration.  The image is a copy of
# sleep(1) that is running: the configuration checks (it is a readable
# and writable file) pass, and the server's read-write open fails with
# ETXTBSY, so the refusal comes from the server's export table, after
# the new TLS credentials have been loaded.
#  - running with tls = off, a refused reload to tls = require leaves
#    plain clients served;
#  - running with tls = require and one CA, a refused reload to a
#    server certificate of another CA leaves TLS clients of the first CA
#    served;
#  - running with tls = require, a refused reload to tls = off leaves
#    plain clients refused and TLS clients served.
# A good reload afterwards does apply (the checks can see a change).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires nbdinfo certtool truncate
is_our_server || skip "reloading a configuration file is specific to nbd-serverd"

make_image "$T/a.img" 4M
# z.img: an executable file that is running.
cp "$(command -v sleep)" "$T/z.img"
chmod +x "$T/z.img"
"$T/z.img" 600 &
track_pid $!
python3 - "$T/z.img" <<'EOF' ||
import errno, os, sys, time
for _ in range(100):
    try:
        os.close(os.open(sys.argv[1], os.O_RDWR))
    except OSError as e:
        sys.exit(0 if e.errno == errno.ETXTBSY else 1)
    time.sleep(0.05)    # not running yet
sys.exit(1)
EOF
    skip "this system lets a running executable be opened for writing"
pki=$T/pki
make_pki "$pki"
# A second PKI: its CA does not sign the first one's certificates.
pki2=$T/pki2
make_pki "$pki2"
port=$(free_port)
conf=$T/nbd-serverd.conf

# write_conf TLS_LINES EXTRA_EXPORT: the configuration file.
write_conf()
{
    {
        printf '[server]\nlisten = 127.0.0.1:%s\nthreads = 2\n%s\n' "$port" "$1"
        printf '[export a]\npath = a.img\n'
        [ -z "$2" ] || printf '[export %s]\npath = %s.img\n' "$2" "$2"
    } >"$conf"
}

plain_uri="nbd://127.0.0.1:$port/a"
tls_uri1="$(tls_uri "127.0.0.1:$port" a "tls-certificates=$pki/client")"
tls_uri2="$(tls_uri "127.0.0.1:$port" a "tls-certificates=$pki2/client")"

served()
{
    local what=$1 uri=$2 size
    size=$(tmo nbdinfo --size "$uri" 2>"$T/nbdinfo.err") ||
        fail "$what: not served: $(cat "$T/nbdinfo.err")"
    [ "$size" = 4194304 ] || fail "$what: size $size"
    step "$what: served"
}

refused()
{
    expect_fail "$1" nbdinfo --size "$2"
}

# reload_and_wait: SIGHUP, then wait for the reload's log line (the
# N-th "reload" line: "reloaded:" or "reload failed").
reloads=0
reload_and_wait()
{
    local i
    reloads=$((reloads + 1))
    kill -HUP "$SERVER_PID"
    for ((i = 0; i < 200; i++)); do
        [ "$(grep -c -E 'reloaded: |reload failed' "$SERVER_LOG" || true)" -ge "$reloads" ] &&
            return 0
        sleep 0.05
    done
    fail "reload $reloads was not logged"
}

# refused_reload TLS_LINES: a reload with these TLS settings and export
# z must be refused, naming the export.
refusals=0
refused_reload()
{
    write_conf "$1" z
    reload_and_wait
    refusals=$((refusals + 1))
    [ "$(grep -c "reload failed, the running configuration stays: export 'z'" \
        "$SERVER_LOG")" = "$refusals" ] ||
        fail "the reload was not refused at export z"
    step "reload with [$(echo "$1" | tr '\n' ' ')] and export z: refused"
}

step "running with tls = off"
write_conf "tls = off" ""
start_server -c "$conf" -l "127.0.0.1:$port"
served "plain client" "$plain_uri"
refused_reload "$(printf 'tls = require\ntls-certs = %s' "$pki/server")"
served "plain client after the refused reload" "$plain_uri"

step "a good reload to tls = require does apply"
write_conf "$(printf 'tls = require\ntls-certs = %s' "$pki/server")" ""
reload_and_wait
refused "plain client once TLS is required" "$plain_uri"
served "TLS client of the first CA" "$tls_uri1"

step "running with tls = require and the first CA"
refused_reload "$(printf 'tls = require\ntls-certs = %s' "$pki2/server")"
served "TLS client of the first CA after the refused reload" "$tls_uri1"
refused "TLS client of the second CA" "$tls_uri2"
refused_reload "tls = off"
refused "plain client after the refused reload to tls = off" "$plain_uri"
served "TLS client after the refused reload to tls = off" "$tls_uri1"

step "a good reload to the second CA does apply"
write_conf "$(printf 'tls = require\ntls-certs = %s' "$pki2/server")" ""
reload_and_wait
served "TLS client of the second CA" "$tls_uri2"
refused "TLS client of the first CA" "$tls_uri1"

server_alive
stop_server
step pass
