/* SPDX-License-Identifier: MIT */
/*
 * TLS settings as the user gives them (command line or configuration
 * file), before any credential is loaded.  Shared by the daemon's option
 * parsing, the configuration file and the TLS module.
 */
#ifndef NBDSRV_TLS_CONFIG_H
#define NBDSRV_TLS_CONFIG_H

#include "nbdsrv/affinity.h"

#include <stdbool.h>

enum tls_mode {
    TLS_MODE_OFF = 0, /* STARTTLS is answered NBD_REP_ERR_UNSUP */
    TLS_MODE_ON,      /* plain and TLS clients are both served */
    TLS_MODE_REQUIRE, /* every option but STARTTLS and ABORT needs TLS */
};

/* Strings are borrowed from the caller; NULL means "not given". */
struct tls_config {
    enum tls_mode mode;
    const char *certs_dir; /* ca-cert.pem, server-cert.pem, server-key.pem,
                              optional ca-crl.pem */
    const char *psk_file;  /* psktool format: identity:hexkey a line */
    bool verify_peer;      /* client certificates must chain to the CA */
    const char *priority;  /* GnuTLS priority string; NULL: the default
                              (tls-priority.h) */
};

/*
 * Parses "off", "on" or "require".  Returns 0, or -EINVAL for anything
 * else (mode untouched).  ANY_THREAD.
 */
ANY_THREAD int tls_mode_parse(const char *text, enum tls_mode *mode);

/* "off", "on" or "require".  ANY_THREAD. */
ANY_THREAD const char *tls_mode_name(enum tls_mode mode);

#endif
