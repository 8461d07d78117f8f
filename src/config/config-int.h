/* SPDX-License-Identifier: MIT */
/*
 * Private to src/config: value parsers and checks shared by the file
 * parser (config.c) and its merge with the command line.
 */
#ifndef NBDSRV_CONFIG_INT_H
#define NBDSRV_CONFIG_INT_H

#include "nbdsrv/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* -e NAME=memory:SIZE */
#define CONFIG_MEMORY_PREFIX "memory:"
/* -e NAME=PATH,overlay=FILE */
#define CONFIG_OVERLAY_SUFFIX ",overlay="

/* Strips blanks (and a trailing newline) in place; returns the start. */
ANY_THREAD char *config_trim(char *s);
/* yes/true/on/1 or no/false/off/0.  0 or -EINVAL. */
ANY_THREAD int config_parse_bool(const char *v, bool *out);
/* A decimal number from min to max.  0 or -EINVAL. */
ANY_THREAD int config_parse_uint(const char *v, unsigned min, unsigned max,
                                 unsigned *out);
/*
 * A size in bytes: a decimal number with an optional binary suffix K, M,
 * G or T (KiB, MiB, GiB, TiB also accepted), from min to max.  0 or
 * -EINVAL.
 */
ANY_THREAD int config_parse_size(const char *v, uint64_t min, uint64_t max,
                                 uint64_t *out);
/* Formats a size the way config_parse_size reads it, with the largest
 * suffix that is exact ("64M", "1G", "1000"). */
ANY_THREAD void config_format_size(uint64_t bytes, char *buf, size_t size);
/* Seconds, fractions allowed, 0 to 86400.  0 or -EINVAL. */
ANY_THREAD int config_parse_seconds(const char *v, double *out);
/* error, warning, info or debug.  0 or -EINVAL. */
ANY_THREAD int config_parse_log_level(const char *v, enum log_level *out);
/* path if absolute, else base/path; malloc'd, NULL when out of memory. */
ANY_THREAD char *config_make_absolute(const char *base, const char *path);
/* The image exists and opens (for writing unless read_only); else -errno
 * with a message in msg. */
ANY_THREAD int config_check_image(const char *path, bool read_only, char *msg,
                                  size_t size);
/* `path` is a readable regular file; else -errno with "WHAT PATH: ..."
 * in msg. */
ANY_THREAD int config_check_readable_file(const char *what, const char *path,
                                          char *msg, size_t size);
/* A certificate directory with a readable server-cert.pem and
 * server-key.pem; else -errno with a message in msg. */
ANY_THREAD int config_check_certs_dir(const char *dir, char *msg, size_t size);
/* "unix", "ADDR" or "ADDR/PREFIX" (IPv4, IPv6, brackets allowed).  0 or
 * -EINVAL. */
ANY_THREAD int config_parse_allow_entry(const char *text,
                                        struct server_allow *a);
/* Appends an allow value's entries (separated by commas or blanks); 0,
 * -ENOMEM, or -EINVAL with the bad entry copied to `bad`. */
ANY_THREAD int config_add_allow(struct config_export *ce, const char *value,
                                char *bad, size_t bad_size);
/* Appends a copy of s to a growable string array.  0 or -ENOMEM. */
ANY_THREAD int config_push_string(char ***array, unsigned *count,
                                  const char *s);
/* Replaces an owned string with a copy of value.  0 or -ENOMEM. */
ANY_THREAD int config_set_string(char **field, const char *value);
/* The same for the const char * fields of struct tls_config. */
ANY_THREAD int config_set_const_string(const char **field, const char *value);

#endif
