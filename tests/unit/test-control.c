/* SPDX-License-Identifier: MIT */
/* Unit tests: the control socket's request parser (control-proto.c). */
#include "fixture-main.h"
#include "nbdsrv/control.h"

#include <check.h>
#include <errno.h>
#include <string.h>

static const struct {
    const char *line;
    enum control_cmd cmd;
    const char *error; /* NULL: parses */
} cases[] = {
    {"{\"command\": \"exports\"}", CONTROL_EXPORTS, NULL},
    {"{\"command\": \"connections\"}  ", CONTROL_CONNECTIONS, NULL},
    {"{\"command\": \"status\"}", CONTROL_STATUS, NULL},
    {"{\"command\": \"reload\"}", CONTROL_RELOAD, NULL},
    {"{\"command\": \"remove\", \"name\": \"d\"}", CONTROL_REMOVE, NULL},
    {"{\"command\": \"disconnect\", \"id\": 3}", CONTROL_DISCONNECT, NULL},
    {"{\"command\": \"add\", \"name\": \"d\", \"settings\": {\"memory\": "
     "\"1M\", \"allow\": [\"unix\", \"::1\"]}}",
     CONTROL_ADD, NULL},
    {"{\"command\": \"bitmaps\", \"name\": \"d\"}", CONTROL_BITMAPS, NULL},
    {"{\"command\": \"bitmap-add\", \"name\": \"d\", \"bitmap\": \"b\"}",
     CONTROL_BITMAP_ADD, NULL},
    {"{\"command\": \"checkpoint\", \"name\": \"d\", \"bitmap\": \"b\", "
     "\"new\": \"n\"}",
     CONTROL_CHECKPOINT, NULL},
    {"{\"command\": \"bitmap-merge\", \"name\": \"d\", \"bitmap\": \"b\", "
     "\"into\": \"n\"}",
     CONTROL_BITMAP_MERGE, NULL},
    {"{\"command\": \"bitmap-clear\", \"name\": \"d\", \"bitmap\": \"b\"}",
     CONTROL_BITMAP_CLEAR, NULL},
    {"{\"command\": \"bitmap-remove\", \"name\": \"d\", \"bitmap\": \"b\"}",
     CONTROL_BITMAP_REMOVE, NULL},
    {"{\"command\": \"bitmap-add\", \"name\": \"d\"}", 0, "bitmap: missing"},
    {"{\"command\": \"checkpoint\", \"name\": \"d\", \"bitmap\": \"b\"}", 0,
     "new: missing"},
    {"{\"command\": \"bitmap-merge\", \"name\": \"d\", \"bitmap\": \"b\", "
     "\"into\": 2}",
     0, "into: expected a string"},
    {"{\"command\": \"bitmaps\", \"name\": \"d\", \"bitmap\": \"b\"}", 0,
     "bitmap: not a field of command bitmaps"},
    {"{\"command\": \"bitmap-add\", \"name\": \"d\", \"bitmap\": \"b\", "
     "\"new\": \"n\"}",
     0, "new: not a field of command bitmap-add"},
    {"", 0, "request: not JSON"},
    {"{", 0, "request: not JSON (unexpected end of line)"},
    {"[1]", 0, "request: expected a JSON object"},
    {"{}", 0, "command: missing"},
    {"{\"command\": null}", 0, "command: expected a string"},
    {"{\"command\": \"halt\"}", 0, "command: unknown command 'halt'"},
    {"{\"command\": \"remove\"}", 0, "name: missing"},
    {"{\"command\": \"remove\", \"name\": 1}", 0, "name: expected a string"},
    {"{\"command\": \"disconnect\", \"id\": 0}", 0,
     "id: expected a connection number"},
    {"{\"command\": \"disconnect\", \"id\": 1.5}", 0,
     "id: expected a connection number"},
    {"{\"command\": \"add\", \"name\": \"d\", \"settings\": []}", 0,
     "settings: expected an object"},
    {"{\"command\": \"add\", \"name\": \"d\", \"settings\": {}}", 0,
     "settings: no key given"},
    {"{\"command\": \"add\", \"name\": \"d\", \"settings\": {\"a\": []}}", 0,
     "settings.a: the list is empty"},
    {"{\"command\": \"add\", \"name\": \"d\", \"settings\": {\"a\": [1]}}", 0,
     "settings.a: expected a string or a list of strings"},
    {"{\"command\": \"add\", \"name\": \"d\", \"settings\": {\"a\": "
     "\"x\\u0000y\"}}",
     0, "settings.a: contains a NUL character"},
    {"{\"command\": \"status\", \"name\": \"d\"}", 0,
     "name: not a field of command status"},
    {"{\"command\": \"status\"} {}", 0, "request: text after the JSON object"},
    {"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
     "]"
     "]]]]]]",
     0, "request: not JSON"},
};

UNIT_LOOP_TEST("parse", test_control_parse_table, 0,
               (int)(sizeof cases / sizeof cases[0]))
{
    struct control_request req;
    struct err err;
    err_clear(&err);
    int r = control_parse_request(cases[_i].line, strlen(cases[_i].line), &req,
                                  &err);
    if (cases[_i].error == NULL) {
        ck_assert_msg(r == 0, "'%s': %s", cases[_i].line, err.msg);
        ck_assert_int_eq(req.cmd, cases[_i].cmd);
        if (req.cmd == CONTROL_ADD) {
            ck_assert_uint_eq(req.nr_settings, 3);
            ck_assert_str_eq(req.settings[1].key, "allow");
            ck_assert_str_eq(req.settings[2].value, "::1");
        }
        if (req.cmd == CONTROL_DISCONNECT) {
            ck_assert_uint_eq(req.id, 3);
        }
        if (req.cmd >= CONTROL_BITMAP_ADD) {
            ck_assert_str_eq(req.name, "d");
            ck_assert_str_eq(req.bitmap, "b");
        }
        if (req.cmd == CONTROL_CHECKPOINT || req.cmd == CONTROL_BITMAP_MERGE) {
            ck_assert_str_eq(req.other, "n");
        }
        control_request_fini(&req);
        return;
    }
    ck_assert_int_eq(r, -EINVAL);
    ck_assert_msg(strstr(err.msg, cases[_i].error) == err.msg, "'%s': '%s'",
                  cases[_i].line, err.msg);
}
END_TEST

/* A NUL inside the line, and a line over the limit. */
UNIT_TEST("parse", test_control_parse_bytes)
{
    struct control_request req;
    struct err err;
    static const char nul[] = "{\"command\": \"status\"}\0junk";
    ck_assert_int_eq(control_parse_request(nul, sizeof nul - 1, &req, &err),
                     -EINVAL);
    static char big[CONTROL_MAX_LINE + 2];
    memset(big, ' ', sizeof big);
    ck_assert_int_eq(control_parse_request(big, sizeof big, &req, &err),
                     -EINVAL);
    ck_assert_str_eq(err.msg, "request: longer than 65536 bytes");
}
END_TEST

UNIT_SUITE("control");
UNIT_TCASE("parse", 10, NULL, NULL);
