/* main.c -- the tether binary: dispatch to a subcommand */
#include "cmd/cmd.h"
#include "core/compat.h"

#ifndef TETHER_VERSION
#define TETHER_VERSION "0.0.0"
#endif

static const char usage[] =
    "usage: tether <command> [options]\n"
    "\n"
    "An HTTP/1.1 server, and tools to measure servers, whose reason to exist is the connection\n"
    "lifecycle.\n"
    "\n"
    "commands:\n"
    "  serve     serve static files over persistent connections (tether serve --help)\n"
    "  probe     measure a server's idle timeout, max requests, persistence, pipelining\n"
    "            (tether probe --help)\n"
    "  bench     load-test a server: keep-alive vs new connections, latency percentiles\n"
    "            (tether bench --help)\n"
    "\n"
    "  --version  print the version\n"
    "  --help     this text\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("tether %s\n", TETHER_VERSION);
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0) return tt_cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "probe") == 0) return tt_cmd_probe(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) return tt_cmd_bench(argc - 1, argv + 1);
    fprintf(stderr, "tether: unknown command '%s'\n\n%s", cmd, usage);
    return 2;
}
