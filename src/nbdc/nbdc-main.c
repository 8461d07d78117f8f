/* SPDX-License-Identifier: MIT */
/* nbdc: the NBD client tool (info, copy, bench); see man/nbdc.1. */
#include "nbdc-int.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static const char usage_text[] =
    "Usage: nbdc COMMAND [OPTION]... ARG...\n"
    "\n"
    "Commands:\n"
    "  nbdc info URI [--json] [--list] [--map]\n"
    "      size, flags, block sizes and description of an export;\n"
    "      --list: every export of the server; --map: allocation map\n"
    "  nbdc copy SRC DST [--connections N] [--requests N] [--threads N]\n"
    "      copy a file or block device to an export, back, or between\n"
    "      two exports; holes and zeroes stay sparse\n"
    "  nbdc bench URI [--rw MODE] [--bs SIZE] [--iodepth N] [--threads N]\n"
    "                 [--connections M] [--time S] [--size SIZE]\n"
    "      MODE: randread (default), randwrite, read, write, randrw\n"
    "\n"
    "URIs: nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH,\n"
    "nbds://... and nbds+unix://... (TLS; not in this build yet).\n"
    "\n"
    "Options: -h, --help; -V, --version.\n"
    "Exit status: 0 success, 1 the operation failed, 2 bad usage.\n";

static void usage(FILE *f)
{
    fputs(usage_text, f);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return NBDC_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
        usage(stdout);
        return NBDC_EXIT_OK;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0) {
        printf("nbdc 0.1\n");
        return NBDC_EXIT_OK;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return NBDC_EXIT_OK;
        }
    }
    if (strcmp(cmd, "info") == 0) {
        return nbdc_info_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "copy") == 0) {
        return nbdc_copy_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "bench") == 0) {
        return nbdc_bench_main(argc - 1, argv + 1);
    }
    nbdc_error("unknown command '%s' (try nbdc --help)", cmd);
    return NBDC_EXIT_USAGE;
}
