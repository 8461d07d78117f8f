# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# Shared by the tests/rbd scripts, after tests/interop/lib.sh: the
# cluster make check-rbd started (CEPH_CONF, NBDSRV_CEPH_DIR) and images
# in its pool "rbd".

[ -n "${CEPH_CONF:-}" ] && [ -f "$CEPH_CONF" ] ||
    fail "CEPH_CONF is not set: run these through make check-rbd"
requires rbd
is_our_server || skip "RBD exports are specific to nbd-serverd"

# rbdc ARGS...: the rbd tool against the test cluster, bounded.
rbdc()
{
    timeout 60 rbd --conf "$CEPH_CONF" "$@"
}

# new_image SIZE: creates a fresh image; its POOL/IMAGE in IMG.
new_image()
{
    IMG=rbd/$TEST_NAME-$$-$RANDOM
    rbdc create "$IMG" --size "$1" || fail "rbd create $IMG failed"
    step "created image $IMG ($1)"
}
