/* vdisk: helpers shared by the subcommands of the offline tool.
 *
 * Every subcommand is a CliCommand in its own cmd-*.c file. The helpers here
 * hold what all of them share: option parsing in qemu-img's style (getopt_long,
 * so "-fqcow2" and options after file names work), opening an image with the
 * probing warning, error printing, qemu-img's size formatting, and running a
 * long job in a worker thread so Ctrl-C can cancel it.
 */
#pragma once

#include <getopt.h>
#include <stdio.h>

#include "vdisk.h"

G_BEGIN_DECLS

/* Exit status for usage and ordinary errors, as qemu-img uses it. */
#define CLI_EXIT_FAILURE 1

typedef struct CliCommand CliCommand;

struct CliCommand {
    const char *name;
    const char *summary;  /* one line for "vdisk --help" */
    const char *usage;    /* synopsis lines after "vdisk " */
    const char *help;     /* option descriptions */
    const char *examples; /* shown after the options */
    int (*run)(const CliCommand *cmd, int argc, char **argv);
};

extern const CliCommand cli_cmd_info;
extern const CliCommand cli_cmd_create;
extern const CliCommand cli_cmd_convert;
extern const CliCommand cli_cmd_check;
extern const CliCommand cli_cmd_compare;
extern const CliCommand cli_cmd_snapshot;
extern const CliCommand cli_cmd_resize;
extern const CliCommand cli_cmd_rebase;
extern const CliCommand cli_cmd_commit;
extern const CliCommand cli_cmd_map;
extern const CliCommand cli_cmd_amend;
extern const CliCommand cli_cmd_import_vm;
extern const CliCommand cli_cmd_measure;
extern const CliCommand cli_cmd_dd;
extern const CliCommand cli_cmd_bitmap;
extern const CliCommand cli_cmd_serve;

/* Print the full help of one command to stream. */
void cli_print_command_help(const CliCommand *cmd, FILE *stream);

typedef enum {
    CLI_OUTPUT_HUMAN,
    CLI_OUTPUT_JSON,
} CliOutput;

/* Long-only option ids shared between commands; start above any char. */
enum {
    CLI_OPT_OUTPUT = 0x100,
    CLI_OPT_HELP,
    CLI_OPT_DISK,    /* --disk N: which disk of an OVA appliance */
    CLI_OPT_BACKING, /* --backing FILE: the first image's parent, named explicitly */
    /* Encrypted images (cli-secrets.c): --object secret,..., --image-opts,
     * --target-image-opts, --passphrase-file. */
    CLI_OPT_OBJECT,
    CLI_OPT_IMAGE_OPTS,
    CLI_OPT_TARGET_IMAGE_OPTS,
    CLI_OPT_PASSPHRASE_FILE,
    CLI_OPT_FIRST_PRIVATE, /* commands number their own long options from here */
};

/* Options several commands share. cli_parse_options fills them when the
 * letter (or --output) is part of the command's option string. */
typedef struct {
    const char *format; /* -f */
    gboolean quiet;     /* -q */
    CliOutput output;   /* --output */
} CliCommon;

/* Called for each option the common code does not handle. Returns FALSE and
 * sets error for a bad value. */
typedef gboolean (*CliOptionFunc)(int opt, const char *arg, gpointer data, GError **error);

/* Parse argv (argv[0] is the command name) with getopt_long. Handles -h and
 * --help (prints help, exits 0), -f, -q and --output into common, and passes
 * every other option to func. Returns the index of the first operand, or -1
 * after printing an error. */
int cli_parse_options(const CliCommand *cmd, int argc, char **argv, const char *shortopts,
                      const struct option *longopts, CliCommon *common, CliOptionFunc func,
                      gpointer data);

/* Check the operand count; prints a usage error and returns FALSE when it is
 * outside [min, max]. */
gboolean cli_check_operands(const CliCommand *cmd, int count, int min, int max);

/* "vdisk: <message>" on stderr. */
void cli_error(const char *format, ...) G_GNUC_PRINTF(1, 2);
/* Print error's message (and a hint when one helps) and return
 * CLI_EXIT_FAILURE, so a command can "return cli_fail(error);". */
int cli_fail(const GError *error);
/* qemu-img's checks of -l and -o values while it reads its options: a
 * snapshot parameter it can parse, an option list without an empty
 * element ("Invalid option list: ,"). */
gboolean cli_check_snapshot_param(const char *param, GError **error);
gboolean cli_check_option_list(const char *text, GError **error);
/* From now on cli_fail names path before a message that does not start
 * with it, as qemu-img create names the file in each of its errors. */
void cli_error_file(const char *path);
/* Print the library's GLib warnings and messages as "vdisk: warning: ..."
 * on stderr (main calls it first). */
void cli_install_log_handler(void);
/* A warning qemu-img would not give (a risk vdisk sees, a better way):
 * "vdisk: warning: ..." on stderr, nothing when vdisk runs as qemu-img. */
void cli_advise(const char *format, ...) G_GNUC_PRINTF(1, 2);
/* Informational note on stderr, unless quiet or run as qemu-img. */
void cli_note(gboolean quiet, const char *format, ...) G_GNUC_PRINTF(2, 3);

typedef enum {
    /* The command only reads: no warning when probing falls back to raw. */
    CLI_PROBE_QUIET,
    /* The command writes to the image: warn like qemu-img does. */
    CLI_PROBE_WARN,
    /* The command copies the image's content (convert's source): a file
     * probing fell back to raw for is refused unless it looks like a disk
     * (vd_raw_check_fd); -f raw takes it as it is. */
    CLI_PROBE_SOURCE,
} CliProbeWarning;

/* Which disk of an OVA appliance to open when --disk was not given (by
 * default an appliance of several disks is refused: the user must pick). */
void cli_appliance_disk_default(int index);

/* -U, --force-share: from now on cli_open_image reads images that another
 * process is writing (qemu-img's meaning); opening one for writing then
 * fails, in qemu-img's words. */
void cli_force_share(void);

/* Open path as format, or probe when format is NULL. When probing guessed
 * raw and the command writes, a warning goes to stderr. Returns a new
 * reference. */
VdImage *cli_open_image(const char *path, const char *format, VdOpenFlags flags,
                        CliProbeWarning warn, GError **error);

/* A source for convert and measure -l: path opened read-only as
 * cli_open_image opens it, at its internal snapshot snapshot
 * ("snapshot.name=NAME", "snapshot.id=ID" or a bare NAME or ID, as
 * qemu-img takes it), or as it is now when snapshot is NULL. */
VdImage *cli_open_at_snapshot(const char *path, const char *format, const char *snapshot,
                              CliProbeWarning warn, GError **error);

/* The format to use for an image given by name, probing when explicit is
 * NULL (with the same warning rules as cli_open_image). */
const char *cli_probe_format(const char *path, const char *explicit_format, CliProbeWarning warn,
                             GError **error);

/* The format of image_path's backing file when the user did not say (-F):
 * qemu-img refuses, we probe it and print a note. */
const char *cli_guess_backing_format(const char *image_path, const char *backing, gboolean quiet,
                                     GError **error);

/* Parse a size with vd_parse_size, naming what it is in the error. */
gboolean cli_parse_size(const char *what, const char *text, guint64 *out, GError **error);
/* Parse a positive integer option such as a thread count. */
gboolean cli_parse_uint(const char *what, const char *text, guint max, guint *out, GError **error);

/* -t CACHE, qemu's cache modes, as open flags for the image a command
 * writes: writeback and none 0 (the default: synced before success),
 * writethrough and directsync VD_OPEN_WRITETHROUGH, unsafe
 * VD_OPEN_NO_FLUSH. Anything else fails as qemu-img does ("Invalid cache
 * option: X"). */
gboolean cli_parse_cache_mode(const char *arg, VdOpenFlags *flags, GError **error);
/* The help of -t CACHE for the commands that write an image in place. */
#define CLI_HELP_CACHE                                                               \
    "  -t CACHE               writeback (the default) or none: what is written is\n" \
    "                         on stable storage before vdisk reports success;\n"     \
    "                         writethrough or directsync: after every write too;\n"  \
    "                         unsafe: never wait for the disk (a power cut may\n"    \
    "                         lose or damage the image)\n"
/* -T SRC_CACHE: the same names (qemu-img's message for a wrong one). An
 * image only read needs no choice: flags may be NULL. */
gboolean cli_parse_source_cache_mode(const char *arg, VdOpenFlags *flags, GError **error);

/* -o arguments. qemu-img lets -o repeat and joins the values with commas;
 * "help" (or "?") among them asks for the list of options. */
typedef struct {
    GPtrArray *texts; /* char*, borrowed from argv */
    gboolean help;
} CliCreateOptions;

void cli_create_options_add(CliCreateOptions *co, const char *text);
void cli_create_options_clear(CliCreateOptions *co);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(CliCreateOptions, cli_create_options_clear)
/* Parse every -o text into a new VdOptions (never NULL on success). */
VdOptions *cli_create_options_parse(const CliCreateOptions *co, GError **error);
/* TRUE when this build knows format; otherwise prints an error that lists
 * the formats it does know. */
gboolean cli_check_format(const char *format);
/* The format of a new image named target when the user named none with
 * option ("-O", "-f"): the format its extension names (a note on stderr
 * says so unless quiet), raw for a name without one (a device; noted when
 * note_raw); an extension that names no format is an error, never a
 * silent raw. Under qemu-img's name always raw, as qemu-img. */
const char *cli_target_format_from_name(const char *target, const char *option, gboolean quiet,
                                        gboolean note_raw, GError **error);
/* "Supported FMT options:" and one line per option, like qemu-img -o help. */
/* '-o help': the create options of format, as qemu-img lists them; with
 * the target's file name (may be NULL) those of the file itself too. */
int cli_print_create_options(const char *format, const char *filename);

/* qemu-img's snapshot table ("Snapshot list:", header, one row per
 * VdSnapshotInfo), shared by info and snapshot -l. */
void cli_print_snapshot_table(GPtrArray *snapshots);

/* qemu-img's human size: "64 MiB", "1.26 MiB", "196 KiB". Free with g_free. */
char *cli_format_size(guint64 bytes);

/* A long job that runs in a worker thread while the main thread waits for
 * SIGINT (Ctrl-C) and cancels the job's GCancellable. */
typedef gboolean (*CliJobFunc)(gpointer data, GCancellable *cancellable, GError **error);

/* Run func in a worker thread. While it runs, SIGINT and SIGTERM cancel
 * cancellable, and tick (if not NULL) is called on the main thread every
 * tick_ms. Returns func's result. */
gboolean cli_run_job(CliJobFunc func, gpointer data, GCancellable *cancellable, GSourceFunc tick,
                     gpointer tick_data, guint tick_ms, GError **error);

/* A job that reports progress: it hands progress_report and progress (a
 * Progress) to the engine as its VdProgressFunc and data. */
typedef gboolean (*CliProgressJobFunc)(gpointer data, gpointer progress, GCancellable *cancellable,
                                       GError **error);
/* cli_run_job with a progress display labelled label on stdout: a bar on a
 * terminal, qemu-img's percentage lines with -p (requested), none with -q. */
gboolean cli_run_with_progress(const char *label, gboolean requested, gboolean quiet,
                               CliProgressJobFunc func, gpointer data, GError **error);

/* ----- VirtualBox VMs' disks given alone (cli-vbox.c) ----- */

/* Open the differencing VDI at path with its parents found through its
 * VM's media registry or the folder above (where VirtualBox keeps the
 * base of a disk in Snapshots/), each named explicitly; open_opts (may be
 * NULL) are added. */
VdImage *cli_vbox_open_chain(const char *path, VdOptions *open_opts, VdOpenFlags flags,
                             GError **error);
/* For a differencing VDI opened without its chain (info) whose parent
 * was not found beside it: the same image with the parent found as
 * cli_vbox_open_chain finds it named (so info shows it), or NULL. */
VdImage *cli_vbox_name_parent(const char *path, VdImage *img, VdOpenFlags flags);
/* Warn on stderr when the VDI at path belongs to a VirtualBox VM whose
 * current state is another disk made on it. */
void cli_vbox_check_current(const char *path);

/* ----- encrypted images (cli-secrets.c) ----- */

/* Handle --object, --image-opts, --target-image-opts and --passphrase-file
 * for cli_parse_options. */
gboolean cli_secrets_option(int opt, const char *arg, GError **error);
/* The secrets of --object and --passphrase-file (never NULL). */
VdSecrets *cli_secrets(void);
gboolean cli_image_opts(void);
gboolean cli_target_image_opts(void);
/* With --image-opts: split "driver=FMT,file.filename=PATH,k=v..." into the
 * path, the format (or NULL) and the remaining open options. */
gboolean cli_split_image_opts(const char *text, char **path, char **format, VdOptions **opts,
                              GError **error);
/* The file a qemu image name means: "file:NAME" is NAME (with "./" in
 * front when NAME itself has a ':' before any '/', as qemu shows it);
 * other names as they are. Free with g_free. */
char *cli_local_path(const char *name);
/* A qemu "json:{...}" image name as --image-opts text ("driver=qcow2,
 * file.filename=PATH,..."): nested objects as dotted keys. Free with
 * g_free; NULL with error set when it is no JSON object. */
char *cli_json_filename_options(const char *name, GError **error);
/* The command only inspects images (info): encrypted ones need no key. */
void cli_set_inspect_only(void);
/* Open an image as cli_open_image does, with the secrets and options of
 * the command line; an encrypted image with no key given gets a
 * passphrase prompt on a terminal. */
VdImage *cli_open_image_with_keys(const char *path, const char *format, VdOptions *open_opts,
                                  VdOpenFlags flags, GError **error);
/* Before creating an encrypted image whose options name no secret: ask
 * for a new passphrase on a terminal (twice). A no-op otherwise. A new
 * image of legacy AES gets a warning that points to LUKS (not under the
 * name qemu-img). */
gboolean cli_ensure_new_passphrase(const char *format, VdOptions *create_opts, GError **error);

G_END_DECLS
