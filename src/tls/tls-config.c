/* SPDX-License-Identifier: MIT */
/* TLS mode names. */
#include "nbdsrv/tls-config.h"

#include <errno.h>
#include <string.h>

int tls_mode_parse(const char *text, enum tls_mode *mode)
{
    for (enum tls_mode m = TLS_MODE_OFF; m <= TLS_MODE_REQUIRE; m++) {
        if (strcmp(text, tls_mode_name(m)) == 0) {
            *mode = m;
            return 0;
        }
    }
    return -EINVAL;
}

const char *tls_mode_name(enum tls_mode mode)
{
    switch (mode) {
    case TLS_MODE_OFF:
        return "off";
    case TLS_MODE_ON:
        return "on";
    case TLS_MODE_REQUIRE:
        return "require";
    }
    return "?";
}
