/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the dirty bitmaps (dirty-bitmap.c, dirty-sidecar.c) and
 * the tracking filter (backend-dirty.c): what marks a block, the maps,
 * the sidecar file across opens, and what happens to a file that was not
 * closed cleanly, is damaged or is in use.
 */
#include "fixture-backend.h"
#include "fixture-files.h"
#include "fixture-loops.h"
#include "fixture-main.h"
#include "nbdsrv/backends.h"
#include "nbdsrv/dirty-bitmap.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define G (64u * KiB)

static char dir[64];
static char file[PATH_MAX];

static void setup(void)
{
    t_reset();
    fixture_loops_start(2, 0);
    snprintf(dir, sizeof dir, "/tmp/nbdsrv-dirty.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(file, sizeof file, "%s/x.bitmaps", dir);
}

static void teardown(void)
{
    fixture_loops_stop();
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static struct dirty_set *open_set(const char *path, uint64_t size,
                                  uint64_t gran, const char *const *names,
                                  unsigned nr)
{
    struct err err;
    err_clear(&err);
    struct dirty_set *ds = dirty_set_open(path, size, gran, names, nr, &err);
    ck_assert_msg(ds != NULL, "%s", err.msg);
    return ds;
}

/* Expects dirty_set_open to fail with a message holding `want`. */
static void open_fails(const char *path, uint64_t size, uint64_t gran,
                       const char *want)
{
    struct err err;
    err_clear(&err);
    const char *names[] = {"a"};
    struct dirty_set *ds = dirty_set_open(path, size, gran, names, 1, &err);
    if (ds != NULL) {
        dirty_set_unref(ds);
        ck_abort_msg("opened; expected '%s'", want);
    }
    ck_assert_msg(strstr(err.msg, want) != NULL, "'%s' lacks '%s'", err.msg,
                  want);
}

/* What the set's current list says (the list is let go at once). */
static unsigned t_count(struct dirty_set *ds)
{
    struct dirty_list *l = dirty_set_list(ds);
    unsigned n = dirty_list_count(l);
    dirty_list_unref(l);
    return n;
}

static const char *t_name(struct dirty_set *ds, unsigned i)
{
    static char name[DIRTY_NAME_MAX + 1];
    struct dirty_list *l = dirty_set_list(ds);
    snprintf(name, sizeof name, "%s", dirty_list_name(l, i));
    dirty_list_unref(l);
    return name;
}

static int t_find(struct dirty_set *ds, const char *name)
{
    struct dirty_list *l = dirty_set_list(ds);
    int i = dirty_list_find(l, name, strlen(name));
    dirty_list_unref(l);
    return i;
}

static uint64_t t_dirty_bytes(struct dirty_set *ds, unsigned i)
{
    struct dirty_list *l = dirty_set_list(ds);
    uint64_t n = dirty_list_dirty_bytes(l, i);
    dirty_list_unref(l);
    return n;
}

/* The map of bitmap i as "D:len C:len ..." (D dirty, C clean). */
static const char *map_text(struct dirty_set *ds, unsigned i, uint64_t offset,
                            uint64_t len, unsigned max)
{
    static char text[1024];
    struct dirty_run runs[64];
    ck_assert_uint_le(max, 64);
    struct dirty_list *l = dirty_set_list(ds);
    unsigned n = dirty_list_map(l, i, offset, len, runs, max);
    dirty_list_unref(l);
    text[0] = '\0';
    for (unsigned k = 0; k < n; k++) {
        snprintf(text + strlen(text), sizeof text - strlen(text), "%s%c:%llu",
                 k > 0 ? " " : "", runs[k].dirty ? 'D' : 'C',
                 (unsigned long long)runs[k].length);
    }
    return text;
}

UNIT_TEST("bitmaps", test_dirty_names)
{
    ck_assert(dirty_name_valid("daily"));
    ck_assert(dirty_name_valid("a.b_c-9"));
    ck_assert(!dirty_name_valid(""));
    ck_assert(!dirty_name_valid("a/b"));
    ck_assert(!dirty_name_valid("a b"));
    ck_assert(!dirty_name_valid("qemu:x"));
    char longest[DIRTY_NAME_MAX + 2];
    memset(longest, 'x', sizeof longest);
    longest[DIRTY_NAME_MAX] = '\0';
    ck_assert(dirty_name_valid(longest));
    longest[DIRTY_NAME_MAX] = 'x';
    longest[DIRTY_NAME_MAX + 1] = '\0';
    ck_assert(!dirty_name_valid(longest));
}
END_TEST

UNIT_TEST("bitmaps", test_dirty_mark_and_map)
{
    const char *names[] = {"a", "b"};
    /* 10 blocks and a half: the last block is clipped. */
    uint64_t size = 10 * G + G / 2;
    struct dirty_set *ds = open_set(NULL, size, G, names, 2);
    ck_assert_uint_eq(t_count(ds), 2);
    ck_assert_str_eq(t_name(ds, 1), "b");
    ck_assert_int_eq(t_find(ds, "b"), 1);
    ck_assert_int_eq(t_find(ds, "c"), -1);
    ck_assert_str_eq(map_text(ds, 0, 0, size, 64), "C:688128");

    dirty_set_mark(ds, 1, 1);         /* block 0 */
    dirty_set_mark(ds, 3 * G - 1, 2); /* blocks 2 and 3 */
    dirty_set_mark(ds, 10 * G, 1);    /* the clipped last block */
    dirty_set_mark(ds, 5 * G, 0);     /* nothing */
    ck_assert_str_eq(map_text(ds, 0, 0, size, 64),
                     "D:65536 C:65536 D:131072 C:393216 D:32768");
    ck_assert_str_eq(map_text(ds, 1, 0, size, 64),
                     "D:65536 C:65536 D:131072 C:393216 D:32768");
    /* From inside a block, clipped to len, at most max runs. */
    ck_assert_str_eq(map_text(ds, 0, 100, 70000, 64), "D:65436 C:4564");
    ck_assert_str_eq(map_text(ds, 0, 2 * G, 10 * G, 1), "D:131072");
    ck_assert_str_eq(map_text(ds, 0, 10 * G + 5, 1, 64), "D:1");
    ck_assert_uint_eq(t_dirty_bytes(ds, 0), 3 * G + G / 2);
    dirty_set_unref(ds);
}
END_TEST

/* Runs longer than a 64-bit word, and word boundaries. */
UNIT_TEST("bitmaps", test_dirty_map_across_words)
{
    const char *names[] = {"a"};
    uint64_t size = 1000 * (uint64_t)G;
    struct dirty_set *ds = open_set(NULL, size, G, names, 1);
    dirty_set_mark(ds, 63 * (uint64_t)G, 130 * (uint64_t)G); /* 63..192 */
    dirty_set_mark(ds, 999 * (uint64_t)G, 1);
    char want[256];
    snprintf(want, sizeof want, "C:%llu D:%llu C:%llu D:%u", 63ull * G,
             130ull * G, (999ull - 193) * G, G);
    ck_assert_str_eq(map_text(ds, 0, 0, size, 64), want);
    ck_assert_uint_eq(t_dirty_bytes(ds, 0), 131ull * G);
    dirty_set_unref(ds);
}
END_TEST

UNIT_TEST("bitmaps", test_dirty_open_checks)
{
    const char *names[17];
    char buf[17][8];
    for (unsigned i = 0; i < 17; i++) {
        snprintf(buf[i], sizeof buf[i], "b%u", i);
        names[i] = buf[i];
    }
    struct err err;
    err_clear(&err);
    ck_assert_ptr_null(dirty_set_open(NULL, MiB, 3 * 4096, names, 1, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "a power of two"));
    ck_assert_ptr_null(dirty_set_open(NULL, MiB, 2048, names, 1, &err));
    ck_assert_ptr_null(dirty_set_open(NULL, MiB, G, names, 17, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "at most 16 bitmaps"));
    struct dirty_set *ds = open_set(NULL, MiB, G, names, 16);
    ck_assert_uint_eq(t_count(ds), 16);
    dirty_set_unref(ds);
}
END_TEST

UNIT_TEST("bitmaps", test_dirty_file_round_trip)
{
    const char *names[] = {"a", "b"};
    struct dirty_set *ds = open_set(file, 8 * G, G, names, 2);
    struct stat st;
    ck_assert_int_eq(stat(file, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0600);
    ck_assert(dirty_set_same_file(ds, file));
    ck_assert(!dirty_set_same_file(ds, NULL));
    dirty_set_mark(ds, 2 * G, G);
    dirty_set_mark(ds, 7 * G, 1);
    /* A second open of a file in use fails. */
    open_fails(file, 8 * G, G, "in use by another export or process");
    dirty_set_unref(ds);

    /* Reopened: the same bits, and a new name is added empty. */
    const char *more[] = {"c", "a"};
    ds = open_set(file, 8 * G, G, more, 2);
    ck_assert_uint_eq(t_count(ds), 3);
    ck_assert_int_eq(t_find(ds, "c"), 2);
    ck_assert_str_eq(map_text(ds, 0, 0, 8 * G, 64),
                     "C:131072 D:65536 C:262144 D:65536");
    ck_assert_str_eq(map_text(ds, 1, 0, 8 * G, 64),
                     "C:131072 D:65536 C:262144 D:65536");
    ck_assert_str_eq(map_text(ds, 2, 0, 8 * G, 64), "C:524288");
    /* Adding a name replaced the file: the new one is locked too. */
    open_fails(file, 8 * G, G, "in use");
    dirty_set_unref(ds);
    ds = open_set(file, 8 * G, G, NULL, 0);
    ck_assert_uint_eq(t_count(ds), 3);
    dirty_set_unref(ds);
}
END_TEST

/* Sets the "in use" flag of a closed file, as a daemon that died leaves it. */
static void set_in_use(const char *path)
{
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    unsigned char one = 1;
    ck_assert_int_eq(pwrite(fd, &one, 1, 12), 1);
    close(fd);
}

UNIT_TEST("bitmaps", test_dirty_file_not_closed_cleanly_is_all_dirty)
{
    const char *names[] = {"a"};
    struct dirty_set *ds = open_set(file, 4 * G, G, names, 1);
    dirty_set_mark(ds, 0, 1);
    dirty_set_unref(ds);
    set_in_use(file);
    ds = open_set(file, 4 * G, G, names, 1);
    ck_assert_str_eq(map_text(ds, 0, 0, 4 * G, 64), "D:262144");
    dirty_set_unref(ds);
    /* Closed cleanly now: the all-dirty bits were kept, not lost. */
    ds = open_set(file, 4 * G, G, names, 1);
    ck_assert_str_eq(map_text(ds, 0, 0, 4 * G, 64), "D:262144");
    dirty_set_unref(ds);
}
END_TEST

UNIT_TEST("bitmaps", test_dirty_file_of_another_shape_is_all_dirty)
{
    const char *names[] = {"a"};
    struct dirty_set *ds = open_set(file, 4 * G, G, names, 1);
    dirty_set_unref(ds);
    /* The image grew. */
    ds = open_set(file, 6 * G, G, names, 1);
    ck_assert_str_eq(map_text(ds, 0, 0, 6 * G, 64), "D:393216");
    dirty_set_unref(ds);
    /* The granularity changed. */
    ds = open_set(file, 6 * G, 2 * G, names, 1);
    ck_assert_str_eq(map_text(ds, 0, 0, 6 * G, 64), "D:393216");
    ck_assert_uint_eq(dirty_set_granularity(ds), 2 * G);
    dirty_set_unref(ds);
}
END_TEST

UNIT_TEST("bitmaps", test_dirty_bad_files_are_refused)
{
    const char *names[] = {"a"};
    fixture_write_text(file, "not a bitmap file at all, but long enough to "
                             "hold a header of sixty-four bytes...\n");
    open_fails(file, 4 * G, G, "not a dirty bitmap file (bad magic)");

    struct dirty_set *ds = open_set(NULL, 1, G, names, 1);
    dirty_set_unref(ds);
    unlink(file);
    ds = open_set(file, 4 * G, G, names, 1);
    dirty_set_unref(ds);
    /* One flipped bit in the body. */
    int fd = open(file, O_RDWR);
    ck_assert_int_ge(fd, 0);
    unsigned char c;
    ck_assert_int_eq(pread(fd, &c, 1, 72), 1);
    c ^= 1;
    ck_assert_int_eq(pwrite(fd, &c, 1, 72), 1);
    close(fd);
    open_fails(file, 4 * G, G, "damaged (its checksum does not match)");
    /* A truncated file. */
    ck_assert_int_eq(truncate(file, 70), 0);
    open_fails(file, 4 * G, G, "damaged");
    /* A directory. */
    open_fails(dir, 4 * G, G, "dirty bitmap file");
}
END_TEST

/* Writes, trims and zeroes mark; reads, flushes and maps do not; a
 * failed write is marked too. */
UNIT_TEST("bitmaps", test_dirty_filter_marks_changes)
{
    struct err err;
    err_clear(&err);
    const char *names[] = {"a"};
    struct dirty_set *ds = open_set(NULL, 16 * G, G, names, 1);
    struct backend_fault_rule rule = {.ops = BACKEND_FAULT_WRITE,
                                      .start = 12 * G,
                                      .end = 13 * G,
                                      .error = EIO};
    struct backend *mem = backend_memory_new(16 * G, false, &err);
    ck_assert_ptr_nonnull(mem);
    struct backend *lower = backend_fault_new(mem, &rule, 1, &err);
    ck_assert_ptr_nonnull(lower);
    struct backend *be = backend_dirty_new(lower, dirty_set_ref(ds), &err);
    ck_assert_msg(be != NULL, "%s", err.msg);
    ck_assert_ptr_eq(backend_dirty_set(be), ds);
    ck_assert_ptr_null(backend_dirty_set(lower));
    ck_assert_str_eq(backend_name(be), "dirty");

    unsigned char buf[4096];
    fill_pattern(buf, sizeof buf, 1);
    ck_assert_int_eq(t_pread(be, buf, sizeof buf, 0), 0);
    ck_assert_int_eq(t_flush(be), 0);
    struct backend_extent ext[4];
    ck_assert_int_ge(t_extents(be, 0, 16 * G, ext, 4), 1);
    ck_assert_str_eq(map_text(ds, 0, 0, 16 * G, 64), "C:1048576");

    ck_assert_int_eq(t_pwrite(be, buf, sizeof buf, G + 10, false), 0);
    ck_assert_int_eq(t_trim(be, 4 * G, 2 * G, false), 0);
    ck_assert_int_eq(t_zero(be, 8 * G, 1, 0, false), 0);
    ck_assert_int_eq(t_pwrite(be, buf, sizeof buf, 12 * G, false), -EIO);
    /* Refused by the common checks: never reaches the filter. */
    ck_assert_int_eq(t_pwrite(be, buf, sizeof buf, 16 * G, false), -EINVAL);
    ck_assert_str_eq(map_text(ds, 0, 0, 16 * G, 64),
                     "C:65536 D:65536 C:131072 D:131072 C:131072 D:65536 "
                     "C:196608 D:65536 C:196608");
    backend_unref(be);
    ck_assert_str_eq(map_text(ds, 0, 0, G, 64), "C:65536");
    dirty_set_unref(ds);
}
END_TEST

/* Expects a change to fail with -want and a message holding `msg`. */
static void change_fails(int r, const struct err *err, int want,
                         const char *msg)
{
    ck_assert_int_eq(r, -want);
    ck_assert_msg(strstr(err->msg, msg) != NULL, "'%s' lacks '%s'", err->msg,
                  msg);
}

UNIT_TEST("bitmaps", test_dirty_changes)
{
    struct err err;
    err_clear(&err);
    const char *names[] = {"a", "b"};
    struct dirty_set *ds = open_set(file, 8 * G, G, names, 2);
    dirty_set_mark(ds, 0, 1);
    struct dirty_list *before = dirty_set_list(ds);

    ck_assert_int_eq(dirty_set_create(ds, "c", &err), 0);
    ck_assert_uint_eq(t_count(ds), 3);
    ck_assert_str_eq(map_text(ds, 2, 0, 8 * G, 64), "C:524288");
    change_fails(dirty_set_create(ds, "c", &err), &err, EEXIST,
                 "a dirty bitmap named c exists");
    change_fails(dirty_set_create(ds, "x y", &err), &err, EINVAL,
                 "dirty bitmap name 'x y'");
    change_fails(dirty_set_clear(ds, "nope", &err), &err, ENOENT,
                 "no dirty bitmap named nope");
    change_fails(dirty_set_merge(ds, "a", "nope", &err), &err, ENOENT,
                 "no dirty bitmap named nope");

    /* Checkpoint: a frozen, marks go to a2 (and b, c) only. */
    ck_assert_int_eq(dirty_set_checkpoint(ds, "a", "a2", &err), 0);
    struct dirty_list *l = dirty_set_list(ds);
    ck_assert(dirty_list_frozen(l, 0));
    ck_assert(!dirty_list_frozen(l, 1));
    ck_assert_str_eq(dirty_list_name(l, 3), "a2");
    dirty_list_unref(l);
    dirty_set_mark(ds, 2 * G, 1);
    ck_assert_str_eq(map_text(ds, 0, 0, 8 * G, 64), "D:65536 C:458752");
    ck_assert_str_eq(map_text(ds, 3, 0, 8 * G, 64),
                     "C:131072 D:65536 C:327680");
    /* A list taken before is unchanged by the changes. */
    ck_assert_uint_eq(dirty_list_count(before), 2);

    /* Merge, clear, remove (the frozen mark follows its bitmap). */
    ck_assert_int_eq(dirty_set_merge(ds, "a2", "b", &err), 0);
    ck_assert_str_eq(map_text(ds, 1, 0, 8 * G, 64),
                     "D:65536 C:65536 D:65536 C:327680");
    ck_assert_int_eq(dirty_set_clear(ds, "b", &err), 0);
    ck_assert_str_eq(map_text(ds, 1, 0, 8 * G, 64), "C:524288");
    ck_assert_int_eq(dirty_set_remove(ds, "b", &err), 0);
    ck_assert_int_eq(dirty_set_remove(ds, "c", &err), 0);
    l = dirty_set_list(ds);
    ck_assert_uint_eq(dirty_list_count(l), 2);
    ck_assert_str_eq(dirty_list_name(l, 0), "a");
    ck_assert(dirty_list_frozen(l, 0));
    ck_assert_str_eq(dirty_list_name(l, 1), "a2");
    ck_assert(!dirty_list_frozen(l, 1));
    dirty_list_unref(l);
    /* The old list still reads as it was. */
    ck_assert_str_eq(dirty_list_name(before, 1), "b");
    dirty_list_unref(before);
    dirty_set_reclaim(ds);

    /* 16 at most. */
    char name[8];
    for (unsigned i = 2; i < DIRTY_MAX_BITMAPS; i++) {
        snprintf(name, sizeof name, "n%u", i);
        ck_assert_int_eq(dirty_set_create(ds, name, &err), 0);
    }
    change_fails(dirty_set_create(ds, "full", &err), &err, ENOSPC,
                 "at most 16 bitmaps");
    change_fails(dirty_set_checkpoint(ds, "a2", "full", &err), &err, ENOSPC,
                 "at most 16 bitmaps");
    for (unsigned i = 2; i < DIRTY_MAX_BITMAPS; i++) {
        snprintf(name, sizeof name, "n%u", i);
        ck_assert_int_eq(dirty_set_remove(ds, name, &err), 0);
    }
    dirty_set_unref(ds);

    /* The frozen mark and the bits outlive a reopen. */
    ds = open_set(file, 8 * G, G, NULL, 0);
    l = dirty_set_list(ds);
    ck_assert_uint_eq(dirty_list_count(l), 2);
    ck_assert(dirty_list_frozen(l, 0));
    dirty_list_unref(l);
    ck_assert_str_eq(map_text(ds, 1, 0, 8 * G, 64),
                     "C:131072 D:65536 C:327680");
    dirty_set_mark(ds, 7 * G, 1);
    ck_assert_str_eq(map_text(ds, 0, 0, 8 * G, 64), "D:65536 C:458752");
    dirty_set_unref(ds);
}
END_TEST

/* A change in flight across a checkpoint is marked in the new bitmap
 * when it finishes; one that began after is marked once, in the new. */
UNIT_TEST("bitmaps", test_dirty_mark_again_after_a_checkpoint)
{
    struct err err;
    err_clear(&err);
    const char *names[] = {"old"};
    struct dirty_set *ds = open_set(NULL, 8 * G, G, names, 1);
    uint64_t gen = dirty_set_mark(ds, G, 1);
    ck_assert_int_eq(dirty_set_checkpoint(ds, "old", "new", &err), 0);
    dirty_set_mark_again(ds, gen, G, 1);
    ck_assert_str_eq(map_text(ds, 0, 0, 8 * G, 64), "C:65536 D:65536 C:393216");
    ck_assert_str_eq(map_text(ds, 1, 0, 8 * G, 64), "C:65536 D:65536 C:393216");
    gen = dirty_set_mark(ds, 3 * G, 1);
    dirty_set_mark_again(ds, gen, 3 * G, 1);
    ck_assert_str_eq(map_text(ds, 0, 0, 8 * G, 64), "C:65536 D:65536 C:393216");
    ck_assert_str_eq(map_text(ds, 1, 0, 8 * G, 64),
                     "C:65536 D:65536 C:65536 D:65536 C:262144");
    dirty_set_reclaim(ds);
    dirty_set_unref(ds);
}
END_TEST

static struct backend *conf_dirty_memory(uint64_t size, bool read_only)
{
    struct err err;
    err_clear(&err);
    const char *names[] = {"a", "b"};
    struct backend *mem = backend_memory_new(size, read_only, &err);
    ck_assert_msg(mem != NULL, "%s", err.msg);
    struct dirty_set *ds = dirty_set_open(NULL, size, G, names, 2, &err);
    ck_assert_msg(ds != NULL, "%s", err.msg);
    struct backend *be = backend_dirty_new(mem, ds, &err);
    ck_assert_msg(be != NULL, "%s", err.msg);
    return be;
}

static const struct backend_impl conformance_impls[] = {
    {.name = "dirty over memory", .open = conf_dirty_memory, .holes = true},
};

UNIT_SUITE("dirty-bitmap");
UNIT_TCASE("bitmaps", 60, setup, teardown);
FIXTURE_BACKEND_CONFORMANCE(conformance_impls);
