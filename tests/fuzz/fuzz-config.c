/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the configuration file parser (config_parse_string). */
/*
 * The input, cut at its first NUL, is parsed as a configuration file.
 * A failure must come with EINVAL (or ENOMEM) and a "FILE:LINE: ..."
 * message and leak nothing.  A success is printed as --check-config
 * does, and that text, which is meant to be a configuration file itself,
 * is parsed again when each of its lines fits the parser's line limit:
 * it must parse, and print the same apart from its comment lines (which
 * name the lines sections came from).  The parser may stat paths the
 * input names (tls-certs, tls-psk); it opens nothing for writing.
 */
#include "fuzz.h"
#include "nbdsrv/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CONF_NAME "fuzz.conf"
#define LINE_MAX_CHARS 197

static char *print_config(const struct config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    FUZZ_ASSERT(out != NULL);
    config_print(cfg, out);
    FUZZ_ASSERT(fclose(out) == 0);
    return text;
}

/* The text without its comment lines, in place. */
static void drop_comments(char *text)
{
    char *w = text;

    for (char *line = text; *line != '\0';) {
        char *nl = strchr(line, '\n');
        size_t len = nl != NULL ? (size_t)(nl - line) + 1 : strlen(line);

        if (line[0] != '#') {
            memmove(w, line, len);
            w += len;
        }
        line += len;
    }
    *w = '\0';
}

static bool lines_fit(const char *text)
{
    while (*text != '\0') {
        size_t len = strcspn(text, "\n");

        if (len > LINE_MAX_CHARS) {
            return false;
        }
        text += len + (text[len] == '\n');
    }
    return true;
}

static void check_reparse(const struct config *cfg)
{
    char *first = print_config(cfg);
    struct config *again;
    struct err err;
    char *second;

    if (!lines_fit(first)) {
        free(first);
        return;
    }
    err_clear(&err);
    again = config_parse_string(first, FUZZ_CONF_NAME, &err);
    if (again == NULL) {
        fprintf(stderr, "printed configuration refused: %s\n%s", err.msg,
                first);
    }
    FUZZ_ASSERT(again != NULL);
    second = print_config(again);
    drop_comments(first);
    drop_comments(second);
    if (strcmp(first, second) != 0) {
        fprintf(stderr, "first print:\n%s\nsecond print:\n%s", first, second);
    }
    FUZZ_ASSERT(strcmp(first, second) == 0);
    free(second);
    free(first);
    config_unref(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = strndup((const char *)data, size);
    struct config *cfg;
    struct err err;

    FUZZ_ASSERT(text != NULL);
    err_clear(&err);
    cfg = config_parse_string(text, FUZZ_CONF_NAME, &err);
    if (cfg == NULL) {
        FUZZ_ASSERT(err.errnum == EINVAL || err.errnum == ENOMEM);
        FUZZ_ASSERT(err.errnum == ENOMEM ||
                    strncmp(err.msg, FUZZ_CONF_NAME ":",
                            strlen(FUZZ_CONF_NAME ":")) == 0);
    } else {
        FUZZ_ASSERT(err.errnum == 0);
        check_reparse(cfg);
        config_unref(cfg);
    }
    free(text);
    return 0;
}
