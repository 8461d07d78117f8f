/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the Prometheus text writer (include/nbdsrv/metrics.h):
 * the exact lines of each kind of sample, the escaping of HELP text and
 * label values, histograms written cumulatively with +Inf, _sum and
 * _count, and the buffer growing past its first allocation.
 */
#include "fixture-main.h"
#include "nbdsrv/compiler.h"
#include "nbdsrv/metrics.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

UNIT_TEST("text", test_metrics_text_family_and_plain_samples)
{
    struct metrics_text t;
    metrics_text_init(&t);
    metrics_text_family(&t, "x_total", "counter", "Things.");
    metrics_text_uint(&t, "x_total", NULL, 0, 18446744073709551615u);
    struct metrics_label l[] = {{"a", "1"}, {"b", "two"}};
    metrics_text_uint(&t, "x_total", l, 2, 0);
    ck_assert(!t.failed);
    ck_assert_str_eq(t.buf, "# HELP x_total Things.\n"
                            "# TYPE x_total counter\n"
                            "x_total 18446744073709551615\n"
                            "x_total{a=\"1\",b=\"two\"} 0\n");
    ck_assert_uint_eq(t.len, strlen(t.buf));
    metrics_text_fini(&t);
    ck_assert_ptr_null(t.buf);
}
END_TEST

UNIT_TEST("text", test_metrics_text_help_escapes_backslash_and_newline)
{
    struct metrics_text t;
    metrics_text_init(&t);
    /* A quote stays as it is in HELP text. */
    metrics_text_family(&t, "y", "gauge", "a\\b\nc \"q\"");
    ck_assert_str_eq(t.buf, "# HELP y a\\\\b\\nc \"q\"\n# TYPE y gauge\n");
    metrics_text_fini(&t);
}
END_TEST

UNIT_TEST("text", test_metrics_text_label_values_escape_quote_backslash_newline)
{
    struct metrics_text t;
    metrics_text_init(&t);
    struct metrics_label l[] = {{"export", "we\"ird\\na\nme"}};
    metrics_text_uint(&t, "z", l, 1, 7);
    ck_assert_str_eq(t.buf, "z{export=\"we\\\"ird\\\\na\\nme\"} 7\n");
    metrics_text_fini(&t);
}
END_TEST

UNIT_TEST("text", test_metrics_text_doubles_as_prometheus_reads_them)
{
    struct metrics_text t;
    metrics_text_init(&t);
    metrics_text_double(&t, "val", NULL, 0, 0.25);
    metrics_text_double(&t, "val", NULL, 0, INFINITY);
    metrics_text_double(&t, "val", NULL, 0, -INFINITY);
    metrics_text_double(&t, "val", NULL, 0, NAN);
    metrics_text_double(&t, "val", NULL, 0, 1e-5);
    ck_assert_str_eq(t.buf, "val 0.25\n"
                            "val +Inf\n"
                            "val -Inf\n"
                            "val NaN\n"
                            "val 1.0000000000000001e-05\n");
    /* The digits read back as the same double. */
    const char *last = strrchr(t.buf, ' ');
    ck_assert(strtod(last + 1, NULL) == 1e-5);
    metrics_text_fini(&t);
}
END_TEST

UNIT_TEST("text", test_metrics_text_histogram_buckets_are_cumulative)
{
    struct metrics_text t;
    metrics_text_init(&t);
    static const double bounds[] = {0.001, 0.01, 0.5};
    /* 2 at or under 1 ms, none in (1 ms, 10 ms], 3 in (10 ms, 0.5 s],
     * 4 above 0.5 s. */
    static const uint64_t counts[] = {2, 0, 3, 4};
    struct metrics_label l[] = {{"export", "e"}, {"command", "read"}};
    metrics_text_histogram(&t, "h_seconds", l, 2, bounds, counts, 3, 6.5);
    ck_assert(!t.failed);
    ck_assert_str_eq(
        t.buf,
        "h_seconds_bucket{export=\"e\",command=\"read\",le=\"0.001\"} 2\n"
        "h_seconds_bucket{export=\"e\",command=\"read\",le=\"0.01\"} 2\n"
        "h_seconds_bucket{export=\"e\",command=\"read\",le=\"0.5\"} 5\n"
        "h_seconds_bucket{export=\"e\",command=\"read\",le=\"+Inf\"} 9\n"
        "h_seconds_sum{export=\"e\",command=\"read\"} 6.5\n"
        "h_seconds_count{export=\"e\",command=\"read\"} 9\n");
    metrics_text_fini(&t);
}
END_TEST

UNIT_TEST("text", test_metrics_text_histogram_without_labels)
{
    struct metrics_text t;
    metrics_text_init(&t);
    static const double bounds[] = {1e-05, 2.5};
    static const uint64_t counts[] = {0, 0, 0};
    metrics_text_histogram(&t, "h", NULL, 0, bounds, counts, 2, 0);
    ck_assert_str_eq(t.buf, "h_bucket{le=\"1e-05\"} 0\n"
                            "h_bucket{le=\"2.5\"} 0\n"
                            "h_bucket{le=\"+Inf\"} 0\n"
                            "h_sum 0\n"
                            "h_count 0\n");
    metrics_text_fini(&t);
}
END_TEST

UNIT_TEST("text", test_metrics_text_histogram_refuses_too_many_labels)
{
    struct metrics_text t;
    metrics_text_init(&t);
    struct metrics_label l[8];
    for (unsigned i = 0; i < ARRAY_SIZE(l); i++) {
        l[i] = (struct metrics_label){"l", "v"};
    }
    static const double bounds[] = {1};
    static const uint64_t counts[] = {1, 1};
    metrics_text_histogram(&t, "h", l, 8, bounds, counts, 1, 1);
    ck_assert(t.failed);
    ck_assert_uint_eq(t.len, 0);
    /* So is a name too long for its _bucket series. */
    struct metrics_text t2;
    metrics_text_init(&t2);
    char name[130];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    metrics_text_histogram(&t2, name, NULL, 0, bounds, counts, 1, 1);
    ck_assert(t2.failed);
    metrics_text_fini(&t2);
    /* Nothing is appended once the text has failed. */
    metrics_text_uint(&t, "x", NULL, 0, 1);
    ck_assert_uint_eq(t.len, 0);
    metrics_text_fini(&t);
}
END_TEST

UNIT_TEST("text", test_metrics_text_grows_past_its_first_buffer)
{
    struct metrics_text t;
    metrics_text_init(&t);
    char want[64];
    for (unsigned i = 0; i < 5000; i++) {
        char v[16];
        snprintf(v, sizeof v, "%u", i);
        struct metrics_label l[] = {{"i", v}};
        metrics_text_uint(&t, "series_total", l, 1, i * 3u);
    }
    ck_assert(!t.failed);
    ck_assert_uint_gt(t.cap, 4096);
    ck_assert_uint_eq(t.len, strlen(t.buf));
    /* Spot checks: the first, a middle and the last line. */
    ck_assert(strncmp(t.buf, "series_total{i=\"0\"} 0\n", 22) == 0);
    snprintf(want, sizeof want, "\nseries_total{i=\"2500\"} 7500\n");
    ck_assert_ptr_nonnull(strstr(t.buf, want));
    snprintf(want, sizeof want, "series_total{i=\"4999\"} 14997\n");
    ck_assert_str_eq(t.buf + t.len - strlen(want), want);
    metrics_text_fini(&t);
}
END_TEST

UNIT_SUITE("metrics-text");
UNIT_TCASE("text", 0, NULL, NULL);
