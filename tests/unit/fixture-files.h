/* SPDX-License-Identifier: MIT */
/* Test fixture: small files written by the tests. */
#ifndef NBDSRV_FIXTURE_FILES_H
#define NBDSRV_FIXTURE_FILES_H

/* Creates or replaces `path` with `text` (ck_assert on failure). */
void fixture_write_text(const char *path, const char *text);

#endif
