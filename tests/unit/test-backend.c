/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the file backend: the conformance suite (fixture-backend.c)
 * over files on ext4 under /tmp and tmpfs under /dev/shm, then what only
 * the file backend promises: open errors, data round trips, FUA,
 * trim and zeroes (on ext4 under /tmp and tmpfs under /dev/shm), the
 * allocation map, readahead, references, and a loop block device when
 * the test runs as root.
 *
 * Every backend I/O call runs in a coroutine on one of two loops (they
 * alternate, so a backend is always used from more than one loop); the
 * test body itself stays on the main thread, where ck_assert is safe.
 * Temporary files are unlinked as soon as the backend has them open.
 */
#include "fixture-backend.h"
#include "fixture-loops.h"
#include "fixture-main.h"
#include "nbdsrv/backends.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
/* linux/loop.h's struct loop_config would clash with nbdsrv/loop.h's. */
#define loop_config linux_loop_config
#include <linux/loop.h>
#undef loop_config
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- Files ---- */

static void setup(void)
{
    t_reset();
    fixture_loops_start(2, 0);
}

static void teardown(void)
{
    fixture_loops_stop();
}

/*
 * Creates an empty temporary file in `dir` and returns its fd; the path
 * goes to path_out (at least 64 bytes).
 */
static int temp_create(const char *dir, char *path_out)
{
    snprintf(path_out, 64, "%s/nbdsrv-backend-XXXXXX", dir);
    int fd = mkstemp(path_out);
    ck_assert_msg(fd >= 0, "mkstemp in %s: %s", dir, strerror(errno));
    return fd;
}

/*
 * A backend over a new temporary file of `size` bytes in `dir`, already
 * unlinked.  *raw gets a second fd on the same file, for checks that
 * bypass the backend.
 */
static struct backend *temp_backend(const char *dir, uint64_t size,
                                    bool read_only, int *raw)
{
    char path[64];
    int fd = temp_create(dir, path);
    ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
    struct err err;
    err_clear(&err);
    struct backend *be = backend_file_open(path, read_only, &err);
    ck_assert_msg(be != NULL, "%s", err.msg);
    unlink(path);
    *raw = fd;
    return be;
}

static void raw_write(int fd, const void *buf, size_t len, uint64_t offset)
{
    ck_assert_int_eq(pwrite(fd, buf, len, (off_t)offset), (ssize_t)len);
}

/* Writes `len` bytes of a non-zero pattern at offset, directly. */
static void raw_fill(int fd, uint64_t offset, size_t len)
{
    unsigned char *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    fill_pattern(buf, len, 7);
    raw_write(fd, buf, len, offset);
    free(buf);
}

static long long blocks_of(int fd)
{
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    return (long long)st.st_blocks;
}

/* Whether SEEK_DATA and SEEK_HOLE see a hole covering [offset, +len). */
static bool raw_is_hole(int fd, uint64_t offset, uint64_t len)
{
    off_t d = lseek(fd, (off_t)offset, SEEK_DATA);
    return (d < 0 && errno == ENXIO) || (uint64_t)d >= offset + len;
}

static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    while (readdir(d) != NULL) {
        n++;
    }
    closedir(d);
    return n;
}

/* ---- open ---- */

static void assert_open_fails(const char *path, bool read_only,
                              const char *want_msg)
{
    struct err err;
    err_clear(&err);
    struct backend *be = backend_file_open(path, read_only, &err);
    ck_assert_ptr_null(be);
    ck_assert_int_ne(err.errnum, 0);
    ck_assert_msg(strcmp(err.msg, want_msg) == 0, "got '%s', want '%s'",
                  err.msg, want_msg);
}

UNIT_TEST("open", test_backend_open_errors)
{
    char path[64];
    int fd = temp_create("/tmp", path);
    close(fd);
    unlink(path);
    char want[128];
    snprintf(want, sizeof want, "%s: open: No such file or directory", path);
    assert_open_fails(path, false, want);
    assert_open_fails(path, true, want);

    assert_open_fails("/tmp", false, "/tmp: open: Is a directory");
    assert_open_fails("/tmp", true, "/tmp: not a regular file or block device");
    assert_open_fails("/dev/null", false,
                      "/dev/null: not a regular file or block device");

    /* A FIFO without a writer is refused, not waited on. */
    fd = temp_create("/tmp", path);
    close(fd);
    unlink(path);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    snprintf(want, sizeof want, "%s: not a regular file or block device", path);
    assert_open_fails(path, true, want);
    unlink(path);

    /* err may be NULL. */
    ck_assert_ptr_null(backend_file_open("/dev/null", true, NULL));
}
END_TEST

UNIT_TEST("open", test_backend_size_of_sparse_file)
{
    int raw;
    uint64_t size = 10 * GiB + 12345; /* sparse */
    struct backend *be = temp_backend("/tmp", size, false, &raw);
    ck_assert_uint_eq(backend_size(be), size);
    ck_assert(!backend_read_only(be));
    ck_assert(backend_can_trim(be));
    ck_assert(backend_can_zero(be));
    ck_assert(backend_can_fast_zero(be)); /* ext4 and tmpfs punch holes */
    ck_assert(backend_can_cache(be));
    ck_assert(backend_can_extents(be));
    ck_assert(!backend_is_rotational(be));
    ck_assert_int_eq(backend_concurrency(be), BACKEND_PARALLEL);
    ck_assert(backend_can_multi_conn(be));
    ck_assert_str_eq(backend_name(be), "file");
    ck_assert_int_eq(blocks_of(raw), 0); /* opening allocated nothing */
    backend_unref(be);
    close(raw);

    be = temp_backend("/dev/shm", 0, false, &raw);
    ck_assert_uint_eq(backend_size(be), 0);
    ck_assert_int_eq(blocks_of(raw), 0);
    backend_unref(be);
    close(raw);
}
END_TEST

/* ---- data ---- */

UNIT_TEST("data", test_backend_read_write_roundtrip_unaligned)
{
    int raw;
    uint64_t size = 4 * MiB + 3;
    struct backend *be = temp_backend("/tmp", size, false, &raw);
    const struct {
        uint64_t offset;
        uint32_t len;
    } cases[] = {
        {0, 1},          {1, 3},
        {511, 2},        {4095, 8193},
        {65537, 100000}, {3 * MiB + 17, 1 * MiB - 20},
        {size - 1, 1},   {size - 70001, 70001},
    };
    unsigned char *out = malloc(2 * MiB);
    unsigned char *in = malloc(2 * MiB);
    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_nonnull(in);
    for (unsigned i = 0; i < ARRAY_SIZE(cases); i++) {
        fill_pattern(out, cases[i].len, i);
        ck_assert_int_eq(
            t_pwrite(be, out, cases[i].len, cases[i].offset, false), 0);
        memset(in, 0, cases[i].len);
        ck_assert_int_eq(t_pread(be, in, cases[i].len, cases[i].offset), 0);
        ck_assert_mem_eq(in, out, cases[i].len);
        /* The same bytes through the file itself. */
        ck_assert_int_eq(pread(raw, in, cases[i].len, (off_t)cases[i].offset),
                         (ssize_t)cases[i].len);
        ck_assert_mem_eq(in, out, cases[i].len);
    }
    /* Unwritten space between writes reads as zeroes. */
    assert_reads_zero(be, 65537 + 100000, 4096);
    /* A zero-length read or write does nothing. */
    ck_assert_int_eq(t_pread(be, in, 0, size), 0);
    ck_assert_int_eq(t_pwrite(be, out, 0, size, false), 0);
    free(in);
    free(out);
    backend_unref(be);
    close(raw);
}
END_TEST

UNIT_TEST("data", test_backend_outside_size_refused)
{
    int raw;
    struct backend *be = temp_backend("/tmp", 8192, false, &raw);
    char buf[16] = {0};
    struct backend_extent ext[1];
    ck_assert_int_eq(t_pread(be, buf, 2, 8191), -EINVAL);
    ck_assert_int_eq(t_pwrite(be, buf, 1, 8192, false), -EINVAL);
    ck_assert_int_eq(t_trim(be, 4096, 8192, false), -EINVAL);
    ck_assert_int_eq(t_zero(be, UINT64_MAX, 2, 0, false), -EINVAL);
    ck_assert_int_eq(t_cache(be, 0, 8193), -EINVAL);
    ck_assert_int_eq(t_extents(be, 8192, 1, ext, 1), -EINVAL);
    ck_assert_int_eq(t_extents(be, 0, 0, ext, 1), -EINVAL);
    ck_assert_int_eq(t_extents(be, 0, 1, ext, 0), -EINVAL);
    ck_assert_int_eq(blocks_of(raw), 0);
    backend_unref(be);
    close(raw);
}
END_TEST

UNIT_TEST("data", test_backend_read_of_shrunk_file_is_eio)
{
    int raw;
    struct backend *be = temp_backend("/tmp", 64 * KiB, false, &raw);
    ck_assert_int_eq(ftruncate(raw, 16 * KiB), 0);
    char *buf = malloc(64 * KiB);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(t_pread(be, buf, 64 * KiB, 0), -EIO);
    ck_assert_int_eq(t_pread(be, buf, 16 * KiB, 0), 0);
    free(buf);
    backend_unref(be);
    close(raw);
}
END_TEST

UNIT_TEST("data", test_backend_fua_write)
{
    const char *dirs[] = {"/tmp", "/dev/shm"};
    for (unsigned d = 0; d < ARRAY_SIZE(dirs); d++) {
        int raw;
        struct backend *be = temp_backend(dirs[d], 1 * MiB, false, &raw);
        unsigned char out[12345], in[12345];
        fill_pattern(out, sizeof out, 3);
        ck_assert_int_eq(t_pwrite(be, out, sizeof out, 777, true), 0);
        ck_assert_int_eq(pread(raw, in, sizeof in, 777), (ssize_t)sizeof in);
        ck_assert_mem_eq(in, out, sizeof in);
        backend_unref(be);
        close(raw);
    }
}
END_TEST

UNIT_TEST("data", test_backend_flush)
{
    int raw;
    struct backend *be = temp_backend("/tmp", 1 * MiB, false, &raw);
    ck_assert_int_eq(t_flush(be), 0);
    ck_assert_int_eq(t_pwrite(be, "abc", 3, 100, false), 0);
    ck_assert_int_eq(t_flush(be), 0);
    backend_unref(be);
    close(raw);

    /* Read-only backends accept flush: there is simply nothing to do. */
    be = temp_backend("/tmp", 1 * MiB, true, &raw);
    ck_assert_int_eq(t_flush(be), 0);
    backend_unref(be);
    close(raw);
}
END_TEST

UNIT_TEST("data", test_backend_read_only_refuses_writes)
{
    int raw;
    struct backend *be = temp_backend("/tmp", 1 * MiB, true, &raw);
    raw_fill(raw, 0, 64 * KiB);
    long long blocks = blocks_of(raw);
    ck_assert(backend_read_only(be));
    ck_assert(!backend_can_trim(be));
    ck_assert(!backend_can_zero(be));
    ck_assert(!backend_can_fast_zero(be));
    ck_assert(backend_can_cache(be));
    ck_assert(backend_can_extents(be));

    char buf[4096];
    memset(buf, 0, sizeof buf);
    ck_assert_int_eq(t_pwrite(be, buf, sizeof buf, 0, false), -EPERM);
    ck_assert_int_eq(t_pwrite(be, buf, sizeof buf, 0, true), -EPERM);
    ck_assert_int_eq(t_trim(be, 0, 64 * KiB, false), -EPERM);
    ck_assert_int_eq(t_zero(be, 0, 64 * KiB, 0, false), -EPERM);
    ck_assert_int_eq(t_zero(be, 0, 64 * KiB,
                            BACKEND_ZERO_MAY_TRIM | BACKEND_ZERO_FAST, false),
                     -EPERM);
    /* Nothing changed, and reads still work. */
    unsigned char want[4096];
    fill_pattern(want, sizeof want, 7);
    ck_assert_int_eq(t_pread(be, buf, sizeof buf, 0), 0);
    ck_assert_mem_eq(buf, want, sizeof buf);
    ck_assert_int_eq(blocks_of(raw), blocks);
    ck_assert_int_eq(t_cache(be, 0, 64 * KiB), 0);
    struct backend_extent ext[2];
    ck_assert_int_eq(t_extents(be, 0, 1 * MiB, ext, 2), 2);
    ck_assert(!ext[0].hole);
    backend_unref(be);
    close(raw);
}
END_TEST

/* ---- trim and zeroes ---- */

/*
 * For a 1 MiB file filled by raw_fill(raw, 0, 1 MiB) and then zeroed in
 * [256 KiB, 768 KiB): the middle reads as zeroes, the edges kept their data.
 */
static void assert_middle_zeroed(struct backend *be)
{
    unsigned char *want = malloc(1 * MiB);
    unsigned char *got = malloc(1 * MiB);
    ck_assert_ptr_nonnull(want);
    ck_assert_ptr_nonnull(got);
    fill_pattern(want, 1 * MiB, 7);
    memset(want + 256 * KiB, 0, 512 * KiB);
    ck_assert_int_eq(t_pread(be, got, 1 * MiB, 0), 0);
    ck_assert(memcmp(got, want, 1 * MiB) == 0);
    free(got);
    free(want);
}

/* Checks the data/hole/data map of a file zeroed in the middle. */
static void assert_middle_hole(struct backend *be)
{
    struct backend_extent ext[4];
    ck_assert_int_eq(t_extents(be, 0, 1 * MiB, ext, 4), 3);
    ck_assert(!ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 256 * KiB);
    ck_assert(ext[1].hole);
    ck_assert_uint_eq(ext[1].length, 512 * KiB);
    ck_assert(!ext[2].hole);
    ck_assert_uint_eq(ext[2].length, 256 * KiB);
}

static void check_trim(const char *dir)
{
    int raw;
    struct backend *be = temp_backend(dir, 1 * MiB, false, &raw);
    raw_fill(raw, 0, 1 * MiB);
    ck_assert_int_eq(fsync(raw), 0);
    long long blocks = blocks_of(raw);
    ck_assert_int_eq(t_trim(be, 256 * KiB, 512 * KiB, false), 0);
    assert_middle_zeroed(be);
    assert_middle_hole(be);
    ck_assert(raw_is_hole(raw, 256 * KiB, 512 * KiB));
    ck_assert_int_lt(blocks_of(raw), blocks);
    /* Again with FUA, and over a range that is a hole already. */
    ck_assert_int_eq(t_trim(be, 256 * KiB, 512 * KiB, true), 0);
    ck_assert_int_eq(t_trim(be, 0, 0, false), 0);
    assert_middle_zeroed(be);
    backend_unref(be);
    close(raw);
}

UNIT_TEST("zero", test_backend_trim_punches_hole)
{
    check_trim("/tmp");
    check_trim("/dev/shm");
}
END_TEST

static void check_zero_may_trim(const char *dir)
{
    int raw;
    struct backend *be = temp_backend(dir, 1 * MiB, false, &raw);
    raw_fill(raw, 0, 1 * MiB);
    ck_assert_int_eq(fsync(raw), 0);
    long long blocks = blocks_of(raw);
    ck_assert_int_eq(
        t_zero(be, 256 * KiB, 512 * KiB, BACKEND_ZERO_MAY_TRIM, false), 0);
    assert_middle_zeroed(be);
    assert_middle_hole(be);
    ck_assert_int_lt(blocks_of(raw), blocks);
    backend_unref(be);
    close(raw);
}

UNIT_TEST("zero", test_backend_zero_may_trim_punches_hole)
{
    check_zero_may_trim("/tmp");
    check_zero_may_trim("/dev/shm");
}
END_TEST

/*
 * Without MAY_TRIM the blocks stay allocated: st_blocks does not drop.
 * (SEEK_DATA is no witness of that: ext4 reports ZERO_RANGE's unwritten
 * extents as holes, and tmpfs its fallocated pages.  Both read as zeroes
 * and need no new space, which is what NBD_CMD_FLAG_NO_HOLE asks for.)
 */
static void check_zero_keeps_allocation(const char *dir, bool fua)
{
    int raw;
    struct backend *be = temp_backend(dir, 1 * MiB, false, &raw);
    raw_fill(raw, 0, 1 * MiB);
    ck_assert_int_eq(fsync(raw), 0);
    long long blocks = blocks_of(raw);
    ck_assert_int_eq(t_zero(be, 256 * KiB, 512 * KiB, 0, fua), 0);
    assert_middle_zeroed(be);
    ck_assert_int_eq(blocks_of(raw), blocks);

    /* Unaligned ranges: partial blocks are zeroed, neighbours kept. */
    unsigned char buf[9000];
    ck_assert_int_eq(t_zero(be, 1000, 5000, 0, false), 0);
    ck_assert_int_eq(t_pread(be, buf, sizeof buf, 0), 0);
    unsigned char want[9000];
    fill_pattern(want, sizeof want, 7);
    memset(want + 1000, 0, 5000);
    ck_assert_mem_eq(buf, want, sizeof buf);
    ck_assert_int_eq(blocks_of(raw), blocks);
    ck_assert_int_eq(t_zero(be, 5, 0, 0, false), 0);
    backend_unref(be);
    close(raw);
}

UNIT_TEST("zero", test_backend_zero_without_trim_keeps_allocation)
{
    check_zero_keeps_allocation("/tmp", false);
    check_zero_keeps_allocation("/tmp", true);
    check_zero_keeps_allocation("/dev/shm", false);
    check_zero_keeps_allocation("/dev/shm", true);
}
END_TEST

static void check_zero_fast(const char *dir)
{
    int raw;
    struct backend *be = temp_backend(dir, 4 * MiB, false, &raw);
    ck_assert(backend_can_fast_zero(be));
    raw_fill(raw, 0, 1 * MiB);
    ck_assert_int_eq(t_zero(be, 256 * KiB, 512 * KiB, BACKEND_ZERO_FAST, false),
                     0);
    assert_middle_zeroed(be);
    raw_fill(raw, 0, 1 * MiB);
    ck_assert_int_eq(t_zero(be, 256 * KiB, 512 * KiB,
                            BACKEND_ZERO_FAST | BACKEND_ZERO_MAY_TRIM, true),
                     0);
    assert_middle_zeroed(be);
    /* Fast zeroing of a range that is all hole already. */
    ck_assert_int_eq(t_zero(be, 2 * MiB, 2 * MiB, BACKEND_ZERO_FAST, false), 0);
    assert_reads_zero(be, 2 * MiB, 2 * MiB);
    backend_unref(be);
    close(raw);
}

UNIT_TEST("zero", test_backend_zero_fast)
{
    check_zero_fast("/tmp");
    check_zero_fast("/dev/shm");
}
END_TEST

/* ---- extents ---- */

/* 2 MiB: data [0, 64K), hole to 1M, data [1M, 1M+64K), hole to the end. */
static struct backend *layout_backend(const char *dir, int *raw)
{
    struct backend *be = temp_backend(dir, 2 * MiB, false, raw);
    raw_fill(*raw, 0, 64 * KiB);
    raw_fill(*raw, 1 * MiB, 64 * KiB);
    return be;
}

static void check_extents_layout(const char *dir)
{
    int raw;
    struct backend *be = layout_backend(dir, &raw);
    struct backend_extent ext[8];
    ck_assert_int_eq(t_extents(be, 0, 2 * MiB, ext, 8), 4);
    ck_assert(!ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 64 * KiB);
    ck_assert(ext[1].hole);
    ck_assert_uint_eq(ext[1].length, 1 * MiB - 64 * KiB);
    ck_assert(!ext[2].hole);
    ck_assert_uint_eq(ext[2].length, 64 * KiB);
    ck_assert(ext[3].hole);
    ck_assert_uint_eq(ext[3].length, 1 * MiB - 64 * KiB);

    /* Starting inside the first hole. */
    ck_assert_int_eq(t_extents(be, 100 * KiB, 2 * MiB - 100 * KiB, ext, 8), 3);
    ck_assert(ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 1 * MiB - 100 * KiB);
    ck_assert(!ext[1].hole);
    ck_assert_uint_eq(ext[1].length, 64 * KiB);
    ck_assert(ext[2].hole);
    backend_unref(be);
    close(raw);
}

UNIT_TEST("extents", test_backend_extents_data_hole_data)
{
    check_extents_layout("/tmp");
    check_extents_layout("/dev/shm");
}
END_TEST

UNIT_TEST("extents", test_backend_extents_clipped_to_len)
{
    int raw;
    struct backend *be = layout_backend("/tmp", &raw);
    struct backend_extent ext[8];
    /* Ends inside the first hole. */
    ck_assert_int_eq(t_extents(be, 32 * KiB, 64 * KiB, ext, 8), 2);
    ck_assert(!ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 32 * KiB);
    ck_assert(ext[1].hole);
    ck_assert_uint_eq(ext[1].length, 32 * KiB);
    /* Entirely inside data, and entirely inside a hole. */
    ck_assert_int_eq(t_extents(be, 1 * MiB + 1, 1000, ext, 8), 1);
    ck_assert(!ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 1000);
    ck_assert_int_eq(t_extents(be, 512 * KiB, 4096, ext, 8), 1);
    ck_assert(ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 4096);
    /* A length past the end stops at the end. */
    ck_assert_int_eq(t_extents(be, 1 * MiB, UINT64_MAX / 2, ext, 8), 2);
    ck_assert_uint_eq(ext[0].length + ext[1].length, 1 * MiB);
    backend_unref(be);
    close(raw);
}
END_TEST

static void check_range_is_hole(const char *dir)
{
    int raw;
    struct backend *be = layout_backend(dir, &raw);
    /* Data at [0, 64K) and [1M, 1M+64K); holes elsewhere. */
    ck_assert_int_eq(t_is_hole(be, 0, 4096), 0);
    ck_assert_int_eq(t_is_hole(be, 64 * KiB, 4096), 1);
    ck_assert_int_eq(t_is_hole(be, 64 * KiB, 1 * MiB - 64 * KiB), 1);
    ck_assert_int_eq(t_is_hole(be, 64 * KiB, 1 * MiB - 64 * KiB + 1), 0);
    ck_assert_int_eq(t_is_hole(be, 1 * MiB + 64 * KiB, 1 * MiB - 64 * KiB), 1);
    ck_assert_int_eq(t_is_hole(be, 0, 0), -EINVAL);
    ck_assert_int_eq(t_is_hole(be, 2 * MiB - 1, 2), -EINVAL);
    backend_unref(be);
    close(raw);
}

UNIT_TEST("extents", test_backend_range_is_hole)
{
    check_range_is_hole("/tmp");
    check_range_is_hole("/dev/shm");
}
END_TEST

UNIT_TEST("extents", test_backend_extents_max_one)
{
    int raw;
    struct backend *be = layout_backend("/tmp", &raw);
    struct backend_extent ext[2] = {{.length = 0}, {.length = 12345}};
    ck_assert_int_eq(t_extents(be, 0, 2 * MiB, ext, 1), 1);
    ck_assert(!ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 64 * KiB);
    ck_assert_uint_eq(ext[1].length, 12345); /* untouched */
    ck_assert_int_eq(t_extents(be, 64 * KiB, 2 * MiB - 64 * KiB, ext, 1), 1);
    ck_assert(ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 1 * MiB - 64 * KiB);
    backend_unref(be);
    close(raw);
}
END_TEST

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

UNIT_TEST("extents", test_backend_extents_huge_sparse_file)
{
    int raw;
    struct backend *be = temp_backend("/tmp", 1 * TiB, false, &raw);
    struct backend_extent ext[4];
    double start = now_seconds();
    ck_assert_int_eq(t_extents(be, 0, 1 * MiB, ext, 4), 1);
    ck_assert(ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 1 * MiB);
    ck_assert_int_eq(t_extents(be, 0, 1 * TiB, ext, 4), 1);
    ck_assert(ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 1 * TiB);

    /* One block of data at the very end. */
    raw_fill(raw, 1 * TiB - 4096, 4096);
    ck_assert_int_eq(t_extents(be, 0, 1 * TiB, ext, 4), 2);
    ck_assert(ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 1 * TiB - 4096);
    ck_assert(!ext[1].hole);
    ck_assert_uint_eq(ext[1].length, 4096);
    ck_assert_int_eq(t_extents(be, 1 * TiB - 4096, 4096, ext, 4), 1);
    ck_assert(!ext[0].hole);
    ck_assert_double_lt(now_seconds() - start, 2.0);
    backend_unref(be);
    close(raw);
}
END_TEST

/* ---- cache ---- */

UNIT_TEST("data", test_backend_cache)
{
    int raw;
    struct backend *be = temp_backend("/tmp", 8 * MiB, false, &raw);
    raw_fill(raw, 0, 1 * MiB);
    ck_assert_int_eq(t_cache(be, 0, 1 * MiB), 0);
    ck_assert_int_eq(t_cache(be, 12345, 100), 0);
    ck_assert_int_eq(t_cache(be, 8 * MiB, 0), 0);
    backend_unref(be);
    close(raw);

    /*
     * Longer than one 32-bit fadvise: split into chunks.  tmpfs has no
     * readahead, so this costs nothing.
     */
    be = temp_backend("/dev/shm", 5 * GiB, false, &raw);
    ck_assert_int_eq(t_cache(be, 1, 5 * GiB - 1), 0);
    ck_assert_int_eq(blocks_of(raw), 0);
    backend_unref(be);
    close(raw);
}
END_TEST

/* ---- references and concurrency ---- */

UNIT_TEST("open", test_backend_refcount)
{
    int fds = count_open_fds();
    int raw;
    struct backend *be = temp_backend("/tmp", 1 * MiB, false, &raw);
    close(raw);
    ck_assert_int_eq(count_open_fds(), fds + 1);
    ck_assert_ptr_eq(backend_ref(be), be);
    ck_assert_ptr_eq(backend_ref(be), be);
    char buf[4] = "abc";
    for (int i = 0; i < 2; i++) {
        backend_unref(be);
        ck_assert_int_eq(t_pwrite(be, buf, 3, (uint64_t)i * 10, false), 0);
        ck_assert_int_eq(t_pread(be, buf, 3, 0), 0);
        ck_assert_mem_eq(buf, "abc", 3);
        ck_assert_int_eq(count_open_fds(), fds + 1);
    }
    backend_unref(be);
    ck_assert_int_eq(count_open_fds(), fds);
    backend_unref(NULL);
}
END_TEST

/* ---- block devices ---- */

/*
 * Attaches a free loop device to `backing_fd` and returns an fd on it, its
 * path in dev_out; the device detaches itself on its last close.  Returns
 * -1 when this process may not (not root, no loop driver).
 */
static int loop_device_attach(int backing_fd, char *dev_out, size_t size)
{
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) {
        return -1;
    }
    int fd = -1;
    for (int attempt = 0; attempt < 10 && fd < 0; attempt++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0) {
            break;
        }
        snprintf(dev_out, size, "/dev/loop%d", n);
        fd = open(dev_out, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            break;
        }
        struct linux_loop_config config = {.fd = (unsigned)backing_fd};
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        if (ioctl(fd, LOOP_CONFIGURE, &config) != 0) {
            int e = errno;
            close(fd);
            fd = -1;
            if (e != EBUSY) {
                break; /* EBUSY: another process took it first */
            }
        }
    }
    close(ctl);
    return fd;
}

UNIT_TEST("blockdev", test_backend_block_device)
{
    char path[64], dev[64];
    int backing = temp_create("/tmp", path);
    unlink(path);
    ck_assert_int_eq(ftruncate(backing, 8 * MiB), 0);
    raw_fill(backing, 0, 1 * MiB);
    int loop_fd = loop_device_attach(backing, dev, sizeof dev);
    if (loop_fd < 0) {
        fprintf(stderr, "test_backend_block_device: no loop device, "
                        "skipped\n");
        close(backing);
        return;
    }
    close(backing);
    struct err err;
    err_clear(&err);
    struct backend *be = backend_file_open(dev, false, &err);
    ck_assert_msg(be != NULL, "%s", err.msg);
    ck_assert_uint_eq(backend_size(be), 8 * MiB);
    ck_assert(backend_can_trim(be));
    ck_assert(backend_can_zero(be));

    /* The first MiB as it should read; unaligned requests keep it so. */
    unsigned char *model = malloc(1 * MiB);
    unsigned char *got = malloc(1 * MiB);
    ck_assert_ptr_nonnull(model);
    ck_assert_ptr_nonnull(got);
    fill_pattern(model, 1 * MiB, 7);
    fill_pattern(model + 3 * KiB + 7, 5000, 9);
    ck_assert_int_eq(t_pwrite(be, model + 3 * KiB + 7, 5000, 3 * KiB + 7, true),
                     0);
    ck_assert_int_eq(t_zero(be, 100, 300 * KiB + 1, 0, false), 0);
    memset(model + 100, 0, 300 * KiB + 1);
    ck_assert_int_eq(t_zero(be, 400 * KiB + 3, 10, BACKEND_ZERO_FAST, true), 0);
    memset(model + 400 * KiB + 3, 0, 10);
    ck_assert_int_eq(
        t_zero(be, 500 * KiB + 1, 20 * KiB, BACKEND_ZERO_MAY_TRIM, false), 0);
    memset(model + 500 * KiB + 1, 0, 20 * KiB);
    ck_assert_int_eq(t_pread(be, got, 1 * MiB, 0), 0);
    ck_assert(memcmp(got, model, 1 * MiB) == 0);
    free(got);
    free(model);

    int r = t_zero(be, 512 * KiB, 256 * KiB,
                   BACKEND_ZERO_FAST | BACKEND_ZERO_MAY_TRIM, false);
    ck_assert_int_eq(r, backend_can_fast_zero(be) ? 0 : -ENOTSUP);
    ck_assert_int_eq(t_trim(be, 1 * MiB + 1, 2 * MiB, true), 0);
    ck_assert_int_eq(t_flush(be), 0);
    ck_assert_int_eq(t_cache(be, 0, 8 * MiB), 0);

    /* Block devices have no holes to show: one data extent. */
    struct backend_extent ext[4];
    ck_assert_int_eq(t_extents(be, 4096, 8 * MiB - 4096, ext, 4), 1);
    ck_assert(!ext[0].hole);
    ck_assert_uint_eq(ext[0].length, 8 * MiB - 4096);
    backend_unref(be);

    be = backend_file_open(dev, true, &err);
    ck_assert_msg(be != NULL, "%s", err.msg);
    char buf[512] = {0};
    ck_assert_int_eq(t_pwrite(be, buf, sizeof buf, 0, false), -EPERM);
    ck_assert(!backend_can_fast_zero(be));
    backend_unref(be);
    close(loop_fd);
}
END_TEST

/* ---- cache=none ---- */

/*
 * cache=none: aligned I/O goes through O_DIRECT, unaligned I/O (and
 * aligned I/O from an unaligned buffer) through the page cache, and the
 * two stay coherent with each other and with the file.  /var/tmp, as the
 * file system must take O_DIRECT (tmpfs before Linux 6.6 does not).
 */
UNIT_TEST("data", test_backend_direct_roundtrip)
{
    char path[64];
    int raw = temp_create("/var/tmp", path);
    uint64_t size = 4 * MiB + 3;
    ck_assert_int_eq(ftruncate(raw, (off_t)size), 0);
    struct err err;
    err_clear(&err);
    struct backend *be =
        backend_file_open_flags(path, BACKEND_OPEN_DIRECT, &err);
    unlink(path);
    ck_assert_msg(be != NULL, "%s", err.msg);
    ck_assert(backend_file_is_direct(be));
    const struct {
        uint64_t offset;
        uint32_t len;
        unsigned misalign; /* added to the buffer address */
    } cases[] = {
        {0, 4096, 0},           {8192, 65536, 0},      {1, 3, 0},
        {4095, 8193, 0},        {4096, 4096, 1},       {size - 3, 3, 0},
        {size - 4099, 4099, 0}, {1 * MiB, 1 * MiB, 0}, {12288, 4096, 0},
    };
    unsigned char *out, *in;
    ck_assert_int_eq(posix_memalign((void **)&out, 4096, 2 * MiB), 0);
    ck_assert_int_eq(posix_memalign((void **)&in, 4096, 2 * MiB), 0);
    for (unsigned i = 0; i < ARRAY_SIZE(cases); i++) {
        unsigned char *o = out + cases[i].misalign;
        unsigned char *n = in + cases[i].misalign;
        fill_pattern(o, cases[i].len, i + 40);
        ck_assert_int_eq(
            t_pwrite(be, o, cases[i].len, cases[i].offset, i % 2 == 1), 0);
        memset(n, 0, cases[i].len);
        ck_assert_int_eq(t_pread(be, n, cases[i].len, cases[i].offset), 0);
        ck_assert_mem_eq(n, o, cases[i].len);
        ck_assert_int_eq(pread(raw, n, cases[i].len, (off_t)cases[i].offset),
                         (ssize_t)cases[i].len);
        ck_assert_mem_eq(n, o, cases[i].len);
    }
    /* A buffered write through another fd, then an aligned direct read. */
    fill_pattern(out, 8192, 99);
    raw_write(raw, out, 8192, 16384);
    ck_assert_int_eq(t_pread(be, in, 8192, 16384), 0);
    ck_assert_mem_eq(in, out, 8192);
    /* An unaligned (buffered) write inside a block, then a direct read. */
    fill_pattern(out + 100, 10, 7);
    ck_assert_int_eq(t_pwrite(be, out + 100, 10, 16384 + 100, false), 0);
    ck_assert_int_eq(t_pread(be, in, 8192, 16384), 0);
    ck_assert_mem_eq(in, out, 8192);
    ck_assert_int_eq(t_flush(be), 0);
    free(in);
    free(out);
    backend_unref(be);
    close(raw);
}
END_TEST

/* A conformance layer: a new sparse file in `dir`, already unlinked. */
static struct backend *conformance_file(const char *dir, uint64_t size,
                                        bool read_only)
{
    int raw;
    struct backend *be = temp_backend(dir, size, read_only, &raw);
    close(raw);
    return be;
}

static struct backend *conformance_tmp(uint64_t size, bool read_only)
{
    return conformance_file("/tmp", size, read_only);
}

static struct backend *conformance_shm(uint64_t size, bool read_only)
{
    return conformance_file("/dev/shm", size, read_only);
}

static const struct backend_impl conformance_impls[] = {
    {.name = "file on /tmp", .open = conformance_tmp, .holes = true},
    {.name = "file on /dev/shm", .open = conformance_shm, .holes = true},
};

UNIT_SUITE("backend");
UNIT_TCASE("open", 30, setup, teardown);
UNIT_TCASE("data", 60, setup, teardown);
UNIT_TCASE("zero", 60, setup, teardown);
UNIT_TCASE("extents", 30, setup, teardown);
UNIT_TCASE("blockdev", 60, setup, teardown);
FIXTURE_BACKEND_CONFORMANCE(conformance_impls);
