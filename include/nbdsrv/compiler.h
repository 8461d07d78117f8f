/* SPDX-License-Identifier: MIT */
/* Compiler attributes and sanitizer detection used across the tree. */
#ifndef NBDSRV_COMPILER_H
#define NBDSRV_COMPILER_H

#include <stddef.h>

#define NORETURN __attribute__((noreturn))
#define NOINLINE __attribute__((noinline))
#define UNUSED __attribute__((unused))
#define PRINTF_FMT(f, a) __attribute__((format(printf, f, a)))
#define WARN_UNUSED __attribute__((warn_unused_result))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define container_of(ptr, type, member)                                        \
    ((type *)((char *)(ptr)-offsetof(type, member)))

/*
 * clang's thread-safety analysis (-Wthread-safety, on in clang builds):
 * a lock type is a CAPABILITY, a field it protects is GUARDED_BY it, and
 * a function says which locks it takes, drops or needs held.  gcc ignores
 * them.
 */
#if defined(__clang__)
#define THREAD_ATTR(x) __attribute__((x))
#else
#define THREAD_ATTR(x)
#endif
#define CAPABILITY(name) THREAD_ATTR(capability(name))
#define GUARDED_BY(lock) THREAD_ATTR(guarded_by(lock))
#define PT_GUARDED_BY(lock) THREAD_ATTR(pt_guarded_by(lock))
#define REQUIRES(...) THREAD_ATTR(requires_capability(__VA_ARGS__))
#define ACQUIRE(...) THREAD_ATTR(acquire_capability(__VA_ARGS__))
#define RELEASE(...) THREAD_ATTR(release_capability(__VA_ARGS__))
#define EXCLUDES(...) THREAD_ATTR(locks_excluded(__VA_ARGS__))
#define NO_THREAD_SAFETY_ANALYSIS THREAD_ATTR(no_thread_safety_analysis)

/* Sanitizers: gcc defines __SANITIZE_*__, clang answers __has_feature. */
#ifndef __has_feature
#define __has_feature(x) 0
#endif
#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
#define NBDSRV_ASAN 1
#else
#define NBDSRV_ASAN 0
#endif
#if defined(__SANITIZE_THREAD__) || __has_feature(thread_sanitizer)
#define NBDSRV_TSAN 1
#else
#define NBDSRV_TSAN 0
#endif

#endif
