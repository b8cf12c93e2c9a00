/* vdiskd: the vdisk D-Bus system service. Everything is in libvdiskd. */
#include <locale.h>
#include <signal.h>

#include "daemon.h"

int main(int argc, char **argv)
{
    setlocale(LC_ALL, "");
    /* A client closing its end of a descriptor must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    g_auto(VddDaemonOptions) opts = { 0 };
    g_autoptr(GError) error = NULL;
    if (!vdd_daemon_parse_options(&opts, &argc, &argv, &error)) {
        g_printerr("vdiskd: %s\n", error->message);
        return 2;
    }
    return vdd_daemon_run(&opts);
}
