/* cmd.h -- the subcommands of the tether binary; each returns the process exit status */
#ifndef TT_CMD_CMD_H
#define TT_CMD_CMD_H

/** `tether serve ...`: argv[0] is "serve". 0 after a clean drain, 2 for bad flags or config, 1 otherwise. */
int tt_cmd_serve(int argc, char **argv);
/** `tether reload [--pid-file PATH | -c CONFIG]`: argv[0] is "reload". SIGHUP to the server in the pid file. 0 when
 *  sent, 1 when no tether runs there (no pid file, stale pid, another program), 2 for bad flags or config. */
int tt_cmd_reload(int argc, char **argv);
/** `tether probe URL ...`: argv[0] is "probe". 0 when measured, 1 when the origin could not be, 2 for bad flags. */
int tt_cmd_probe(int argc, char **argv);
/** `tether bench URL ...`: argv[0] is "bench". 0 after a run, 1 when every request failed, 2 for bad flags. */
int tt_cmd_bench(int argc, char **argv);

/** `tether advise ...`: argv[0] is "advise". 0 when advice was given, 1 when the metrics could not be read, 2 for bad
 *  flags. */
int tt_cmd_advise(int argc, char **argv);

#endif
