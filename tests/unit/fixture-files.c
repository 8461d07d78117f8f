/* SPDX-License-Identifier: MIT */
/* Test fixture: small files written by the tests. */
#include "fixture-files.h"

#include <check.h>
#include <stdio.h>

void fixture_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(fputs(text, f), 0);
    ck_assert_int_eq(fclose(f), 0);
}
