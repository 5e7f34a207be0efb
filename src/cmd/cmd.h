/* cmd.h -- the subcommands of the tether binary; each returns the process exit status */
#ifndef TT_CMD_CMD_H
#define TT_CMD_CMD_H

/** `tether serve ...`: argv[0] is "serve". 0 after a clean drain, 2 for bad flags or config, 1 otherwise. */
int tt_cmd_serve(int argc, char **argv);

#endif
