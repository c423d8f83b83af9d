/* cairnd: the cairn daemon (snapshot service and backup scheduler). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cairn/common.h"
#include "progs/progs.h"

int cairnd_cmd_serve(int argc, char **argv);
int cairnd_cmd_run(int argc, char **argv);
extern const struct option serve_opts[], run_opts_table[];

static const struct progs_cmd commands[] = {
    {"version", "print the version", NULL, NULL, "program version", "cairnd version [--json]", "0"},
    {"serve", "serve a data directory with the InfluxDB 1.6 snapshot protocol", cairnd_cmd_serve,
     serve_opts, NULL, "cairnd serve --data DIR [--listen HOST:PORT]", "0 1 2 7"},
    {"run", "run scheduled backups from a config file (catch-up, state, metrics)", cairnd_cmd_run,
     run_opts_table, "now store schedules", "cairnd run --config FILE [--dry-run [--json]]",
     "0 1 2 4 5 7 8 9 10"},
};

int main(int argc, char **argv)
{
    progs_progname = "cairnd";
    return progs_dispatch(commands, sizeof(commands) / sizeof(commands[0]),
                          "cairnd serves the snapshot protocol and runs scheduled backups.\n\n",
                          argc, argv);
}
