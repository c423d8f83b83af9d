/* cairnd: the cairn daemon (snapshot service and backup scheduler). */
#include <stdio.h>
#include <string.h>

#include "cairn/common.h"
#include "progs/progs.h"

int cairnd_cmd_serve(int argc, char **argv);
int cairnd_cmd_run(int argc, char **argv);

static const struct progs_cmd commands[] = {
    {"version", "print the version", NULL}, /* answered by progs_dispatch */
    {"serve", "serve a data directory with the InfluxDB 1.6 snapshot protocol", cairnd_cmd_serve},
    {"run", "run scheduled backups from a config file (catch-up, state, metrics)", cairnd_cmd_run},
};

int main(int argc, char **argv)
{
    progs_progname = "cairnd";
    return progs_dispatch(commands, sizeof(commands) / sizeof(commands[0]),
                          "cairnd serves the snapshot protocol and runs scheduled backups.\n\n",
                          argc, argv);
}
