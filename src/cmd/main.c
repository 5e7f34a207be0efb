/* main.c -- the tether binary: dispatch to a subcommand */
#include "cmd/cmd.h"
#include "core/compat.h"

#ifndef TETHER_VERSION
#define TETHER_VERSION "0.0.0"
#endif

static const char usage[] =
    "usage: tether <command> [options]\n"
    "\n"
    "An HTTP/1.1 + HTTP/2 server and reverse proxy (TLS with ALPN, pooled upstream connections that\n"
    "do not lose requests to the keep-alive race), and tools to measure servers, whose reason to exist\n"
    "is the connection lifecycle.\n"
    "\n"
    "commands:\n"
    "  serve     serve static files and proxy routes over HTTP/1.1 and HTTP/2, clear or TLS\n"
    "            tether serve --root /srv/www --route /api/=http://127.0.0.1:3000 --listen 0.0.0.0:8080\n"
    "            tether serve --config /etc/tether/tether.ini --check   (validate, start nothing)\n"
    "  reload    make the running server reload its configuration without closing a connection (SIGHUP)\n"
    "            tether reload -c /etc/tether/tether.ini   (or --pid-file /run/tether.pid)\n"
    "  probe     measure a server's idle timeout, max requests, persistence, pipelining, ALPN, TLS\n"
    "            resumption, and say what a client in front of it must do\n"
    "            tether probe https://example.test/ --client-idle 60s\n"
    "  bench     load-test a server: keep-alive vs new connections, h1 vs h2, TLS full vs resumed,\n"
    "            latency percentiles\n"
    "            tether bench http://127.0.0.1:8080/ -c 50 -d 10s --compare\n"
    "  advise    read a running tether's counters and say which settings to change (idle timeouts,\n"
    "            max_connections, upstream pools, TCP keepalive), with the numbers\n"
    "            tether advise --metrics http://127.0.0.1:9901/metrics\n"
    "\n"
    "  every option of a command: tether serve --help, tether reload --help, tether probe --help,\n"
    "  tether bench --help, tether advise --help\n"
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
    if (strcmp(cmd, "reload") == 0) return tt_cmd_reload(argc - 1, argv + 1);
    if (strcmp(cmd, "probe") == 0) return tt_cmd_probe(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) return tt_cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "advise") == 0) return tt_cmd_advise(argc - 1, argv + 1);
    fprintf(stderr, "tether: unknown command '%s'\n\n%s", cmd, usage);
    return 2;
}
