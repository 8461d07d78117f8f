/* SPDX-License-Identifier: MIT */
/*
 * The default GnuTLS priority string: AES-GCM first where the CPU makes
 * it fast, GnuTLS's own order elsewhere (see tls-priority.h).
 *
 * The CPU is asked once (pthread_once); the answer is immutable after
 * that, so every thread may read it.  "-CHACHA20-POLY1305:+CHACHA20-..."
 * removes the cipher and appends it again, which leaves it last in the
 * list and every other cipher of NORMAL in GnuTLS's order.
 */
#include "nbdsrv/tls-priority.h"

#include <pthread.h>

#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#define PRIORITY_NORMAL "NORMAL"
#define PRIORITY_CHACHA20_LAST ":-CHACHA20-POLY1305:+CHACHA20-POLY1305"

static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static bool cpu_aes_gcm; /* immutable once cpu_once has run */

static void ask_cpu(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    cpu_aes_gcm =
        __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
#elif defined(__aarch64__)
    unsigned long hw = getauxval(AT_HWCAP);
    cpu_aes_gcm = (hw & HWCAP_AES) != 0 && (hw & HWCAP_PMULL) != 0;
#else
    cpu_aes_gcm = false;
#endif
}

bool tls_cpu_has_aes_gcm(void)
{
    pthread_once(&cpu_once, ask_cpu);
    return cpu_aes_gcm;
}

const char *tls_priority_default(enum tls_side side, bool aes_gcm_hw)
{
    if (!aes_gcm_hw) {
        return PRIORITY_NORMAL;
    }
    /* Server precedence only means something on the server side. */
    return side == TLS_SIDE_SERVER ? PRIORITY_NORMAL
               ":%SERVER_PRECEDENCE" PRIORITY_CHACHA20_LAST
                                   : PRIORITY_NORMAL PRIORITY_CHACHA20_LAST;
}

const char *tls_priority_choose(enum tls_side side, const char *given)
{
    if (given != NULL) {
        return given;
    }
    return tls_priority_default(side, tls_cpu_has_aes_gcm());
}

const char *tls_priority_reason(const char *given)
{
    if (given != NULL) {
        return "as configured";
    }
    return tls_cpu_has_aes_gcm()
               ? "default: AES-GCM preferred, the CPU has AES and "
                 "carry-less multiply instructions"
               : "default: GnuTLS's order, the CPU lacks AES or "
                 "carry-less multiply instructions";
}
