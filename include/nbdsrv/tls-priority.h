/* SPDX-License-Identifier: MIT */
/*
 * The GnuTLS priority string used when the user gives none.
 *
 * GnuTLS's NORMAL lists AES-256-GCM, then ChaCha20-Poly1305, then
 * AES-128-GCM, and a server follows the client's order.  A TLS 1.3 PSK
 * is bound to SHA-256, which rules out AES-256-GCM-SHA384, so PSK
 * sessions between two GnuTLS peers end up on ChaCha20-Poly1305, which
 * is many times slower than AES-GCM on a CPU with AES and carry-less
 * multiply instructions (and faster than AES without them).
 *
 * So on such CPUs the default moves ChaCha20-Poly1305 behind every other
 * cipher of NORMAL, and a server also takes its own order over the
 * client's (%SERVER_PRECEDENCE); elsewhere the default is NORMAL as it
 * stands.  A priority string the user gives is used as given.  The PSK
 * key exchanges are appended by tls-creds.c in either case.
 */
#ifndef NBDSRV_TLS_PRIORITY_H
#define NBDSRV_TLS_PRIORITY_H

#include "nbdsrv/affinity.h"

#include <stdbool.h>

enum tls_side {
    TLS_SIDE_SERVER,
    TLS_SIDE_CLIENT,
};

/*
 * True when this CPU has the instructions GnuTLS uses to make AES-GCM
 * fast: AES and carry-less multiplication (x86: AES-NI and PCLMULQDQ;
 * arm64: AES and PMULL).  The CPU is asked once, on the first call, and
 * the answer kept.  ANY_THREAD.
 */
ANY_THREAD bool tls_cpu_has_aes_gcm(void);

/*
 * The default priority string for `side`, for a CPU that has
 * (aes_gcm_hw) or lacks the AES-GCM instructions: a static string.  Pure,
 * so that tests can ask for either kind of CPU.  ANY_THREAD.
 */
ANY_THREAD const char *tls_priority_default(enum tls_side side,
                                            bool aes_gcm_hw);

/*
 * The priority string in force for `side`: `given` when it is not NULL,
 * else the default for this CPU.  ANY_THREAD.
 */
ANY_THREAD const char *tls_priority_choose(enum tls_side side,
                                           const char *given);

/*
 * Why tls_priority_choose picks what it picks, in words for the log, e.g.
 * "default: AES-GCM preferred, the CPU has AES and carry-less multiply
 * instructions".  A static string.  ANY_THREAD.
 */
ANY_THREAD const char *tls_priority_reason(const char *given);

#endif
