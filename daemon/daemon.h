/* The daemon object: options, the bus name, the idle timeout. main.c only
 * parses the command line into VddDaemonOptions and runs this. */
#pragma once

#include <glib.h>

typedef struct {
    guint idle_timeout; /* seconds; 0: never exit when idle */
    char *config_dir;
    gboolean session_bus; /* for development: --session */
    gboolean replace;
} VddDaemonOptions;

void vdd_daemon_options_clear(VddDaemonOptions *opts);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VddDaemonOptions, vdd_daemon_options_clear)

/* Parse argv (modified) into opts; --help prints and exits via
 * GOptionContext. FALSE with G_OPTION_ERROR on bad options. */
gboolean vdd_daemon_parse_options(VddDaemonOptions *opts, int *argc, char ***argv, GError **error);

/* Own the name, serve until idle (or a signal); returns the exit status. */
int vdd_daemon_run(const VddDaemonOptions *opts);
