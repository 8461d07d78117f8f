/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the copy-on-write overlay: the conformance suite over a
 * memory base and over file bases (overlay files on ext4 under /tmp, on
 * tmpfs under /dev/shm, and with cache=none), then what only the overlay
 * promises: reads through to the base, copy-up of partial blocks (also
 * when many writers race for one block), a base never written, trims and
 * zeroes that mask the base, the map persisted at FLUSH and FUA and not
 * before (a copy of the file taken while the daemon runs is what a kill
 * -9 leaves), the on-disk format, and the errors of a bad overlay file.
 */
#include "fixture-backend.h"
#include "fixture-loops.h"
#include "fixture-main.h"
#include "nbdsrv/backends.h"
#include "nbdsrv/compiler.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GRAN BACKEND_OVERLAY_GRANULARITY

static void setup(void)
{
    t_reset();
    fixture_loops_start(2, 0);
}

static void teardown(void)
{
    fixture_loops_stop();
}

/* A fresh path (not created) in `dir`: at least 96 bytes. */
static void temp_path(const char *dir, char *out)
{
    snprintf(out, 96, "%s/nbdsrv-overlay-XXXXXX", dir);
    int fd = mkstemp(out);
    ck_assert_msg(fd >= 0, "mkstemp: %s", strerror(errno));
    close(fd);
    unlink(out);
}

/* Writes a base file of `size` bytes (pattern `seed`, or sparse zeroes
 * when seed is 0) at a new path in /tmp. */
static void make_base(char *path, uint64_t size, unsigned seed)
{
    temp_path("/tmp", path);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
    if (seed != 0) {
        unsigned char *buf = malloc(size);
        ck_assert_ptr_nonnull(buf);
        fill_pattern(buf, size, seed);
        ck_assert_int_eq(pwrite(fd, buf, size, 0), (ssize_t)size);
        free(buf);
    }
    close(fd);
}

static unsigned char *read_file(const char *path, uint64_t *size)
{
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    unsigned char *buf = malloc((size_t)st.st_size + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(pread(fd, buf, (size_t)st.st_size, 0),
                     (ssize_t)st.st_size);
    close(fd);
    *size = (uint64_t)st.st_size;
    return buf;
}

/* Copies a file byte for byte: what a kill -9 leaves of it (the page
 * cache survives the process). */
static void copy_file(const char *from, const char *to)
{
    uint64_t size;
    unsigned char *buf = read_file(from, &size);
    int fd = open(to, O_RDWR | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, buf, size, 0), (ssize_t)size);
    close(fd);
    free(buf);
}

static struct backend *base_file(const char *path)
{
    struct err err;
    err_clear(&err);
    struct backend *be = backend_file_open(path, true, &err);
    ck_assert_msg(be != NULL, "%s", err.msg);
    return be;
}

static struct backend *ovl_open(struct backend *base, const char *path,
                                unsigned flags)
{
    struct err err;
    err_clear(&err);
    struct backend *be = backend_overlay_open(base, path, flags, &err);
    ck_assert_msg(be != NULL, "%s", err.msg);
    return be;
}

/* backend_overlay_open must fail with errnum and a message containing
 * `want`. */
static void ovl_open_fails(struct backend *base, const char *path,
                           unsigned flags, int errnum, const char *want)
{
    struct err err;
    err_clear(&err);
    ck_assert_ptr_null(backend_overlay_open(base, path, flags, &err));
    ck_assert_msg(strstr(err.msg, want) != NULL, "message '%s' lacks '%s'",
                  err.msg, want);
    ck_assert_int_eq(err.errnum, errnum);
}

/* ---- Conformance ---- */

/*
 * An overlay file in `dir` over base `base_take`; unlinked at once (its
 * flock and data live with the open file).  read_only: a new overlay is
 * made first, closed, and opened again read-only.
 */
static struct backend *conformance_overlay(struct backend *base_take,
                                           const char *dir, bool read_only,
                                           unsigned flags)
{
    char path[96];
    temp_path(dir, path);
    if (read_only) {
        backend_unref(ovl_open(backend_ref(base_take), path, flags));
        flags |= BACKEND_OPEN_READ_ONLY;
    }
    struct backend *be = ovl_open(base_take, path, flags);
    unlink(path);
    return be;
}

static struct backend *conf_memory(uint64_t size, bool read_only)
{
    struct backend *base = backend_memory_new(size, true, NULL);
    ck_assert_ptr_nonnull(base);
    return conformance_overlay(base, "/tmp", read_only, 0);
}

static struct backend *conf_file(const char *dir, uint64_t size, bool read_only,
                                 unsigned flags)
{
    char path[96];
    make_base(path, size, 0);
    struct backend *base = base_file(path);
    unlink(path);
    return conformance_overlay(base, dir, read_only, flags);
}

static struct backend *conf_file_tmp(uint64_t size, bool read_only)
{
    return conf_file("/tmp", size, read_only, 0);
}

static struct backend *conf_file_shm(uint64_t size, bool read_only)
{
    return conf_file("/dev/shm", size, read_only, 0);
}

static struct backend *conf_file_direct(uint64_t size, bool read_only)
{
    return conf_file("/tmp", size, read_only, BACKEND_OPEN_DIRECT);
}

static const struct backend_impl conformance_impls[] = {
    {.name = "overlay over memory", .open = conf_memory, .holes = true},
    {.name = "overlay on /tmp", .open = conf_file_tmp, .holes = true},
    {.name = "overlay on /dev/shm", .open = conf_file_shm, .holes = true},
    {.name = "overlay cache=none", .open = conf_file_direct, .holes = true},
};

/* ---- Helpers for the overlay's own tests ---- */

/* An overlay test: a patterned base file and an overlay path, both in
 * /tmp, removed at the end. */
struct fix {
    char base[96], ovl[96];
    uint64_t size;
    unsigned char *model; /* what the export must read as */
    unsigned char *orig;  /* the base file's bytes */
};

static void fix_init(struct fix *f, uint64_t size)
{
    f->size = size;
    make_base(f->base, size, 77);
    temp_path("/tmp", f->ovl);
    f->model = malloc(size);
    f->orig = malloc(size);
    ck_assert(f->model != NULL && f->orig != NULL);
    fill_pattern(f->orig, size, 77);
    memcpy(f->model, f->orig, size);
}

static struct backend *fix_open(struct fix *f, unsigned flags)
{
    return ovl_open(base_file(f->base), f->ovl, flags);
}

/* The base file is still exactly what it was. */
static void fix_base_unchanged(const struct fix *f)
{
    uint64_t size;
    unsigned char *now = read_file(f->base, &size);
    ck_assert_uint_eq(size, f->size);
    ck_assert_msg(memcmp(now, f->orig, size) == 0, "the base was written");
    free(now);
}

static void fix_fini(struct fix *f)
{
    fix_base_unchanged(f);
    unlink(f->base);
    unlink(f->ovl);
    free(f->model);
    free(f->orig);
}

/* `be` reads as `want` over [0, size). */
static void check_reads(struct backend *be, const unsigned char *want,
                        uint64_t size)
{
    unsigned char *got = malloc(size);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(t_pread(be, got, size, 0), 0);
    for (uint64_t i = 0; i < size; i++) {
        if (got[i] != want[i]) {
            ck_abort_msg("byte %llu reads %u, want %u", (unsigned long long)i,
                         got[i], want[i]);
        }
    }
    free(got);
}

static void fix_write(struct fix *f, struct backend *be, uint64_t offset,
                      uint32_t len, unsigned seed, bool fua)
{
    fill_pattern(f->model + offset, len, seed);
    ck_assert_int_eq(t_pwrite(be, f->model + offset, len, offset, fua), 0);
}

struct meta_call {
    struct backend *be;
    uint64_t offset, len;
    struct backend_extent *ext;
    unsigned max;
    int r;
};

static void meta_entry(void *arg)
{
    struct meta_call *c = arg;
    c->r = backend_extents_meta(c->be, BACKEND_META_DEPTH, c->offset, c->len,
                                c->ext, c->max);
}

/* The depth map (BACKEND_META_DEPTH) as "depth:len ...": 1 is the
 * overlay, 2 its base. */
static void depth_map(struct backend *be, char *out, size_t size)
{
    struct backend_extent ext[32];
    struct meta_call c = {.be = be,
                          .offset = 0,
                          .len = backend_size(be),
                          .ext = ext,
                          .max = ARRAY_SIZE(ext)};
    fixture_run_on(0, meta_entry, &c);
    ck_assert_int_gt(c.r, 0);
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < c.r; i++) {
        used += (size_t)snprintf(out + used, size - used, "%s%u:%llu",
                                 i > 0 ? " " : "", ext[i].depth,
                                 (unsigned long long)ext[i].length);
    }
}

/* ---- Tests ---- */

UNIT_TEST("overlay", test_backend_overlay_facts)
{
    struct fix f;
    fix_init(&f, 1 * MiB + 5);
    struct backend *be = fix_open(&f, 0);
    ck_assert_str_eq(backend_name(be), "overlay");
    ck_assert_uint_eq(backend_size(be), 1 * MiB + 5);
    ck_assert(!backend_read_only(be));
    ck_assert(backend_can_trim(be));
    ck_assert(backend_can_zero(be));
    ck_assert(backend_can_extents(be));
    ck_assert(backend_can_multi_conn(be));
    ck_assert_int_eq(backend_concurrency(be), BACKEND_PARALLEL);
    /* The identity of the chain is the base's. */
    ck_assert(backend_same_file(be, f.base));
    ck_assert(!backend_same_file(be, f.ovl));
    backend_unref(be);
    fix_fini(&f);
}
END_TEST

UNIT_TEST("overlay", test_backend_overlay_reads_base_and_copies_up)
{
    struct fix f;
    fix_init(&f, 4 * MiB + 1000);
    struct backend *be = fix_open(&f, 0);
    check_reads(be, f.model, f.size);
    /* Partial blocks: the rest of each block keeps the base's bytes. */
    fix_write(&f, be, 1000, 3000, 1, false);
    fix_write(&f, be, GRAN - 10, 20, 2, false);
    fix_write(&f, be, 3 * GRAN + 5, GRAN, 3, true);
    /* Whole blocks, and the short last block. */
    fix_write(&f, be, 8 * GRAN, 4 * GRAN, 4, false);
    fix_write(&f, be, f.size - 7, 7, 5, false);
    fix_write(&f, be, 2 * MiB, 1 * MiB, 6, false);
    check_reads(be, f.model, f.size);
    char map[512];
    depth_map(be, map, sizeof map);
    ck_assert_str_eq(map, "1:131072 2:65536 1:131072 2:196608 1:262144 "
                          "2:1310720 1:1048576 2:1048576 1:1000");
    backend_unref(be);
    fix_fini(&f);
}
END_TEST

/* A backend holds all its bytes, holes too: depth 1 throughout. */
UNIT_TEST("overlay", test_backend_overlay_depth_of_a_backend)
{
    struct backend *mem = backend_memory_new(1 * MiB, false, NULL);
    ck_assert_ptr_nonnull(mem);
    unsigned char buf[4096];
    fill_pattern(buf, sizeof buf, 9);
    ck_assert_int_eq(t_pwrite(mem, buf, sizeof buf, 64 * 1024, false), 0);
    char map[128];
    depth_map(mem, map, sizeof map);
    ck_assert_str_eq(map, "1:1048576");
    backend_unref(mem);
}
END_TEST

/* An overlay over an overlay: each layer adds one to what it reads
 * through, so the base file is depth 3 from the top. */
UNIT_TEST("overlay", test_backend_overlay_depth_counts_stacked_layers)
{
    struct fix f;
    fix_init(&f, 1 * MiB);
    struct backend *mid = fix_open(&f, 0);
    fix_write(&f, mid, 2 * GRAN, GRAN, 1, false);
    char top_path[96];
    temp_path("/tmp", top_path);
    struct backend *top = ovl_open(mid, top_path, 0);
    fix_write(&f, top, 0, 100, 2, false);
    fix_write(&f, top, 2 * GRAN + GRAN / 2, 10, 3, false);
    check_reads(top, f.model, f.size);
    char map[256];
    depth_map(top, map, sizeof map);
    ck_assert_str_eq(map, "1:65536 3:65536 1:65536 3:851968");
    backend_unref(top);
    unlink(top_path);
    fix_fini(&f);
}
END_TEST

UNIT_TEST("overlay", test_backend_overlay_survives_reopen)
{
    struct fix f;
    fix_init(&f, 2 * MiB);
    struct backend *be = fix_open(&f, 0);
    fix_write(&f, be, 100, 70000, 1, false);
    ck_assert_int_eq(t_flush(be), 0);
    /* Never flushed: the last reference still commits it. */
    fix_write(&f, be, 1 * MiB + 3, 5, 2, false);
    backend_unref(be);
    be = fix_open(&f, 0);
    check_reads(be, f.model, f.size);
    backend_unref(be);
    /* Read-only, the overlay serves what it holds. */
    be = fix_open(&f, BACKEND_OPEN_READ_ONLY);
    ck_assert(backend_read_only(be));
    check_reads(be, f.model, f.size);
    ck_assert_int_eq(t_pwrite(be, "x", 1, 0, false), -EPERM);
    backend_unref(be);
    fix_fini(&f);
}
END_TEST

/*
 * A copy of the overlay file taken while it is open is what a kill -9
 * leaves.  Blocks first written since the last commit read the base in
 * it; after FLUSH, or a FUA write, the copy holds them.
 */
UNIT_TEST("overlay", test_backend_overlay_map_persisted_at_flush_and_fua)
{
    struct fix f;
    fix_init(&f, 2 * MiB);
    char copy[96];
    temp_path("/tmp", copy);
    struct backend *be = fix_open(&f, 0);
    fix_write(&f, be, 0, 1000, 1, false);
    ck_assert_int_eq(t_flush(be), 0);
    unsigned char *flushed = malloc(f.size);
    memcpy(flushed, f.model, f.size);

    /* New blocks, not flushed: the copy reads them from the base. */
    fix_write(&f, be, 5 * GRAN, 100, 2, false);
    fix_write(&f, be, 10 * GRAN, GRAN, 3, false);
    copy_file(f.ovl, copy);
    struct backend *c = ovl_open(base_file(f.base), copy, 0);
    check_reads(c, flushed, f.size);
    backend_unref(c);

    /* After a FLUSH the copy holds them. */
    ck_assert_int_eq(t_flush(be), 0);
    copy_file(f.ovl, copy);
    c = ovl_open(base_file(f.base), copy, 0);
    check_reads(c, f.model, f.size);
    backend_unref(c);

    /* A FUA write into a new block, and one into a committed block. */
    fix_write(&f, be, 20 * GRAN + 7, 9, 4, true);
    fix_write(&f, be, 10 * GRAN + 1, 9, 5, true);
    copy_file(f.ovl, copy);
    c = ovl_open(base_file(f.base), copy, 0);
    check_reads(c, f.model, f.size);
    backend_unref(c);

    /* FUA zeroes and trims of new blocks too. */
    ck_assert_int_eq(t_zero(be, 24 * GRAN, GRAN, 0, true), 0);
    memset(f.model + 24 * GRAN, 0, GRAN);
    ck_assert_int_eq(t_trim(be, 26 * GRAN, 2 * GRAN, true), 0);
    memset(f.model + 26 * GRAN, 0, 2 * GRAN);
    copy_file(f.ovl, copy);
    c = ovl_open(base_file(f.base), copy, 0);
    check_reads(c, f.model, f.size);
    backend_unref(c);

    backend_unref(be);
    unlink(copy);
    free(flushed);
    fix_fini(&f);
}
END_TEST

UNIT_TEST("overlay", test_backend_overlay_zero_and_trim_mask_the_base)
{
    struct fix f;
    fix_init(&f, 2 * MiB);
    struct backend *be = fix_open(&f, 0);
    /* A zero of whole blocks, and of part of one (a copy-up). */
    ck_assert_int_eq(
        t_zero(be, 2 * GRAN, 2 * GRAN, BACKEND_ZERO_MAY_TRIM, false), 0);
    memset(f.model + 2 * GRAN, 0, 2 * GRAN);
    ck_assert_int_eq(t_zero(be, 6 * GRAN + 10, 100, 0, false), 0);
    memset(f.model + 6 * GRAN + 10, 0, 100);
    /* A fast zero of part of a block still in the base is not fast. */
    ck_assert_int_eq(t_zero(be, 8 * GRAN + 1, GRAN, BACKEND_ZERO_FAST, false),
                     -ENOTSUP);
    ck_assert_int_eq(t_zero(be, 9 * GRAN, GRAN - 1, BACKEND_ZERO_FAST, false),
                     -ENOTSUP);
    /* A trim masks whole blocks and leaves partial ones of the base. */
    ck_assert_int_eq(t_trim(be, 12 * GRAN - 5, 2 * GRAN + 10, false), 0);
    memset(f.model + 12 * GRAN, 0, 2 * GRAN);
    check_reads(be, f.model, f.size);
    /* The zeroed and trimmed blocks are holes of the allocation map. */
    struct backend_extent ext[8];
    ck_assert_int_eq(t_extents(be, 2 * GRAN, 2 * GRAN, ext, 8), 1);
    ck_assert(ext[0].hole);
    ck_assert_int_eq(t_is_hole(be, 12 * GRAN, 2 * GRAN), 1);
    ck_assert_int_eq(t_is_hole(be, 11 * GRAN, 2 * GRAN), 0);
    char map[512];
    depth_map(be, map, sizeof map);
    ck_assert_str_eq(map, "2:131072 1:131072 2:131072 1:65536 2:327680 "
                          "1:131072 2:1179648");
    backend_unref(be);
    be = fix_open(&f, 0);
    check_reads(be, f.model, f.size);
    backend_unref(be);
    fix_fini(&f);
}
END_TEST

#define RACE_LOOPS 4
#define RACE_WRITERS 16
#define RACE_BLOCKS 32

struct race {
    struct backend *be;
    atomic_int done;
    atomic_int failures;
};

struct race_writer {
    struct race *race;
    unsigned id;
};

/*
 * Writer i writes slice i (GRAN / RACE_WRITERS bytes) of every block: all
 * writers copy up the same blocks at once, from several loops.
 */
static void race_entry(void *arg)
{
    struct race_writer *w = arg;
    uint32_t slice = GRAN / RACE_WRITERS;
    unsigned char buf[GRAN / RACE_WRITERS];
    int bad = 0;
    for (unsigned b = 0; b < RACE_BLOCKS; b++) {
        memset(buf, (int)(w->id + 1), sizeof buf);
        bad |= backend_pwrite(w->race->be, buf, slice,
                              (uint64_t)b * GRAN + w->id * slice, false) != 0;
    }
    atomic_fetch_add(&w->race->failures, bad);
    atomic_fetch_add(&w->race->done, 1);
}

static bool race_done(void *arg)
{
    return atomic_load(&((struct race *)arg)->done) == RACE_WRITERS;
}

UNIT_TEST("overlay", test_backend_overlay_copy_up_race)
{
    fixture_loops_stop();
    fixture_loops_start(RACE_LOOPS, 0);
    struct fix f;
    fix_init(&f, RACE_BLOCKS * GRAN);
    for (unsigned round = 0; round < 5; round++) {
        unlink(f.ovl);
        struct race race = {.done = 0, .failures = 0};
        race.be = fix_open(&f, 0);
        struct race_writer w[RACE_WRITERS];
        for (unsigned i = 0; i < RACE_WRITERS; i++) {
            w[i] = (struct race_writer){.race = &race, .id = i};
            fixture_spawn_on(i % RACE_LOOPS, race_entry, &w[i]);
        }
        ck_assert(fixture_wait_until(race_done, &race, 30000));
        ck_assert_int_eq(atomic_load(&race.failures), 0);
        for (uint64_t i = 0; i < f.size; i++) {
            f.model[i] =
                (unsigned char)((i % GRAN) / (GRAN / RACE_WRITERS) + 1);
        }
        check_reads(race.be, f.model, f.size);
        backend_unref(race.be);
    }
    fix_fini(&f);
}
END_TEST

UNIT_TEST("overlay", test_backend_overlay_on_disk_format)
{
    struct fix f;
    fix_init(&f, 3 * GRAN + 100);
    struct backend *be = fix_open(&f, 0);
    fix_write(&f, be, 2 * GRAN + 1, 1, 1, true);
    backend_unref(be);
    uint64_t size;
    unsigned char *img = read_file(f.ovl, &size);
    ck_assert_mem_eq(img, "nbdsrvOV", 8);
    uint32_t u32;
    uint64_t u64;
    memcpy(&u32, img + 8, 4); /* the test host is little-endian */
    ck_assert_uint_eq(u32, 1);
    memcpy(&u32, img + 12, 4);
    ck_assert_uint_eq(u32, 4096);
    memcpy(&u32, img + 16, 4);
    ck_assert_uint_eq(u32, GRAN);
    memcpy(&u32, img + 20, 4);
    ck_assert_uint_eq(u32, 0);
    memcpy(&u64, img + 24, 8);
    ck_assert_uint_eq(u64, f.size);
    memcpy(&u64, img + 32, 8);
    ck_assert_uint_eq(u64, f.size);
    memcpy(&u64, img + 40, 8);
    ck_assert_uint_eq(u64, 4096);
    memcpy(&u64, img + 48, 8);
    ck_assert_uint_eq(u64, 4096);
    memcpy(&u64, img + 56, 8);
    ck_assert_uint_eq(u64, GRAN);
    /* The file: data offset plus the image, sparse. */
    ck_assert_uint_eq(size, GRAN + f.size);
    /* Block 2's bit, and its data at data offset + 2 * GRAN. */
    ck_assert_uint_eq(img[4096], 1u << 2);
    ck_assert_mem_eq(img + GRAN + 2 * GRAN, f.model + 2 * GRAN, 100);
    free(img);
    fix_fini(&f);
}
END_TEST

/* Overwrites `len` bytes of file `path` at `offset`. */
static void poke(const char *path, uint64_t offset, const void *buf, size_t len)
{
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, buf, len, (off_t)offset), (ssize_t)len);
    close(fd);
}

UNIT_TEST("overlay", test_backend_overlay_bad_files)
{
    struct fix f;
    fix_init(&f, 1 * MiB);
    char path[96];
    struct err err;
    err_clear(&err);

    /* Read-only: a missing overlay is not created. */
    ovl_open_fails(base_file(f.base), f.ovl, BACKEND_OPEN_READ_ONLY, ENOENT,
                   "No such file");
    ck_assert_int_eq(access(f.ovl, F_OK), -1);
    ck_assert_int_eq(backend_overlay_check(f.ovl, f.size, true, &err), -ENOENT);
    ck_assert_int_eq(backend_overlay_check(f.ovl, f.size, false, NULL), 0);

    /* In use: the second open is refused while the first lives. */
    struct backend *be = fix_open(&f, 0);
    ovl_open_fails(base_file(f.base), f.ovl, 0, EBUSY, "in use");
    ovl_open_fails(base_file(f.base), f.ovl, BACKEND_OPEN_READ_ONLY, EBUSY,
                   "in use");
    backend_unref(be);
    ck_assert_int_eq(backend_overlay_check(f.ovl, f.size, false, NULL), 0);

    /* The base changed size. */
    make_base(path, f.size + 4096, 3);
    ovl_open_fails(base_file(path), f.ovl, 0, EINVAL,
                   "made over a base of 1048576 bytes, but the base now has "
                   "1052672: the base changed size");
    err_clear(&err);
    ck_assert_int_eq(backend_overlay_check(f.ovl, f.size + 4096, false, &err),
                     -EINVAL);
    ck_assert_str_eq(err.msg, "made over a base of 1048576 bytes, but the "
                              "base now has 1052672: the base changed size");
    unlink(path);

    /* The base as its own overlay. */
    ovl_open_fails(base_file(f.base), f.base, 0, EINVAL, "is the base itself");

    /* A damaged header, an unknown version, a truncated file. */
    copy_file(f.ovl, path);
    poke(path, 30, "\x01", 1);
    ovl_open_fails(base_file(f.base), path, 0, EINVAL, "bad checksum");
    copy_file(f.ovl, path);
    ck_assert_int_eq(truncate(path, 100000), 0);
    ovl_open_fails(base_file(f.base), path, 0, EINVAL, "truncated");
    ck_assert_int_eq(truncate(path, 0), 0);
    ovl_open_fails(base_file(f.base), path, 0, EINVAL, "empty file");
    poke(path, 0, "nbdsrvOV", 8);
    ovl_open_fails(base_file(f.base), path, 0, EINVAL, "shorter than a header");
    ck_assert_int_eq(truncate(path, 8192), 0);
    poke(path, 0, "not an overlay", 14);
    ovl_open_fails(base_file(f.base), path, 0, EINVAL, "no magic");
    err_clear(&err);
    ck_assert_int_eq(backend_overlay_check(path, f.size, false, &err), -EINVAL);
    ck_assert_str_eq(err.msg, "not an nbd-serverd overlay (no magic)");
    unlink(path);
    fix_fini(&f);
}
END_TEST

UNIT_SUITE("backend-overlay");
UNIT_TCASE("overlay", 60, setup, teardown);
FIXTURE_BACKEND_CONFORMANCE(conformance_impls);
