/* vdiskd: the vdisk D-Bus system service. Everything is in libvdiskd. */
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "daemon.h"

int main(int argc, char **argv)
{
    setlocale(LC_ALL, "");
    /* Passphrases pass through this process's memory: no core dump may
     * carry them to disk, and no other process of the same uid may read
     * them through ptrace or /proc/PID/mem. */
    prctl(PR_SET_DUMPABLE, 0);
    /* A client closing its end of a descriptor must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    g_auto(VddDaemonOptions) opts = { 0 };
    g_autoptr(GError) error = NULL;
    if (!vdd_daemon_parse_options(&opts, &argc, &argv, &error)) {
        g_printerr("vdiskd: %s\n", error->message);
        return 2;
    }
    int status = vdd_daemon_run(&opts);
    /* libvirt's event loop and a connection attempt in progress run on
     * threads that cannot be joined; exit handlers run under them (as
     * returning from main would) could pull libraries out from under them.
     * Everything of ours is closed by now: flush and leave. */
    fflush(NULL);
    _exit(status);
}
