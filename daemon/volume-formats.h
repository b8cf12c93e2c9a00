/* The format of every volume in a pool, recorded by vdiskd and never
 * probed again.
 *
 * Probing a file's format from its content is how a guest that owns the
 * bytes of its raw disk makes root follow names it wrote there (QEMU's
 * format-probing hole): a qcow2 header written into a raw volume would make
 * the next Clone or Export read, or a CopyFrom write, whatever file that
 * header names. So the format is recorded when vdiskd makes a volume
 * (create, import, clone, overlay) and, for a file someone else put in the
 * pool, when vdiskd first sees it; from then on the volume is opened as
 * that format whatever its bytes say. A record belongs to one file (its
 * device and inode): a file replaced behind vdiskd's back is new to it.
 *
 * The records of a pool live in vdiskd's state directory ($STATE_DIRECTORY,
 * which systemd sets, else /var/lib/vdisk), one file per pool folder, that
 * only root writes. */
#pragma once

#include <glib.h>
#include <sys/stat.h>

#define VDD_DEFAULT_STATE_DIR "/var/lib/vdisk"

typedef struct VddFormatRecords VddFormatRecords;

/* The records of the pool at directory (canonical), read from the state
 * directory; empty when there are none yet or they cannot be read (which
 * is logged). */
VddFormatRecords *vdd_format_records_load(const char *directory);
void vdd_format_records_free(VddFormatRecords *records);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VddFormatRecords, vdd_format_records_free)

/* The format recorded for name, if the record is of the file st describes
 * (a new string); NULL when there is none. The records are safe to use
 * from any thread. */
char *vdd_format_records_lookup(VddFormatRecords *records, const char *name, const struct stat *st);
/* Record format for name, the file st describes, and save. FALSE (logged)
 * when the records cannot be saved: the volume then keeps its format only
 * while this vdiskd runs. */
gboolean vdd_format_records_set(VddFormatRecords *records, const char *name, const struct stat *st,
                                const char *format);
/* Forget name (deleted) and save. */
void vdd_format_records_forget(VddFormatRecords *records, const char *name);
