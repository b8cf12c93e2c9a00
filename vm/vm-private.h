/* What the VM readers (vbox-settings.c, vmx-settings.c) share and the
 * library's users need not see: the parts' destructors and the values all
 * settings files have (vm-machine.c). */
#pragma once

#include "vm.h"

G_BEGIN_DECLS

void vm_medium_free(VmMedium *m);
void vm_attachment_free(VmAttachment *a);
void vm_controller_free(VmController *c);
void vm_nic_free(VmNic *n);
void vm_hardware_free(VmHardware *hw);
void vm_snapshot_free(VmSnapshot *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmHardware, vm_hardware_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmSnapshot, vm_snapshot_free)

/* "{0A1B...}" or "0a1b..." to "0a1b...", or NULL when it is no UUID. */
char *vm_uuid_normalize(const char *text);
/* A location from a settings file in folder, made absolute (Windows
 * separators turned). Returns a new string. */
char *vm_path_from_settings(const char *folder, const char *location);
/* Read a settings file whole; what names it in the error ("the VM's
 * settings"): VD_ERROR_NOT_FOUND when it is missing, VD_ERROR_IO else. */
gboolean vm_read_settings_file(const char *path, const char *what, char **text, gsize *len,
                               GError **error);

G_END_DECLS
