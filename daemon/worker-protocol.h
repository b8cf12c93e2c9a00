/* What vdiskd and vdisk-worker say to each other over their socketpair.
 *
 * Every message is a GVariant of type a{sv} in its serialised form, after a
 * 4-byte little-endian length; descriptors travel with a message's first
 * byte as SCM_RIGHTS. vdiskd sends one request; the worker answers with any
 * number of progress messages and requests to open a file, and one result.
 *
 *   request  "operation" s: "status" (confine, do nothing), "info" and
 *            "describe" (of source), "convert" (source into the new image
 *            target), "copy" (source over the existing image target),
 *            "resize" (target to "size" t, "shrink" b), "snapshot"
 *            (target: "snapshot-op" s create/revert/delete, "snapshot" s),
 *            "create" (the new image target, "size" t), "serve-nbd"
 *            (become nbdkit "nbdkit" s with vdisk's plugin "plugin" s,
 *            serving source, a pool volume with its key, on the
 *            caller's listening socket "listener" i, "readonly" b; the
 *            worker confines itself, opens source (asking vdiskd for the
 *            files it names, which nbdkit then gets as descriptors), and
 *            sends the result; then it runs nbdkit as its child until
 *            vdiskd closes the socket, or nbdkit ends and the worker with
 *            it);
 *            "source" and "target" a{sv}: an image, see below; for
 *            "convert", "backing" a{sv}: a pool volume (in the target's
 *            folder) the new target is a qcow2 overlay of, named by its
 *            "name", of which only what the top of the source holds is
 *            copied;
 *            "dir-path" s: the pool folder that names inside images are
 *            resolved beneath (by asking vdiskd; absent: the worker may
 *            open no file at all);
 *            limits "address-space" t, "cpu-seconds" t, "open-files" t
 *            (how many more files than its own few it may hold: the
 *            caller's files a split disk reads through); with test hooks
 *            "misbehave" s.
 *   an image "fd" i (index into the passed descriptors), "label" s (for
 *            messages), "format" s (absent: probe), "open-flags" u,
 *            "max-metadata" t (0: the formats' own bounds), "name" s (its
 *            name beneath the pool folder, for a pool volume),
 *            "open-options" a{ss} and "secrets" a{say} (its key); a new
 *            image also "create-options" a{ss}; a caller's OVA appliance
 *            "appliance-disk" i (the disk inside it that is the image);
 *            a socket the caller connected to an NBD server "nbd-export"
 *            s (the export the image is, read as raw; the worker speaks
 *            NBD on the socket and opens no other).
 *   open     worker to vdiskd: "open" s (a name beneath the pool folder),
 *            "directory" b; vdiskd answers "errno" i, 0 with the
 *            descriptor, opened read-only, a regular file (or a folder when
 *            asked), no symbolic link on the way.
 *   progress "progress" (tt): bytes done, bytes in all.
 *   result   "ok" b; on failure "error-domain" s, "error-code" i,
 *            "error-message" s; "info" a{sv} for info and describe;
 *            "probed" s for describe (what the source's first bytes look
 *            like); "confinement" a{sv} (what the worker ran under: "user"
 *            s, "uid" u, "no-new-privs" b, "landlock-abi" i, "seccomp" b).
 */
#pragma once

#include <glib.h>

#include "vdisk.h"

#define VDD_WIRE_MAX_MESSAGE (64u << 20)
#define VDD_WIRE_MAX_FDS 4
/* The descriptor the worker finds its end of the socketpair at. */
#define VDD_WIRE_WORKER_FD 3

/* Send msg (a{sv}; a floating reference is sunk) with fds. Blocks. */
gboolean vdd_wire_send(int sock, GVariant *msg, const int *fds, guint n_fds, GError **error);
/* Receive one message. The descriptors that came with it are stored in
 * fds (up to VDD_WIRE_MAX_FDS; the caller closes them) and counted in
 * *n_fds. Returns a new a{sv}, or NULL with G_IO_ERROR_CLOSED at the end of
 * the stream, or another error. Blocks. */
GVariant *vdd_wire_receive(int sock, int *fds, guint *n_fds, GError **error);

/* An error as result-message entries, and back (a new GError in the domain
 * named; NULL when the message says ok). */
void vdd_wire_add_error(GVariantBuilder *b, const GError *error);
GError *vdd_wire_get_error(GVariant *result);

/* Create options as a{ss}, and back. */
GVariant *vdd_wire_options_to_variant(VdOptions *opts);
VdOptions *vdd_wire_options_from_variant(GVariant *v);

/* The secrets the create options name (any *key-secret option) as a{say},
 * and back (NULL for none or an empty a{say}; vdiskd's "secrets" option
 * is read with it too). */
GVariant *vdd_wire_secrets_to_variant(VdSecrets *secrets, VdOptions *create);
VdSecrets *vdd_wire_secrets_from_variant(GVariant *v);
/* Overwrite with zeroes, in place, the bytes of every "secrets" of the
 * images of msg (a request), once they have been used: a server's
 * request lives as long as it serves. */
void vdd_wire_wipe_secrets(GVariant *msg);

/* The InspectFile answer: an image's header as a{sv} (format,
 * virtual-size, actual-size, cluster-size, encrypted, dirty, backing-file,
 * backing-format, snapshots, format-specific). */
GVariant *vdd_wire_info_to_variant(VdImageInfo *info);
/* a(ssttt): id, name, date, vm clock, vm state size per snapshot. */
GVariant *vdd_snapshots_to_variant(GPtrArray *snapshots);
