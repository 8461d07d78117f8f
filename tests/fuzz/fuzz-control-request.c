/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the control socket's request parser. */
/*
 * The input is one request line (any bytes, NULs included).  The parser
 * must return 0 with a request whose fields match its command, or
 * -EINVAL (-ENOMEM) with a message, and leak nothing either way.  A
 * parsed add or change has a name and at least one setting, each with a
 * non-empty key and a value without NUL; disconnect has an id above 0.
 */
#include "fuzz.h"
#include "nbdsrv/control.h"

#include <errno.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct control_request req;
    struct err err;
    err_clear(&err);
    int r = control_parse_request((const char *)data, size, &req, &err);
    if (r < 0) {
        FUZZ_ASSERT(r == -EINVAL || r == -ENOMEM);
        FUZZ_ASSERT(err.msg[0] != '\0');
        FUZZ_ASSERT(req.obj == NULL && req.settings == NULL);
        return 0;
    }
    FUZZ_ASSERT(req.obj != NULL);
    switch (req.cmd) {
    case CONTROL_ADD:
    case CONTROL_CHANGE:
        FUZZ_ASSERT(req.name != NULL && req.nr_settings > 0);
        for (unsigned i = 0; i < req.nr_settings; i++) {
            FUZZ_ASSERT(req.settings[i].key[0] != '\0');
            FUZZ_ASSERT(req.settings[i].value != NULL);
        }
        break;
    case CONTROL_REMOVE:
        FUZZ_ASSERT(req.name != NULL);
        break;
    case CONTROL_DISCONNECT:
        FUZZ_ASSERT(req.id > 0);
        break;
    case CONTROL_BITMAPS:
        FUZZ_ASSERT(req.name != NULL && req.bitmap == NULL);
        break;
    case CONTROL_BITMAP_ADD:
    case CONTROL_BITMAP_CLEAR:
    case CONTROL_BITMAP_REMOVE:
        FUZZ_ASSERT(req.name != NULL && req.bitmap != NULL &&
                    req.other == NULL);
        break;
    case CONTROL_CHECKPOINT:
    case CONTROL_BITMAP_MERGE:
        FUZZ_ASSERT(req.name != NULL && req.bitmap != NULL &&
                    req.other != NULL);
        break;
    default:
        FUZZ_ASSERT(req.name == NULL && req.nr_settings == 0);
        break;
    }
    FUZZ_ASSERT(strcmp(control_cmd_name(req.cmd), "") != 0);
    control_request_fini(&req);
    return 0;
}
