/* What every VM reader fills in (vm.h's VmMachine and its parts): freeing,
 * lookups, and the values all settings files share (UUIDs, locations). */
#include "vm-private.h"

void vm_medium_free(VmMedium *m)
{
    if (m == NULL)
        return;
    g_free(m->uuid);
    g_free(m->location);
    g_free(m->format);
    g_free(m->type);
    g_ptr_array_unref(m->children);
    g_free(m);
}

void vm_attachment_free(VmAttachment *a)
{
    g_free(a->medium_uuid);
    g_free(a);
}

void vm_controller_free(VmController *c)
{
    g_free(c->name);
    g_free(c->type);
    g_free(c->scsi_model);
    g_ptr_array_unref(c->attachments);
    g_free(c);
}

void vm_nic_free(VmNic *n)
{
    g_free(n->mac);
    g_free(n->model);
    g_free(n->attachment);
    g_free(n->network);
    g_free(n);
}

void vm_hardware_free(VmHardware *hw)
{
    if (hw == NULL)
        return;
    g_free(hw->chipset);
    g_ptr_array_unref(hw->controllers);
    g_ptr_array_unref(hw->nics);
    g_free(hw);
}

void vm_snapshot_free(VmSnapshot *s)
{
    if (s == NULL)
        return;
    g_free(s->uuid);
    g_free(s->name);
    vm_hardware_free(s->hardware);
    g_ptr_array_unref(s->children);
    g_free(s);
}

void vm_machine_free(VmMachine *m)
{
    if (m == NULL)
        return;
    g_free(m->settings_path);
    g_free(m->folder);
    g_free(m->product);
    g_free(m->appliance);
    g_free(m->settings_version);
    g_free(m->name);
    g_free(m->uuid);
    g_free(m->os_type);
    g_free(m->snapshot_folder);
    g_free(m->current_snapshot);
    g_free(m->state_file);
    vm_hardware_free(m->hardware);
    vm_snapshot_free(m->snapshots);
    if (m->media_by_uuid != NULL)
        g_hash_table_unref(m->media_by_uuid);
    if (m->media != NULL)
        g_ptr_array_unref(m->media);
    g_free(m);
}

/* "{0A1B...}" or "0a1b..." to "0a1b...", or NULL when it is no UUID. */
char *vm_uuid_normalize(const char *text)
{
    if (text == NULL)
        return NULL;
    gsize len = strlen(text);
    if (len == 38 && text[0] == '{' && text[37] == '}') {
        text++;
        len = 36;
    }
    if (len != 36)
        return NULL;
    for (gsize i = 0; i < len; i++) {
        gboolean dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? text[i] != '-' : !g_ascii_isxdigit(text[i]))
            return NULL;
    }
    return g_ascii_strdown(text, 36);
}

char *vm_path_from_settings(const char *folder, const char *location)
{
    g_autofree char *unix_location = g_strdup(location);
    /* A VM made on Windows names its files with backslashes. */
    if (strchr(location, '/') == NULL)
        g_strdelimit(unix_location, "\\", '/');
    if (g_path_is_absolute(unix_location))
        return g_canonicalize_filename(unix_location, NULL);
    return g_canonicalize_filename(unix_location, folder);
}

/* ----- lookups ----- */

VmMedium *vm_machine_lookup_medium(VmMachine *machine, const char *uuid)
{
    g_autofree char *key = vm_uuid_normalize(uuid);
    return key != NULL ? g_hash_table_lookup(machine->media_by_uuid, key) : NULL;
}

char *vm_machine_medium_path(VmMachine *machine, const VmMedium *medium)
{
    return vm_path_from_settings(machine->folder, medium->location);
}

const char *vm_bus_name(VmBus bus)
{
    switch (bus) {
    case VM_BUS_IDE:
        return "ide";
    case VM_BUS_SATA:
        return "sata";
    case VM_BUS_SCSI:
        return "scsi";
    case VM_BUS_NVME:
        return "nvme";
    case VM_BUS_USB:
        return "usb";
    case VM_BUS_FLOPPY:
        return "fdc";
    case VM_BUS_VIRTIO:
        return "virtio";
    }
    return "?";
}

gboolean vm_read_settings_file(const char *path, const char *what, char **text, gsize *len,
                               GError **error)
{
    g_autoptr(GError) local = NULL;
    if (g_file_get_contents(path, text, len, &local))
        return TRUE;
    g_set_error(error, VD_ERROR,
                g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT) ? VD_ERROR_NOT_FOUND
                                                                         : VD_ERROR_IO,
                "cannot read %s: %s", what, local->message);
    return FALSE;
}
