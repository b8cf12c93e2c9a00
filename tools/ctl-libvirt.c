/* vdiskctl libvirt status: does libvirt run its volume work through vdisk?
 * libvirt finds "qemu-img" on its daemon's PATH at every call; the shim's
 * own status check (plugin/shim-status.c) reads that PATH from each running
 * libvirtd, virtstoraged and virtqemud and says which program it finds. */
#include <stdlib.h>

#include "ctl.h"
#include "shim-status.h"

static int run_libvirt(Ctl *ctl, char **operands, int n_operands)
{
    if (!g_str_equal(operands[0], "status")) {
        ctl_error("libvirt: unknown action '%s' (try: vdiskctl libvirt status)", operands[0]);
        return CTL_EXIT_FAILURE;
    }
    return shim_print_status(stdout);
}

const CtlCommand ctl_cmd_libvirt = {
    .name = "libvirt",
    .operands = "status",
    .summary = "tell whether libvirt runs its volume work through vdisk",
    .notes = "Exit status: 0 every running libvirt daemon uses the vdisk shim, 1 one does\n"
             "not, 3 no libvirt daemon runs.\n",
    .examples = "  vdiskctl libvirt status\n",
    .min_operands = 1,
    .max_operands = 1,
    .run = run_libvirt,
    .offline = TRUE,
};
