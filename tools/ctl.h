/* vdiskctl: the command-line client of vdiskd.
 *
 * vdiskctl.c parses the command line and dispatches; the commands live in
 * ctl-pool.c (pools and listings), ctl-volume.c (one volume), ctl-file.c
 * (the caller's own files) and ctl-job.c (jobs); ctl-bus.c holds the D-Bus
 * plumbing and ctl-output.c the tables and JSON they print.
 *
 * Everything talks to vdiskd on the system bus (DBUS_SYSTEM_BUS_ADDRESS is
 * honoured by GIO); nothing here touches an image itself, so what a user
 * may do is what polkit lets vdiskd do for them.
 */
#pragma once

#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <stdio.h>

#include "json-writer.h"
#include "vdd-dbus.h"
#include "vdisk-names.h"

G_BEGIN_DECLS

/* Exit status of every failure, as vdisk and qemu-img use it. */
#define CTL_EXIT_FAILURE 1

/* Options a command may accept besides -h, -q and --no-ask-password,
 * which every command takes. */
typedef enum {
    CTL_OPT_FORMAT = 1 << 0,     /* -f FMT */
    CTL_OPT_OUT_FORMAT = 1 << 1, /* -O FMT */
    CTL_OPT_CREATE = 1 << 2,     /* -o KEY=VAL,... */
    CTL_OPT_PROGRESS = 1 << 3,   /* -p: progress even when not a terminal */
    CTL_OPT_SHRINK = 1 << 4,     /* --shrink */
    CTL_OPT_SOURCE = 1 << 5,     /* --source-format FMT */
    CTL_OPT_JSON = 1 << 6,       /* --json */
    CTL_OPT_OBJECT = 1 << 7,     /* --object secret,... */
    CTL_OPT_KEY = 1 << 8,        /* --key-secret ID: opens the named volume */
    CTL_OPT_TARGET_KEY = 1 << 9, /* --target-key-secret ID (copy) */
    CTL_OPT_DETACH = 1 << 10,    /* --detach: start the job, do not wait */
    CTL_OPT_NOTIFY = 1 << 12,    /* --notify: a desktop notification (notify.h) */
    /* import-vm: --dry-run, --virtio, --keep-snapshots, --domain-type TYPE,
     * --start, --connect URI */
    CTL_OPT_IMPORT_VM = 1 << 11,
    CTL_OPT_NBD_SERVE = 1 << 13, /* export-nbd: --socket PATH, --readonly */
} CtlOptionMask;

/* What the command line said, and the bus connection. */
typedef struct {
    GDBusConnection *bus;
    /* ALLOW_INTERACTIVE_AUTHORIZATION when polkit may ask for a password. */
    GDBusCallFlags call_flags;
    gboolean json;
    gboolean quiet;
    gboolean progress;
    gboolean shrink;
    gboolean no_ask_password;
    gboolean detach;
    const char *format;        /* -f, or -O where the command has both */
    const char *source_format; /* -f of convert, --source-format of import */
    GPtrArray *create_options; /* -o texts, borrowed from argv */
    GPtrArray *objects;        /* --object texts, borrowed from argv */
    /* The secret ids that open the volume a method is called on and, for
     * CopyFrom, its source (--key-secret, --target-key-secret). */
    const char *volume_key_secret;
    const char *source_key_secret;
    /* import-vm's */
    gboolean dry_run;
    gboolean virtio;
    gboolean keep_snapshots;
    gboolean start;
    const char *domain_type; /* NULL: kvm */
    const char *connect_uri; /* NULL: virsh's default */
    /* export-nbd's */
    const char *socket_path;
    gboolean readonly;
} Ctl;

/* Help lines shared by the commands that write an image. */
#define CTL_HELP_FORMAT                                                         \
    "  -f FMT                 format of the new image; by default the name's\n" \
    "                         extension when it is a format (.img is raw),\n"
#define CTL_HELP_CREATE_OPTIONS                                                       \
    "  -o KEY=VAL[,...]       create options as qemu-img takes them: cluster_size,\n" \
    "                         compat, lazy_refcounts, preallocation, subformat,\n"    \
    "                         compression_type, backing_file, backing_fmt, ...\n"
#define CTL_HELP_PROGRESS \
    "  -p, --progress         show progress even when stderr is not a terminal\n"
#define CTL_HELP_DETACH                                                        \
    "  --detach               print the job's path and leave it running; by\n" \
    "                         default vdiskd cancels a job when vdiskctl exits\n"
#define CTL_HELP_NOTIFY                                                        \
    "  --notify               show the progress and the result as a desktop\n" \
    "                         notification (a file manager's Open With)\n"
#define CTL_HELP_OBJECT                                                          \
    "  --object secret,id=ID,file=FILE\n"                                        \
    "                         a passphrase, read by vdiskctl with your rights\n" \
    "                         (or data=TEXT; format=base64 for encoded ones)\n"
#define CTL_HELP_KEY                                                         \
    "  --key-secret ID        the --object secret that opens an encrypted\n" \
    "                         POOL/VOLUME\n"
#define CTL_HELP_NEW_KEY                               \
    "  -o encrypt.format=luks,encrypt.key-secret=ID\n" \
    "                         encrypt the new image with the --object secret ID\n"

typedef struct CtlCommand CtlCommand;

struct CtlCommand {
    const char *name;
    const char *operands; /* synopsis after "vdiskctl NAME [OPTIONS] " */
    const char *summary;  /* one line for "vdiskctl --help" */
    CtlOptionMask options;
    const char *help;     /* lines for the command's own options, or NULL */
    const char *notes;    /* text after the options, or NULL */
    const char *examples; /* lines, or NULL */
    int min_operands;
    int max_operands;
    int (*run)(Ctl *ctl, char **operands, int n_operands);
    gboolean offline; /* works without the system bus */
};

/* The commands, one table per file that implements them. */
extern const CtlCommand ctl_cmd_pools, ctl_cmd_volumes, ctl_cmd_add_pool, ctl_cmd_refresh;
extern const CtlCommand ctl_cmd_info, ctl_cmd_create, ctl_cmd_import, ctl_cmd_export, ctl_cmd_clone,
    ctl_cmd_copy, ctl_cmd_resize, ctl_cmd_snapshot, ctl_cmd_overlay, ctl_cmd_delete;
extern const CtlCommand ctl_cmd_inspect, ctl_cmd_convert;
extern const CtlCommand ctl_cmd_jobs, ctl_cmd_cancel;
extern const CtlCommand ctl_cmd_libvirt;
extern const CtlCommand ctl_cmd_status;
extern const CtlCommand ctl_cmd_import_vm;
extern const CtlCommand ctl_cmd_export_nbd;

/* ----- messages (ctl-output.c) ----- */

/* "vdiskctl: <message>" on stderr. */
void ctl_error(const char *format, ...) G_GNUC_PRINTF(1, 2);
/* Print error like ctl_error and return CTL_EXIT_FAILURE, so a command can
 * "return ctl_fail(error);". */
int ctl_fail(const GError *error);
/* A line for the user on stdout, unless -q or --json. */
void ctl_say(const Ctl *ctl, const char *format, ...) G_GNUC_PRINTF(2, 3);

/* ----- the bus (ctl-bus.c) ----- */

/* Connect to the system bus and set ctl->bus and ctl->call_flags; on a
 * terminal, start polkit's text agent so a password can be asked for. */
gboolean ctl_connect(Ctl *ctl, GError **error);
/* Stop the agent and drop the connection. */
void ctl_disconnect(Ctl *ctl);

/* The proxies of vdiskd's objects that gdbus-codegen makes from
 * dbus/org.vdisk.VDisk1.xml (vdd-dbus.h), for calling their methods: the
 * object at path, with no properties loaded and no signals followed. A
 * new reference, or NULL with error. */
VddDbusManager *ctl_manager_proxy(Ctl *ctl, GError **error);
VddDbusPool *ctl_pool_proxy(Ctl *ctl, const char *path, GError **error);
VddDbusVolume *ctl_volume_proxy(Ctl *ctl, const char *path, GError **error);
VddDbusJob *ctl_job_proxy(Ctl *ctl, const char *path, GError **error);
/* The timeout to pass to a vdd_dbus_*_call_*_sync function with
 * ctl->call_flags: without interaction a call is answered at once (jobs
 * return before they work); with it, polkit waits as long as the user
 * takes to type a password. */
gint ctl_timeout(const Ctl *ctl);
/* An empty options argument (a{sv}, floating). */
GVariant *ctl_no_options(void);
/* What a generated call returned: when FALSE, the error is made readable
 * in place (ctl_error_from_dbus). Returns ok. */
gboolean ctl_called(gboolean ok, GError **error);

/* vdiskd names the files it is passed by their roles ("source", "target",
 * "image"), as it knows no names for them: in error, the one of role
 * becomes path, the name the user gave it. */
void ctl_error_name_file(GError *error, const char *role, const char *path);

/* The readable form of an error from vdiskd or the bus, in place. */
void ctl_error_from_dbus(GError *error);

/* One exported object: its path and the a{sv} properties of one interface. */
typedef struct {
    char *path;
    GVariant *props;
} CtlObject;

void ctl_object_free(CtlObject *obj);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CtlObject, ctl_object_free)

/* Everything vdiskd exports (ObjectManager.GetManagedObjects,
 * a{oa{sa{sv}}}). Returns a new reference. */
GVariant *ctl_get_objects(Ctl *ctl, GError **error);
/* The objects with iface, sorted by Name (or path) the way a file manager
 * sorts; an array of CtlObject. */
GPtrArray *ctl_objects_with(GVariant *objects, const char *iface);
/* The object whose string property key (or "path") is value; borrowed. */
CtlObject *ctl_object_lookup(GPtrArray *objects, const char *key, const char *value);
/* "POOL/NAME" of the volume at volume_path (the path when unknown). */
char *ctl_volume_label(GVariant *objects, const char *volume_path);

/* The pool called name. Returns a new CtlObject, or NULL with NotFound. */
CtlObject *ctl_find_pool(Ctl *ctl, const char *name, GError **error);

/* A volume as the user names it: "POOL/VOLUME". */
typedef struct {
    char *pool_name;
    char *name;
    CtlObject *pool;   /* path and Pool properties */
    CtlObject *volume; /* path and Volume properties */
} CtlVolume;

void ctl_volume_free(CtlVolume *vol);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CtlVolume, ctl_volume_free)

/* Split "POOL/VOLUME" into its two names without asking the daemon. */
gboolean ctl_split_volume_arg(const char *arg, char **pool, char **name, GError **error);
/* Find the volume named by arg ("POOL/VOLUME"). */
CtlVolume *ctl_find_volume(Ctl *ctl, const char *arg, GError **error);

/* The name for a new volume in the pool of vol: arg may be a plain name or
 * "POOL/NAME" with vol's pool. Returns a new string. */
char *ctl_new_name_in_pool(const CtlVolume *vol, const char *arg, GError **error);

/* The format for a new image called name: -f when given, else the name's
 * extension when vdiskd writes that format ("img" means raw), else (no
 * extension) fallback. An extension that names no format is an error, not
 * a guess. Returns a new string, or NULL with error. */
char *ctl_pick_format(Ctl *ctl, const char *name, const char *fallback, GError **error);
/* The Manager's proxy with its properties loaded (vdd_dbus_manager_get_*),
 * or NULL with error when vdiskd does not answer. A new reference. */
VddDbusManager *ctl_manager_properties(Ctl *ctl, GError **error);

/* The a{sv} options of a call: -o texts (qemu-img's key=value,... with ",,"
 * for a comma) as vdiskd's create options, source-format, shrink, the
 * --object secrets and the key ids, each when the command has it. Returns a
 * new a{sv}, or NULL with error for a malformed -o or --object. */
GVariant *ctl_call_options(const Ctl *ctl, GError **error);

/* Open path with flags as the user running vdiskctl and add the fd to fds,
 * so vdiskd never opens a user's path with root's rights. Returns the
 * index to pass as the 'h' argument, or -1 with error. */
gint ctl_fds_append_path(GUnixFDList *fds, const char *path, int flags, GError **error);

/* ----- jobs (ctl-job.c) ----- */

typedef struct CtlJobWatch CtlJobWatch;

/* Start listening to every job's signals. Call before the method that
 * returns the job, so a job that ends at once is not missed. */
CtlJobWatch *ctl_job_watch_new(Ctl *ctl);
void ctl_job_watch_free(CtlJobWatch *watch);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CtlJobWatch, ctl_job_watch_free)

/* Wait for job to end while showing a progress bar labelled label (on a
 * terminal, or with -p). Ctrl-C cancels the job and keeps waiting for its
 * end. Returns TRUE when it succeeded; otherwise error holds its message. */
gboolean ctl_job_watch_wait(CtlJobWatch *watch, const char *job, const char *label, GError **error);

/* options (not consumed) as a new floating a{sv}, with detach = true
 * added under --detach: the options of a method that starts a job. */
GVariant *ctl_job_options(const Ctl *ctl, GVariant *options);

/* Follow the job that a call made after ctl_job_watch_new started: called
 * is what the call returned (FALSE: error holds why, made readable here),
 * job the path it gave. Under --detach, print that path and exit;
 * otherwise wait as ctl_job_watch_wait does. Returns TRUE when the job
 * succeeded. */
gboolean ctl_job_follow(CtlJobWatch *watch, gboolean called, const char *job, const char *label,
                        GError **error);

/* ----- the files an image reads through (ctl-chain.c) ----- */

/* The chain of the image at path (format NULL: probed), read here as the
 * user: the file itself first, then its parents (VmChainLink, vm.h), as
 * the engine finds them or, for a VirtualBox snapshot's differencing VDI,
 * through its VM (vm_chain_for_vdi). Empty when the file does not open
 * here (vdiskd says why); NULL with error when a VDI's parent is found
 * nowhere, or a vmdk does not open (its extents or parent, named by
 * path). Returns a new array. */
GPtrArray *ctl_chain_of_file(const char *path, const char *format, GError **error);
/* ImportVolume's "chain" option for chain (of VmChainLink, its first the
 * source): each parent opened here, as the user, added to fds and named
 * relative to the source's folder. NULL without error when there are no
 * parents. Returns a floating a(sh). */
GVariant *ctl_chain_option(GPtrArray *chain, GUnixFDList *fds, GError **error);
/* ImportVolume's "related-files" option for chain: the files each link
 * names besides its parent (a split vmdk's extents), found by the engine
 * and opened here, each with the name its link gives it, sent over a
 * socket whose other end is added to fds. NULL without error when there
 * are none; with error when one is missing. Returns a floating h. */
GVariant *ctl_related_files_option(GPtrArray *chain, GUnixFDList *fds, GError **error);
/* ImportVolume's "appliance-disk" for the OVA at path: the index of its
 * disk member (NULL: its only disk; an appliance of several is refused,
 * naming them and vdiskctl import-vm). -1 with error. */
gint ctl_appliance_disk(const char *path, const char *member, GError **error);
/* Warn on stderr when the VDI at path (chain's first link) is a
 * VirtualBox VM's disk under a snapshot, not what the VM uses now. */
void ctl_chain_warn_not_current(const char *path, GPtrArray *chain);

/* ----- NBD servers (ctl-nbd.c) ----- */

/* Whether arg is an NBD URI (nbd://, nbd+tcp://, nbd+unix://, and the TLS
 * and vsock forms, which ctl_nbd_connect refuses), not a file name. */
gboolean ctl_is_nbd_uri(const char *arg);
/* Connect to the NBD server uri names, here, as the user: nbd://HOST[:PORT]/
 * EXPORT (port 10809 by default) or nbd+unix:///EXPORT?socket=PATH. Only
 * the socket is connected; the NBD handshake is left to whoever reads the
 * export. Returns the socket and sets *export_name (a new string, "" for
 * the default export), or -1 with an error naming uri. */
int ctl_nbd_connect(const char *uri, char **export_name, GError **error);
/* vdiskctl import URI POOL/VOLUME: the export at uri copied into a new
 * volume by vdiskd, which reads it through the socket connected here
 * (ImportVolume's nbd-export). Returns the exit status. */
int ctl_import_nbd(Ctl *ctl, const char *uri, const char *target);

/* ----- the caller's output files (ctl-file.c) ----- */

/* An output file of export and convert. A new file is written under a
 * hidden name beside it (".NAME.partial-PID") and renamed into place only
 * once vdiskd reported it complete and on stable storage, so an
 * interruption (vdiskd or vdiskctl killed, a power cut) never leaves a
 * half-written image under the name asked for. An existing file is written
 * in place: vdiskd locks it before it truncates it, and refuses one that a
 * VM is using, as qemu-img does. */
typedef struct {
    char *path;    /* as asked for */
    char *partial; /* the hidden file written, or NULL when in place */
} CtlOutput;

/* Open the file vdiskd writes the image into (read and write) and add it
 * to fds. Returns the fd's index or -1. */
gint ctl_output_open(GUnixFDList *fds, const char *path, CtlOutput *out, GError **error);
/* After a failed job: remove the hidden file, so nothing half-written is
 * left behind. */
void ctl_output_discard(CtlOutput *out);
/* After a successful job (vdiskd synced the image): give a new file its
 * name and sync its folder, so it survives a power cut under that name. */
gboolean ctl_output_finish(CtlOutput *out, GError **error);
void ctl_output_clear(CtlOutput *out);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(CtlOutput, ctl_output_clear)

/* ----- output (ctl-output.c) ----- */

/* Aligned columns: add a header, then rows of the same width. */
typedef struct CtlTable CtlTable;

CtlTable *ctl_table_new(const char *first_header, ...) G_GNUC_NULL_TERMINATED;
void ctl_table_add_row(CtlTable *table, const char *first_cell, ...) G_GNUC_NULL_TERMINATED;
void ctl_table_print(CtlTable *table, FILE *stream);
void ctl_table_free(CtlTable *table);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CtlTable, ctl_table_free)

/* "64 MiB" (qemu-img's style), a new string. */
char *ctl_format_size(guint64 bytes);

/* --json speaks of what the user names (POOL/VOLUME, a job's number),
 * with named fields in lower case and sizes in bytes, as qemu-img's JSON
 * does: never D-Bus tuples or object paths. */

/* Print what w holds and a newline; frees w. */
void ctl_json_print(JsonWriter *w);
/* A volume's properties (Volume's a{sv}) as an object: volume ("POOL/NAME"),
 * pool, name, file, format, virtual-size, actual-size, backing-file,
 * backing-format, encrypted, busy, error and snapshots, each when known. */
void ctl_json_volume(JsonWriter *w, const char *pool_name, GVariant *props);
/* A Snapshots property (a(ssttt)) as an array of objects: id, name, date
 * (ISO 8601), date-sec, vm-state-size, vm-clock-sec, vm-clock-nsec. */
void ctl_json_snapshots(JsonWriter *w, GVariant *snapshots);

/* "label:       value" lines of info and inspect; sizes also in bytes. */
void ctl_print_field(const char *label, const char *value);
void ctl_print_size_field(const char *label, guint64 bytes);

/* The snapshot table of a volume's Snapshots property, a(ssttt). */
void ctl_print_snapshots(GVariant *snapshots);

/* A string property of props, "" when absent. */
const char *ctl_prop_string(GVariant *props, const char *key);
guint64 ctl_prop_uint64(GVariant *props, const char *key);

G_END_DECLS
