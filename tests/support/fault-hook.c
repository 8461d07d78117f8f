/* SPDX-License-Identifier: MIT */
/*
 * The test daemon's export hook: wraps the exports named in
 * NBDSRV_TEST_FAULTS in the fault-injection filter.
 *
 * Linked only into build/tests/nbd-serverd-test (the daemon's own main
 * plus this file), never into build/nbd-serverd, whose weak
 * server_export_test_hook (src/server/export.c) serves every chain as
 * opened.  So the interop tests can make storage fail or stall end to
 * end, and the daemon users run has no switch, variable or key for it.
 *
 * NBDSRV_TEST_FAULTS="NAME=RULES;NAME=RULES...", RULES as
 * backend_fault_parse reads them, e.g.
 * "bad=read@1M-2M:EIO;full=write@4M-:ENOSPC;slow=write:delay=3000".
 * A malformed value fails the export's open with a message, so a typo in
 * a test cannot pass for a storage without faults.
 */
#include "nbdsrv/backends.h"
#include "nbdsrv/server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct backend *server_export_test_hook(const struct export_config *config,
                                        struct backend *be, struct err *err)
{
    const char *spec = getenv("NBDSRV_TEST_FAULTS");
    if (spec == NULL) {
        return be;
    }
    size_t name_len = strlen(config->name);
    for (const char *p = spec; *p != '\0';) {
        const char *semi = strchr(p, ';');
        size_t n = semi != NULL ? (size_t)(semi - p) : strlen(p);
        if (n > name_len && memcmp(p, config->name, name_len) == 0 &&
            p[name_len] == '=') {
            char *rules_text = strndup(p + name_len + 1, n - name_len - 1);
            struct backend_fault_rule *rules;
            unsigned nr;
            if (rules_text == NULL) {
                backend_unref(be);
                err_set(err, ENOMEM, "out of memory");
                return NULL;
            }
            int r = backend_fault_parse(rules_text, &rules, &nr, err);
            free(rules_text);
            if (r < 0) {
                backend_unref(be);
                return NULL;
            }
            be = backend_fault_new(be, rules, nr, err);
            free(rules);
            return be;
        }
        p = semi != NULL ? semi + 1 : p + n;
    }
    return be;
}
