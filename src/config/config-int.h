/* SPDX-License-Identifier: MIT */
/*
 * Private to src/config: the table of configuration keys
 * (config-keys.def, config-keys.c), the one setter that the file parser
 * (config.c) and the command line (cmdline.c) share, and the value
 * parsers and checks behind it (config-values.c).
 */
#ifndef NBDSRV_CONFIG_INT_H
#define NBDSRV_CONFIG_INT_H

#include "nbdsrv/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* -e NAME=memory:SIZE */
#define CONFIG_MEMORY_PREFIX "memory:"
#define CONFIG_RBD_PREFIX "rbd:"
/* -e NAME=PATH,overlay=FILE */
#define CONFIG_OVERLAY_SUFFIX ",overlay="
/* What a bad memory size (memory = SIZE, -e NAME=memory:SIZE) lacks. */
#define CONFIG_MEMORY_EXPECTED                                                 \
    "expected a size up to 16T (a number with an optional K, M, G or T "       \
    "suffix)"

/* ------------------------------------------------------------------ */
/* The keys */

enum config_section {
    CONFIG_SECTION_SERVER,      /* a field of struct config */
    CONFIG_SECTION_EXPORT,      /* a field of struct config_export */
    CONFIG_SECTION_FILE_EXPORT, /* the same, for exports with a path */
};

/* The value types of config-keys.def. */
enum config_type {
    CONFIG_UINT,
    CONFIG_AUTO_UINT,
    CONFIG_SECONDS,
    CONFIG_SIZE,
    CONFIG_BOOL,
    CONFIG_ENUM,
    CONFIG_STRING,
    CONFIG_PATH,
    CONFIG_LIST,
    CONFIG_SPECIAL,
};

/*
 * Where a value comes from: a file's line, or a command-line option.
 * Decides the shape of an error ("FILE:LINE: key = value: ..." or
 * "--option: 'value' ...") and what a relative path is relative to.
 * Borrowed strings.
 */
struct config_origin {
    const char *file;   /* as named, for messages; NULL: command line */
    unsigned line;      /* file only */
    const char *option; /* command line only: "--threads" */
    const char *base;   /* absolute directory for relative paths */
};

struct config_key;

/*
 * A dedicated setter: stores `v` for key `k` into cfg (server keys) or
 * ce (export keys).  0, or -errno with err set in the origin's shape.
 */
typedef int config_set_fn(const struct config_key *k, struct config *cfg,
                          struct config_export *ce, const char *v,
                          const struct config_origin *o, struct err *err);
/* A dedicated printer: "key = value" lines, or nothing. */
typedef void config_print_fn(const struct config_key *k,
                             const struct config *cfg,
                             const struct config_export *ce, FILE *out);
/* A list's clear (the command line replaces the file's values). */
typedef void config_clear_fn(struct config *cfg, struct config_export *ce);
/* A check of an absolute path: 0, or -errno with a message in msg. */
typedef int config_check_fn(const char *path, char *msg, size_t size);

/* One row of config-keys.def.  Immutable (config_keys[]). */
struct config_key {
    const char *name;
    enum config_section section;
    enum config_type type;
    size_t offset, size;      /* of the field in its section's struct */
    uint64_t min, max;        /* UINT, SIZE: value; STRING: length */
    const char *what;         /* AUTO_UINT: what the default 0 means */
    const char *yes, *no;     /* BOOL: the words for true and false */
    bool negate;              /* BOOL: the field holds the opposite */
    const char *const *names; /* ENUM: indexed by value, NULL-padded */
    unsigned nr_names;        /* ENUM */
    config_check_fn *check;   /* PATH, or NULL */
    config_set_fn *set;       /* LIST, SPECIAL */
    config_print_fn *print;   /* LIST, SPECIAL */
    config_clear_fn *clear;   /* LIST with an option */
    const char *option;       /* long option without "--", or NULL */
    int short_option;         /* or 0 */
    const char *flag_value;   /* the option takes no argument: this */
};

/*
 * The table, in config-keys.def's order.  At most CONFIG_MAX_KEYS rows:
 * sets of keys are 64-bit masks.
 */
#define CONFIG_MAX_KEYS 64
extern const struct config_key config_keys[];
extern const unsigned config_nr_keys;

/* The key `name` of [server] (export false) or [export] (true), or NULL. */
ANY_THREAD const struct config_key *config_find_key(bool export,
                                                    const char *name);

/*
 * Sets key `k` to `v` from origin `o`: into cfg for a server key, into
 * ce for an export key.  The one way a value gets into a configuration,
 * from the file or the command line.  0, or -errno with err set ("FILE:
 * LINE: ..." or "--option: ...").
 */
ANY_THREAD int config_set_key(const struct config_key *k, struct config *cfg,
                              struct config_export *ce, const char *v,
                              const struct config_origin *o, struct err *err);

/*
 * Checks `v` for key `k` as config_set_key would, without storing it:
 * numbers, booleans and enums only, which need no file (the command
 * line checks them while it is parsed).  Other types return 0.
 */
ANY_THREAD int config_check_key(const struct config_key *k, const char *v,
                                const struct config_origin *o, struct err *err);

/*
 * Stores the table's default column: the [server] keys' into cfg, the
 * [export] keys' into ce (each may be NULL).
 */
ANY_THREAD void config_set_defaults(struct config *cfg,
                                    struct config_export *ce);

/* ------------------------------------------------------------------ */
/* Values */

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
