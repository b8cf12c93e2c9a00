/* Fault injection for the crash-consistency tests: a hook around every
 * call that changes a host file (write, zeroing, punching, preallocating,
 * truncating) and every flush. Only test builds compiled with
 * -DVD_FAULT_INJECTION contain it; everywhere else the hooks are empty
 * inline functions and cost nothing.
 *
 * The environment chooses what happens (see fault.c):
 *   VDISK_FAULT=count               count the points; VDISK_FAULT_REPORT
 *                                   names a file that receives the number
 *   VDISK_FAULT=crash:N[:tear]      stop the process dead at point N (1 is
 *                                   the first); with tear, a write at N
 *                                   lands half-way first
 *   VDISK_FAULT=powercut:N:SEED     at point N, lose a random part of what
 *                                   was written since each file's last
 *                                   flush, as a volatile disk cache would,
 *                                   then stop dead
 * A process stopped by the fault layer exits with VD_FAULT_EXIT_CODE. */
#pragma once

#include <glib.h>

#define VD_FAULT_EXIT_CODE 99

typedef enum {
    VD_FAULT_WRITE,    /* bytes from buf at offset */
    VD_FAULT_ZERO,     /* [offset, offset + len) reads as zeroes after */
    VD_FAULT_ALLOCATE, /* reserve [offset, offset + len); may extend the file */
    VD_FAULT_TRUNCATE, /* the file becomes offset bytes long */
} VdFaultOp;

#ifdef VD_FAULT_INJECTION

/* Called before a change to fd. It may stop the process here (doing part
 * of a torn write itself first). It takes the fault lock, which
 * vd_fault_end() drops once the change is made, so changes from the copy
 * threads are recorded in the order they happen. */
void vd_fault_begin(int fd, VdFaultOp op, guint64 offset, guint64 len, const void *buf);
void vd_fault_end(void);
/* Around a flush of fd: the crash point is before it; once it succeeded
 * the file's unflushed changes are stable and forgotten. */
void vd_fault_sync_begin(int fd);
void vd_fault_sync_end(int fd, gboolean ok);

#else

static inline void vd_fault_begin(int fd, VdFaultOp op, guint64 offset, guint64 len,
                                  const void *buf)
{
}
static inline void vd_fault_end(void) {}
static inline void vd_fault_sync_begin(int fd) {}
static inline void vd_fault_sync_end(int fd, gboolean ok) {}

#endif
