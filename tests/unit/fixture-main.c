/* SPDX-License-Identifier: MIT */
/* Test fixture: the main() of every unit test binary (fixture-main.h). */
#include "fixture-main.h"

#include <check.h>
#include <stdlib.h>

int main(void)
{
    SRunner *sr = srunner_create(unit_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
