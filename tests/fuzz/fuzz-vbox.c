/* A fuzz target for the VM settings readers (vm/vbox-settings.c,
 * vm/vmx-settings.c, vm/ovf-settings.c): the input is a .vbox, a .vmx or
 * an .ovf. It is parsed by all three
 * and, when it reads, walked the
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

/* What every machine a reader returns must hold. */
static void check_machine(VmMachine *m)
{
    const VmHardware *hw = m->hardware;
    for (guint i = 0; i < hw->controllers->len; i++) {
        const VmController *c = hw->controllers->pdata[i];
        vm_bus_name(c->bus);
        for (guint k = 0; k < c->attachments->len; k++) {
            const VmAttachment *a = c->attachments->pdata[k];
            const VmMedium *medium =
                a->medium_uuid != NULL ? vm_machine_lookup_medium(m, a->medium_uuid) : NULL;
            if (a->type == VM_DEVICE_DISK) {
                /* The readers promised: every attached hard disk is
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
    vm_osinfo_from_vmware(m->os_type);
    if (m->uuid != NULL)
        vm_machine_current_descendant(m, m->uuid);
}

typedef VmMachine *(*ParseFunc)(const char *path, const char *text, gssize len, GError **error);

static VmMachine *parse_ovf(const char *path, const char *text, gssize len, GError **error)
{
    return vm_ovf_parse(path, text, len, NULL, error);
}

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
    /* The same bytes as a .vbox, a .vmx and an .ovf. */
    const ParseFunc parsers[] = { vm_vbox_parse, vm_vmx_parse, parse_ovf };
    for (gsize i = 0; i < G_N_ELEMENTS(parsers); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(VmMachine) m =
            parsers[i]("/fuzz/vm/fuzz.settings", (const char *)data, (gssize)size, &error);
        if (m != NULL)
            check_machine(m);
        else if (error == NULL || !g_str_has_prefix(error->message, "/fuzz/vm/fuzz.settings"))
            abort(); /* every refusal says what and where */
    }
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
