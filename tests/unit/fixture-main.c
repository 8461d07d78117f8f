/* SPDX-License-Identifier: MIT */
/* Test fixture: the main() of every unit test binary, and the registry
 * it builds the Suite from (fixture-main.h). */
#include "fixture-main.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Filled by constructors before main(), read by main() only: no lock. */
static struct unit_test *tests;
static struct unit_tcase *tcases;
enum { MAX_EXTEND = 4 };
static unit_extend_fn *extend[MAX_EXTEND];
static unsigned n_extend;

void unit_register_test(struct unit_test *t)
{
    t->next = tests;
    tests = t;
}

void unit_register_tcase(struct unit_tcase *tc)
{
    tc->next = tcases;
    tcases = tc;
}

void unit_register_extend(unit_extend_fn *fn)
{
    if (n_extend == MAX_EXTEND) {
        fprintf(stderr, "%s: more than %d UNIT_SUITE_EXTEND\n", unit_suite_name,
                MAX_EXTEND);
        exit(EXIT_FAILURE);
    }
    extend[n_extend++] = fn;
}

static int by_line(const void *a, const void *b)
{
    const struct unit_test *x = *(const struct unit_test *const *)a;
    const struct unit_test *y = *(const struct unit_test *const *)b;
    return (*x->test)->line - (*y->test)->line;
}

static struct unit_tcase *find_tcase(const char *name)
{
    for (struct unit_tcase *tc = tcases; tc; tc = tc->next)
        if (strcmp(tc->name, name) == 0)
            return tc;
    return NULL;
}

/* The Suite from the registry, or NULL after naming what is wrong. */
static Suite *build_suite(void)
{
    size_t n = 0;
    for (struct unit_test *t = tests; t; t = t->next)
        n++;
    struct unit_test **sorted = calloc(n ? n : 1, sizeof *sorted);
    if (!sorted) {
        perror("calloc");
        return NULL;
    }
    n = 0;
    for (struct unit_test *t = tests; t; t = t->next)
        sorted[n++] = t;
    qsort(sorted, n, sizeof *sorted, by_line);

    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        const TTest *t = *sorted[i]->test;
        if (!find_tcase(sorted[i]->tcase)) {
            fprintf(stderr, "%s:%d: %s: no UNIT_TCASE(\"%s\", ...)\n", t->file,
                    t->line, t->name, sorted[i]->tcase);
            ok = 0;
        }
    }
    for (struct unit_tcase *tc = tcases; tc; tc = tc->next) {
        size_t i = 0;
        while (i < n && strcmp(sorted[i]->tcase, tc->name) != 0)
            i++;
        if (i == n) {
            fprintf(stderr, "%s: UNIT_TCASE(\"%s\") at line %d has no test\n",
                    unit_suite_name, tc->name, tc->line);
            ok = 0;
        }
    }
    if (!ok) {
        free(sorted);
        return NULL;
    }

    /* Each TCase is created at its first test; Check keeps the order in
     * which tests and TCases are added. */
    Suite *s = suite_create(unit_suite_name);
    for (size_t i = 0; i < n; i++) {
        size_t first = 0;
        while (strcmp(sorted[first]->tcase, sorted[i]->tcase) != 0)
            first++;
        if (first != i)
            continue;
        struct unit_tcase *opt = find_tcase(sorted[i]->tcase);
        TCase *tc = tcase_create(opt->name);
        if (opt->timeout > 0)
            tcase_set_timeout(tc, opt->timeout);
        if (opt->setup || opt->teardown)
            tcase_add_checked_fixture(tc, opt->setup, opt->teardown);
        for (size_t j = i; j < n; j++) {
            struct unit_test *u = sorted[j];
            if (strcmp(u->tcase, opt->name) == 0)
                tcase_add_loop_test_raise_signal(tc, *u->test, u->signal,
                                                 u->start, u->end);
        }
        suite_add_tcase(s, tc);
    }
    free(sorted);
    for (unsigned i = 0; i < n_extend; i++)
        extend[i](s);
    return s;
}

int main(void)
{
    Suite *s = build_suite();
    if (!s)
        return EXIT_FAILURE;
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
