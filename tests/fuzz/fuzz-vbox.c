/* A fuzz target for the VirtualBox settings reader (vm/vbox-settings.c):
 * the input is a .vbox file. It is parsed and, when it reads, walked the
 * way the plan walks it (every controller, attachment and medium, the
 * snapshot tree, the OS type); whatever the bytes say, the reader must
 * answer with an error or a machine, never crash, hang or recurse without
 * bound. No file the input names is opened: resolving chains opens
 * images, which fuzz-image covers.
 *
 * Built two ways, as fuzz-image is: a libFuzzer target (meson option
 * `fuzzing`) and a plain program that reads each file named on its
 * command line once, for the fuzz suite's regression run (vbox.sh).
 */
#include "vm.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

static guint walk_snapshots(VmMachine *m, const VmSnapshot *s, guint depth)
{
    if (s == NULL)
        return 0;
    guint n = 1;
    for (guint i = 0; i < s->hardware->controllers->len; i++) {
        const VmController *c = s->hardware->controllers->pdata[i];
        for (guint k = 0; k < c->attachments->len; k++) {
            const VmAttachment *a = c->attachments->pdata[k];
            if (a->medium_uuid != NULL)
                vm_machine_lookup_medium(m, a->medium_uuid);
        }
    }
    for (guint i = 0; i < s->children->len; i++)
        n += walk_snapshots(m, s->children->pdata[i], depth + 1);
    return n;
}

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VmMachine) m =
        vm_vbox_parse("/fuzz/vm/fuzz.vbox", (const char *)data, (gssize)size, &error);
    if (m == NULL) {
        /* Every refusal says what and where. */
        if (error == NULL || !g_str_has_prefix(error->message, "/fuzz/vm/fuzz.vbox"))
            abort();
        return 0;
    }
    const VmHardware *hw = m->hardware;
    for (guint i = 0; i < hw->controllers->len; i++) {
        const VmController *c = hw->controllers->pdata[i];
        vm_bus_name(c->bus);
        for (guint k = 0; k < c->attachments->len; k++) {
            const VmAttachment *a = c->attachments->pdata[k];
            const VmMedium *medium =
                a->medium_uuid != NULL ? vm_machine_lookup_medium(m, a->medium_uuid) : NULL;
            if (a->type == VM_DEVICE_DISK) {
                /* The reader promised: every attached hard disk is
                 * registered, and its parents lead to a base. */
                if (medium == NULL)
                    abort();
                guint depth = 0;
                for (; medium != NULL; medium = medium->parent)
                    if (++depth > 10000)
                        abort();
            }
            if (medium != NULL)
                g_free(vm_machine_medium_path(m, medium));
        }
    }
    walk_snapshots(m, m->snapshots, 0);
    vm_osinfo_from_vbox(m->os_type);
    vm_machine_current_descendant(m, m->uuid);
    return 0;
}

#ifndef VDISK_LIBFUZZER
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        g_autofree char *text = NULL;
        gsize len = 0;
        if (!g_file_get_contents(argv[i], &text, &len, NULL)) {
            g_printerr("cannot read %s\n", argv[i]);
            return 1;
        }
        LLVMFuzzerTestOneInput((const guint8 *)text, len);
    }
    return 0;
}
#endif
