/* SPDX-License-Identifier: MIT */
/* nbdc: the NBD client tool (info, copy, bench); see man/nbdc.1. */
#include "nbdc-int.h"
#include "nbdsrv/version.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static const char usage_text[] =
    "Usage: nbdc info URI [--json] [--list] [--map]\n"
    "       nbdc copy SRC DST [--connections N] [--requests N] [--threads N]\n"
    "                 [--dirty-bitmap NAME]\n"
    "       nbdc bench URI [--rw MODE] [--bs SIZE] [--iodepth N]\n"
    "                  [--threads N] [--connections M] [--time S]\n"
    "                  [--size SIZE]\n"
    "       nbdc -h|--help|-V|--version\n"
    "\n"
    "info: size, flags, block sizes and description of an export.\n"
    "  --json         JSON with nbdinfo's keys\n"
    "  --list         every export of the server\n"
    "  --map          the allocation map (offset, length, type)\n"
    "copy: SRC to DST, each an NBD URI or a file or block device; holes\n"
    "and zeroes stay sparse; a smaller destination is refused.  SRC or DST\n"
    "'-' streams standard input or output in order (a destination must\n"
    "exist then); DST null: discards (for read benchmarks).\n"
    "  --connections N  connections per NBD side (default 2)\n"
    "  --requests N     requests in flight per connection (default 8)\n"
    "  --threads N      event-loop threads (default: CPUs, at most 8)\n"
    "  --dirty-bitmap NAME  copy only the blocks the source's dirty bitmap\n"
    "                   NAME marks, onto an existing DST (incremental)\n"
    "bench: a fixed-time load; a line a second, then IOPS, MiB/s and\n"
    "latency percentiles (p50, p99, p99.9).\n"
    "  --rw MODE        randread (default), randwrite, read, write, randrw\n"
    "  --bs SIZE        request size (default 4K)\n"
    "  --iodepth N      requests in flight per connection (default 32)\n"
    "  --threads N      event-loop threads (default 2)\n"
    "  --connections M  connections (default 1)\n"
    "  --time S         seconds to run (default 10)\n"
    "  --size SIZE      use only the first SIZE bytes of the export\n"
    "\n"
    "URIs: nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH;\n"
    "nbds:// and nbds+unix:// require TLS: add tls-certificates=DIR (X.509:\n"
    "DIR/ca-cert.pem, optional client-cert.pem and client-key.pem) or\n"
    "tls-psk-file=FILE (PSK; identity: the URI's USER@, else the login).\n"
    "\n"
    "Exit status: 0 success, 1 the operation failed, 2 bad usage.\n"
    "See nbdc(1).\n";

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
        printf("nbdc " NBDSRV_VERSION "\n");
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
