/* reload.c -- `tether reload`: SIGHUP to the running server named by a pid file */
#include "cmd/cmd.h"
#include "conf/conf.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char reload_usage[] =
    "usage: tether reload [--pid-file PATH | -c CONFIG]\n"
    "\n"
    "Asks the running `tether serve` to reload its configuration: reads its process id from the pid file (given,\n"
    "or the [server] pid_file of CONFIG) and sends it SIGHUP. The server re-reads its configuration and applies it\n"
    "without closing any connection, or refuses it and keeps the running one: its error log says which\n"
    "(\"reload: applied (generation N)\" or \"reload: refused\" with FILE:LINE errors). With -c, CONFIG is checked\n"
    "first and nothing is sent when it has errors.\n"
    "\n"
    "  --pid-file PATH   the server's pid file\n"
    "  -c, --config FILE the server's config file (its pid_file is used)\n"
    "  -h, --help        this text\n"
    "\n"
    "exit status: 0 signal sent; 1 no such server (no pid file, stale pid, not a tether process); 2 bad\n"
    "arguments or configuration errors.\n";

/* True unless /proc says process `pid` runs another program than tether (when /proc cannot tell: true). */
static bool is_tether(long pid, char *comm, size_t commlen)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
    FILE *f = fopen(path, "re");
    if (f == NULL) return true;
    size_t n = fread(comm, 1, commlen - 1, f);
    fclose(f);
    comm[n] = '\0';
    comm[strcspn(comm, "\n")] = '\0';
    if (strncmp(comm, "tether", 6) == 0) return true;
    /* A renamed binary: the first word of its command line may still say so. */
    snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
    char cmd[512];
    if ((f = fopen(path, "re")) == NULL) return false;
    n = fread(cmd, 1, sizeof(cmd) - 1, f);
    fclose(f);
    cmd[n] = '\0';
    const char *base = strrchr(cmd, '/');
    base = base ? base + 1 : cmd;
    return strncmp(base, "tether", 6) == 0;
}

int tt_cmd_reload(int argc, char **argv)
{
    static const struct option opts[] = {
        {"pid-file", required_argument, NULL, 'p'},
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *pid_file = NULL, *config = NULL;
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        if (opt == 'h') {
            fputs(reload_usage, stdout);
            return 0;
        }
        if (opt == 'p') pid_file = optarg;
        if (opt == 'c') config = optarg;
        if (opt == '?') return 2;
    }
    if (optind < argc || (pid_file == NULL) == (config == NULL)) {
        fputs("tether reload: give --pid-file PATH or -c CONFIG (see tether reload --help)\n", stderr);
        return 2;
    }
    tt_conf_t c;
    tt_conf_init(&c);
    if (config != NULL) {
        char err[8192];
        if (tt_conf_load(&c, config, err, sizeof(err)) != 0 || tt_conf_finish(&c, err, sizeof(err)) != 0 ||
            tt_conf_check_files(&c, err, sizeof(err)) != 0) {
            for (const char *p = err; *p != '\0';) {
                size_t n = strcspn(p, "\n");
                fprintf(stderr, "tether: %.*s\n", (int)n, p);
                p += n + (p[n] == '\n');
            }
            fprintf(stderr,
                    "tether reload: %s has errors: nothing sent (the server would refuse it and keep its "
                    "running configuration)\n",
                    config);
            tt_conf_dispose(&c);
            return 2;
        }
        if (c.pid_file == NULL) {
            fprintf(stderr, "tether reload: %s sets no [server] pid_file: give --pid-file PATH\n", config);
            tt_conf_dispose(&c);
            return 2;
        }
        pid_file = c.pid_file;
    }
    int rc = 1;
    FILE *f = fopen(pid_file, "re");
    long pid = 0;
    char extra[8];
    if (f == NULL) {
        fprintf(stderr, "tether reload: %s: %s (is tether serve running? it writes its pid_file at start-up)\n",
                pid_file, strerror(errno));
    } else if (fscanf(f, "%ld", &pid) != 1 || pid <= 1 || fscanf(f, " %7s", extra) == 1) {
        fprintf(stderr, "tether reload: %s: not a process id\n", pid_file);
    } else {
        char comm[64] = "";
        if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
            fprintf(stderr, "tether reload: %s: stale pid file: no process %ld (tether is not running)\n", pid_file,
                    pid);
        } else if (!is_tether(pid, comm, sizeof(comm))) {
            fprintf(stderr, "tether reload: %s: process %ld is not tether (it runs '%s'): nothing sent\n", pid_file,
                    pid, comm);
        } else if (kill((pid_t)pid, SIGHUP) != 0) {
            fprintf(stderr, "tether reload: SIGHUP to process %ld: %s\n", pid, strerror(errno));
        } else {
            printf("tether reload: sent SIGHUP to process %ld; its error log says whether the configuration was "
                   "applied or refused\n",
                   pid);
            rc = 0;
        }
    }
    if (f != NULL) fclose(f);
    tt_conf_dispose(&c);
    return rc;
}
