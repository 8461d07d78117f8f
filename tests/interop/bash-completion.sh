#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The bash completions of bash-completion/: each script sources, binds
# its program (complete -p), and completes a few partial words, among
# them export names and connection ids that nbd-serverd-ctl asks a
# running server for.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

requires truncate
dir=$(pwd)/bash-completion

# complete_words SCRIPT WORD...: what the completion function of SCRIPT
# offers for the last WORD, one per line, from a fresh bash.
complete_words()
{
    local script=$1
    shift
    PATH="$(pwd)/$BUILD:$PATH" bash --norc --noprofile -c '
        set -u
        . "$1"; shift
        prog=$1
        spec=$(complete -p "$prog") || exit 3
        fn=${spec#*-F }; fn=${fn%% *}
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
        COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
        "$fn" "$prog" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]:-}"
        printf "%s\n" "${COMPREPLY[@]}"' bash "$dir/$script" "$@"
}

# expect SCRIPT "WANT..." WORD...: the completion offers exactly WANT.
expect()
{
    local script=$1 want=$2 got
    shift 2
    got=$(complete_words "$script" "$@" | sort | tr '\n' ' ' | sed 's/ $//')
    [ "$got" = "$want" ] ||
        fail "$script: '$*' completes to '$got', want '$want'"
    step "$script: '$*' -> $got"
}

for s in nbd-serverd nbd-serverd-ctl nbdc; do
    bash --norc --noprofile -c '. "$1"; complete -p "$2"' bash "$dir/$s" \
        "$s" >/dev/null || fail "$s: complete -p finds no completion"
done
expect nbd-serverd "--tls --tls-certs --tls-priority --tls-psk --tls-verify-peer" nbd-serverd --tl
expect nbd-serverd "off on require" nbd-serverd --tls ""
expect nbd-serverd "--control" nbd-serverd --contr
expect nbdc "info" nbdc in
expect nbdc "randread randrw randwrite" nbdc bench --rw rand
expect nbdc "--json" nbdc info --j
expect nbdc "--dirty-bitmap" nbdc copy --dir
expect nbd-serverd-ctl "change checkpoint connections" nbd-serverd-ctl c
expect nbd-serverd-ctl "read-only=" nbd-serverd-ctl add x read-

if is_our_server; then
    disk=$T/disk.img
    make_image "$disk" 1M
    start_server -l "unix:$T/nbd.sock" -e "alpha=$disk" -e "beta=$disk" \
        --control "$T/ctl.sock"
    expect nbd-serverd-ctl "alpha" nbd-serverd-ctl -s "$T/ctl.sock" remove al
    expect nbd-serverd-ctl "alpha beta" nbd-serverd-ctl -s "$T/ctl.sock" change ""
    stop_server
    # nbdc: export names of a TCP server, from nbdc info --list.
    port=$(free_port)
    start_server -l "127.0.0.1:$port" -e "alpha=$disk" -e "beta=$disk" \
        -e "gamma=$disk"
    PATH=$BUILD:$PATH expect nbdc "nbd://127.0.0.1:$port/alpha" \
        nbdc info "nbd://127.0.0.1:$port/al"
    PATH=$BUILD:$PATH expect nbdc \
        "nbd://127.0.0.1:$port/alpha nbd://127.0.0.1:$port/beta nbd://127.0.0.1:$port/gamma" \
        nbdc copy "nbd://127.0.0.1:$port/"
    stop_server
fi
step "pass"
