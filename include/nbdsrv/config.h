/* SPDX-License-Identifier: MIT */
/*
 * The daemon's configuration: the command line (cmdline.c) and the
 * configuration file (config.c, INI syntax read with libinih), merged
 * into one immutable, reference-counted snapshot.
 *
 * config_build reads the file named by -c (if any), then lays the
 * command-line options over it: a command-line option replaces the
 * file's value, -l replaces every file listen address, and -e exports
 * are added to the file's exports.  Every value is checked where it is
 * read; a mistake in the file is reported as "FILE:LINE: what is wrong",
 * one on the command line as "--option: what is wrong".  A reload
 * (SIGHUP) calls config_build again with the same command line.
 *
 * Relative paths in the file are taken relative to the file's directory;
 * relative paths on the command line relative to the working directory
 * at start-up.  Both are stored absolute, so a reload of a daemon that
 * has changed directory to / finds the same files.
 */
#ifndef NBDSRV_CONFIG_H
#define NBDSRV_CONFIG_H

#include "nbdsrv/affinity.h"
#include "nbdsrv/err.h"
#include "nbdsrv/log.h"
#include "nbdsrv/refcount.h"
#include "nbdsrv/server.h"
#include "nbdsrv/tls-config.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

/* Exit status for a bad command line or configuration. */
#define CONFIG_EXIT_USAGE 2

#define CONFIG_DEFAULT_LISTEN "127.0.0.1:10809"
#define CONFIG_MAX_THREADS 256u
#define CONFIG_MAX_REQUESTS 1024u
#define CONFIG_MAX_CONNECTIONS 1000000u
#define CONFIG_MIN_BUFFER_MEMORY (1ull * 1024 * 1024)
#define CONFIG_MAX_BUFFER_MEMORY (1ull << 40)
/*
 * Clients served at once unless configured: a connection costs one file
 * descriptor and a few KiB, so the server can afford many; 1024 fits the
 * open-file limit the daemon raises itself to (the hard limit: 4096 or
 * more on current systems, 65536 in our unit) with room to spare, and
 * still bounds what a flood of clients can take.
 */
#define CONFIG_DEFAULT_MAX_CONNECTIONS 1024u

/* One command-line export (-e NAME=PATH or -e NAME=memory:SIZE, either
 * followed by ,overlay=FILE).  Strings point into argv. */
struct cmdline_export {
    const char *name;
    const char *path; /* NULL for memory and rbd */
    const char *rbd;  /* -e NAME=rbd:POOL/IMAGE: NULL otherwise */
    bool memory;
    uint64_t memory_size;
    const char *overlay; /* NULL: none */
};

struct config_key; /* one row of src/config/config-keys.def */

/*
 * A command-line option that sets a configuration key: "set key to
 * value", applied over the file like a line of it.  `value` points into
 * argv, or is the table's value for an option without argument.
 */
struct cmdline_setting {
    const struct config_key *key;
    const char *value;
};

/*
 * The command line as given.  Strings point into argv and are borrowed
 * for the program's life.  Options that set a configuration key are
 * kept as `settings`, in argv order; a later one replaces an earlier one
 * for the same key, except for a list (-l), whose values add up.  Owned
 * by main; immutable after cmdline_parse.
 */
struct cmdline {
    const char *config_file; /* -c */
    char *cwd;               /* working directory at start-up; owned */
    bool foreground;
    bool check_config;
    bool read_only; /* -r: the -e exports are read-only */
    bool inetd;     /* -s: serve the one connection on stdin */
    double poll_us;
    struct cmdline_export *exports; /* owned array */
    unsigned nr_exports;
    struct cmdline_setting *settings; /* owned array */
    unsigned nr_settings;
};

/* What cmdline_parse found. */
enum cmdline_result {
    CMDLINE_RUN,  /* go on */
    CMDLINE_EXIT, /* --help or --version was printed: exit 0 */
};

/*
 * Parses argv into `cl` (zeroed first).  Returns CMDLINE_RUN or
 * CMDLINE_EXIT, or -EINVAL with err set ("--threads: ..."): the caller
 * prints it and exits CONFIG_EXIT_USAGE.  Writes --help and --version
 * output to `out`.  Uses getopt (resets optind).  Main thread only
 * (ANY_THREAD, not reentrant).
 */
ANY_THREAD int cmdline_parse(struct cmdline *cl, int argc, char **argv,
                             FILE *out, struct err *err);

/* Frees what cmdline_parse allocated.  ANY_THREAD. */
ANY_THREAD void cmdline_fini(struct cmdline *cl);

/* Prints --help to `out`.  ANY_THREAD. */
ANY_THREAD void cmdline_usage(FILE *out);

/*
 * One export of the effective configuration.  Its `ec` points into the
 * strings and arrays below, all owned by the enclosing config.
 */
struct config_export {
    struct export_config ec;
    char *name, *path, *description; /* path NULL: memory (ec.memory) */
    char *overlay;                   /* NULL: none */
    char *rbd;                       /* NULL: not an RBD export */
    char *ceph_conf, *ceph_id, *ceph_keyring;
    struct server_allow *allow;
    unsigned nr_allow;
    char **tls_identities;
    unsigned nr_tls_identities;
    char **dirty_bitmaps;
    unsigned nr_dirty_bitmaps;
    char *dirty_bitmap_file; /* NULL: none */
    char *origin;            /* "FILE:LINE" of its section, or "--export" */
    char *path_origin;       /* "FILE:LINE" of its path, or "--export" */
    char *overlay_origin;    /* "FILE:LINE" of its overlay, or "--export" */
};

/*
 * The effective configuration: immutable after config_build,
 * reference-counted (atomic) so that a reload can swap snapshots while
 * others still read the old one.  Owns every string it points to.
 */
struct config {
    struct refcount refs;
    char *file; /* absolute path of the file read, or NULL */
    char **listen;
    unsigned nr_listen;
    unsigned threads;         /* 0: one per CPU */
    struct tls_config tls;    /* strings owned (cast away const to free) */
    double handshake_timeout; /* seconds; 0: none */
    double shutdown_timeout;  /* seconds */
    double request_timeout;   /* seconds; 0: none */
    double poll_us;           /* command line only */
    unsigned max_connections; /* 0: unlimited */
    unsigned max_connections_per_client; /* 0: unlimited */
    unsigned max_requests;               /* in flight per connection */
    uint64_t max_payload;                /* max-payload: bytes */
    uint64_t max_buffer_memory; /* max-buffer-memory: bytes, server-wide */
    uint64_t max_conn_buffer;   /* max-buffer-memory-per-connection */
    enum log_level log_level;
    char *pidfile;        /* NULL: none */
    char *metrics_listen; /* HOST:PORT of /metrics; NULL: off */
    char *control;        /* the control socket's path; NULL: none */
    /* control-group: the group that may use it too (mode 0660), NULL:
     * none (0600); control_gid is its id, looked up when it was set. */
    char *control_group;
    gid_t control_gid;
    struct config_export *exports;
    unsigned nr_exports;
};

/*
 * Builds the effective configuration from the command line and the file
 * it names.  Returns a snapshot with one reference, or NULL with err set
 * to the first mistake ("FILE:LINE: ..." or "--option: ...").  Checks
 * that every image exists and is a regular file or block device the
 * daemon may open, and that TLS files are readable, but opens nothing.
 * ANY_THREAD (not a loop thread: it reads files).
 */
ANY_THREAD struct config *config_build(const struct cmdline *cl,
                                       struct err *err);

/*
 * Parses configuration text as if read from `name` (for the unit tests
 * and config_build).  Same result as config_build with no command-line
 * overrides but without the final "no export" check.  ANY_THREAD.
 */
ANY_THREAD struct config *
config_parse_string(const char *text, const char *name, struct err *err);

/*
 * For one connection (--inetd, a connected socket from systemd): 0 when
 * `cfg` has exactly one export, else -EINVAL with err naming `mode` and
 * the exports.  config_build makes this check itself under --inetd (it
 * also refuses --listen and --pidfile then).  ANY_THREAD.
 */
ANY_THREAD int config_check_one_export(const struct config *cfg,
                                       const char *mode, struct err *err);

ANY_THREAD struct config *config_ref(struct config *cfg);
ANY_THREAD void config_unref(struct config *cfg); /* NULL allowed */

/* The limits a server should use under `cfg`.  ANY_THREAD. */
ANY_THREAD void config_limits(const struct config *cfg,
                              struct server_limits *limits);

/*
 * Writes the effective configuration in the file's own syntax (what
 * --check-config prints).  ANY_THREAD.
 */
ANY_THREAD void config_print(const struct config *cfg, FILE *out);

/* ---- One export from the control socket ---- */

/* What errors about a control-socket export name as its origin. */
#define CONFIG_CONTROL_ORIGIN "control socket"

/* One "key = value" of an export, borrowed. */
struct config_setting {
    const char *key;
    const char *value;
};

/*
 * Builds export `name` from `settings` as an [export NAME] section of
 * the file would be, through the same table, setters and checks (each
 * key at most once except the list keys; a path or memory; the image and
 * overlay usable), with the same messages, but without the "FILE:LINE: "
 * prefix: "read-only = maybe: expected yes or no".  Relative paths are
 * taken from /.  Returns the export (its `ec` ready for the server;
 * config_export_free ends it), or NULL with err set.  ANY_THREAD (not a
 * loop thread: it opens the image to check it).
 */
ANY_THREAD struct config_export *
config_export_parse(const char *name, const struct config_setting *settings,
                    unsigned n, struct err *err);

/* Frees what config_export_parse returned.  NULL is allowed. */
ANY_THREAD void config_export_free(struct config_export *ce);

/*
 * Writes the export's keys as "key = value" lines, as --check-config
 * prints them (which config_export_parse reads back).  ANY_THREAD.
 */
ANY_THREAD void config_export_print(const struct config_export *ce, FILE *out);

#endif
