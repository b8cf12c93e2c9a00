/* vdiskctl: the command-line client of vdiskd.
 *
 * "vdiskctl COMMAND [OPTIONS] ARGUMENTS" in the spirit of udisksctl and
 * fwupdmgr: the pools, volumes and jobs of the vdisk daemon, with the work
 * done (and authorised by polkit) in vdiskd. This file parses the command
 * line and dispatches; the commands live in ctl-*.c (see ctl.h).
 */
#include <getopt.h>
#include <locale.h>
#include <stdlib.h>

#include "config.h"
#include "ctl.h"
#include "notify.h"

static const CtlCommand *const commands[] = {
    &ctl_cmd_pools,     &ctl_cmd_volumes,    &ctl_cmd_info,    &ctl_cmd_create,  &ctl_cmd_import,
    &ctl_cmd_export,    &ctl_cmd_clone,      &ctl_cmd_copy,    &ctl_cmd_resize,  &ctl_cmd_snapshot,
    &ctl_cmd_overlay,   &ctl_cmd_delete,     &ctl_cmd_jobs,    &ctl_cmd_cancel,  &ctl_cmd_inspect,
    &ctl_cmd_convert,   &ctl_cmd_add_pool,   &ctl_cmd_refresh, &ctl_cmd_libvirt, &ctl_cmd_status,
    &ctl_cmd_import_vm, &ctl_cmd_export_nbd,
};

/* Long-only options; above every char. */
enum {
    OPT_JSON = 0x100,
    OPT_NO_ASK_PASSWORD,
    OPT_SHRINK,
    OPT_SOURCE_FORMAT,
    OPT_OBJECT,
    OPT_KEY_SECRET,
    OPT_TARGET_KEY_SECRET,
    OPT_DETACH,
    OPT_NOTIFY,
    OPT_DRY_RUN,
    OPT_VIRTIO,
    OPT_KEEP_SNAPSHOTS,
    OPT_DOMAIN_TYPE,
    OPT_START,
    OPT_CONNECT,
    OPT_SOCKET,
    OPT_READONLY,
};

/* Every option, and which commands take it (0: all of them). */
static const struct {
    struct option option;
    CtlOptionMask needs;
    const char *help; /* for the options every command takes; else NULL */
} option_specs[] = {
    { { "quiet", no_argument, NULL, 'q' }, 0, "  -q, --quiet            print only errors\n" },
    { { "no-ask-password", no_argument, NULL, OPT_NO_ASK_PASSWORD },
      0,
      "  --no-ask-password      never ask for a password; fail instead\n" },
    { { "json", no_argument, NULL, OPT_JSON },
      CTL_OPT_JSON,
      "  --json                 print JSON for scripts\n" },
    { { "help", no_argument, NULL, 'h' }, 0, "  -h, --help             show this help\n" },
    { { "format", required_argument, NULL, 'f' }, CTL_OPT_FORMAT, NULL },
    { { "output-format", required_argument, NULL, 'O' }, CTL_OPT_OUT_FORMAT, NULL },
    { { "options", required_argument, NULL, 'o' }, CTL_OPT_CREATE, NULL },
    { { "progress", no_argument, NULL, 'p' }, CTL_OPT_PROGRESS, NULL },
    { { "shrink", no_argument, NULL, OPT_SHRINK }, CTL_OPT_SHRINK, NULL },
    { { "source-format", required_argument, NULL, OPT_SOURCE_FORMAT }, CTL_OPT_SOURCE, NULL },
    { { "object", required_argument, NULL, OPT_OBJECT }, CTL_OPT_OBJECT, NULL },
    { { "key-secret", required_argument, NULL, OPT_KEY_SECRET }, CTL_OPT_KEY, NULL },
    { { "target-key-secret", required_argument, NULL, OPT_TARGET_KEY_SECRET },
      CTL_OPT_TARGET_KEY,
      NULL },
    { { "detach", no_argument, NULL, OPT_DETACH }, CTL_OPT_DETACH, NULL },
    { { "notify", no_argument, NULL, OPT_NOTIFY }, CTL_OPT_NOTIFY, NULL },
    { { "dry-run", no_argument, NULL, OPT_DRY_RUN }, CTL_OPT_IMPORT_VM, NULL },
    { { "virtio", no_argument, NULL, OPT_VIRTIO }, CTL_OPT_IMPORT_VM, NULL },
    { { "keep-snapshots", no_argument, NULL, OPT_KEEP_SNAPSHOTS }, CTL_OPT_IMPORT_VM, NULL },
    { { "domain-type", required_argument, NULL, OPT_DOMAIN_TYPE }, CTL_OPT_IMPORT_VM, NULL },
    { { "start", no_argument, NULL, OPT_START }, CTL_OPT_IMPORT_VM, NULL },
    { { "connect", required_argument, NULL, OPT_CONNECT }, CTL_OPT_IMPORT_VM, NULL },
    { { "socket", required_argument, NULL, OPT_SOCKET }, CTL_OPT_NBD_SERVE, NULL },
    { { "readonly", no_argument, NULL, OPT_READONLY }, CTL_OPT_NBD_SERVE, NULL },
};

static gboolean takes(const CtlCommand *cmd, CtlOptionMask needs)
{
    return needs == 0 || (cmd->options & needs) == needs;
}

static const CtlCommand *find_command(const char *name)
{
    for (gsize i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (g_str_equal(commands[i]->name, name))
            return commands[i];
    }
    return NULL;
}

/* ----- help ----- */

static void print_usage(const CtlCommand *cmd, FILE *stream)
{
    fprintf(stream, "Usage:\n  vdiskctl %s [OPTIONS]%s%s\n", cmd->name, *cmd->operands ? " " : "",
            cmd->operands);
}

static void print_command_help(const CtlCommand *cmd, FILE *stream)
{
    fprintf(stream, "vdiskctl %s: %s\n\n", cmd->name, cmd->summary);
    print_usage(cmd, stream);
    fprintf(stream, "\nOptions:\n%s", cmd->help != NULL ? cmd->help : "");
    for (gsize i = 0; i < G_N_ELEMENTS(option_specs); i++) {
        if (option_specs[i].help != NULL && takes(cmd, option_specs[i].needs))
            fputs(option_specs[i].help, stream);
    }
    if (cmd->notes != NULL)
        fprintf(stream, "\n%s", cmd->notes);
    if (cmd->examples != NULL)
        fprintf(stream, "\nExamples:\n%s", cmd->examples);
}

static void print_global_help(FILE *stream)
{
    fprintf(stream, "Usage: vdiskctl COMMAND [OPTIONS] [ARGUMENTS...]\n"
                    "\n"
                    "Manage virtual disk images through the vdisk daemon (vdiskd): storage\n"
                    "pools, their volumes, and the jobs that copy them. What you may do is\n"
                    "decided by polkit; on a terminal you are asked for a password when needed.\n"
                    "\n"
                    "Commands:\n");
    for (gsize i = 0; i < G_N_ELEMENTS(commands); i++)
        fprintf(stream, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(stream, "\n"
                    "Options of every command:\n"
                    "  -q, --quiet            print only errors\n"
                    "  --no-ask-password      never ask for a password; fail instead\n"
                    "  -h, --help             show help\n"
                    "  -V, --version          show the version\n"
                    "\n"
                    "Volumes are named POOL/VOLUME, as 'vdiskctl volumes' lists them.\n"
                    "Sizes take the suffixes K, M, G, T (powers of 1024).\n"
                    "Run 'vdiskctl COMMAND --help' for a command's options and examples.\n");
}

/* ----- parsing ----- */

/* getopt_long's tables for the options cmd takes. */
static struct option *options_for(const CtlCommand *cmd, GString *shorts)
{
    struct option *longs = g_new0(struct option, G_N_ELEMENTS(option_specs) + 1);
    gsize n = 0;

    /* ':' first: a missing value is reported apart from an unknown option. */
    g_string_assign(shorts, ":");
    for (gsize i = 0; i < G_N_ELEMENTS(option_specs); i++) {
        const struct option *o = &option_specs[i].option;
        if (!takes(cmd, option_specs[i].needs))
            continue;
        longs[n++] = *o;
        if (o->val < 0x100) {
            g_string_append_c(shorts, (char)o->val);
            if (o->has_arg == required_argument)
                g_string_append_c(shorts, ':');
        }
    }
    return longs;
}

static void report_bad_option(const CtlCommand *cmd, int opt, char **argv)
{
    const char *word = argv[optind - 1];

    if (opt == ':')
        ctl_error("%s: option '%s' needs a value", cmd->name, word);
    else if (optopt != 0 && !g_str_has_prefix(word, "--"))
        ctl_error("%s: unknown option '-%c'", cmd->name, optopt);
    else
        ctl_error("%s: unknown option '%s'", cmd->name, word);
    fprintf(stderr, "Try 'vdiskctl %s --help' for more information.\n", cmd->name);
}

static void apply_option(Ctl *ctl, const CtlCommand *cmd, int opt, const char *arg)
{
    switch (opt) {
    case 'q':
        ctl->quiet = TRUE;
        break;
    case 'p':
        ctl->progress = TRUE;
        break;
    case 'f':
        /* Where -O names the output, -f names the input, as in qemu-img. */
        if (cmd->options & CTL_OPT_OUT_FORMAT)
            ctl->source_format = arg;
        else
            ctl->format = arg;
        break;
    case 'O':
        ctl->format = arg;
        break;
    case 'o':
        g_ptr_array_add(ctl->create_options, (gpointer)arg);
        break;
    case OPT_JSON:
        ctl->json = TRUE;
        break;
    case OPT_NO_ASK_PASSWORD:
        ctl->no_ask_password = TRUE;
        break;
    case OPT_SHRINK:
        ctl->shrink = TRUE;
        break;
    case OPT_SOURCE_FORMAT:
        ctl->source_format = arg;
        break;
    case OPT_OBJECT:
        g_ptr_array_add(ctl->objects, (gpointer)arg);
        break;
    case OPT_KEY_SECRET:
        /* It opens the volume named first: copy's source, which CopyFrom
         * (called on the target) knows as source-key-secret. */
        if (cmd->options & CTL_OPT_TARGET_KEY)
            ctl->source_key_secret = arg;
        else
            ctl->volume_key_secret = arg;
        break;
    case OPT_TARGET_KEY_SECRET:
        ctl->volume_key_secret = arg;
        break;
    case OPT_DETACH:
        ctl->detach = TRUE;
        break;
    case OPT_NOTIFY:
        ctl_notify_request();
        break;
    case OPT_DRY_RUN:
        ctl->dry_run = TRUE;
        break;
    case OPT_VIRTIO:
        ctl->virtio = TRUE;
        break;
    case OPT_KEEP_SNAPSHOTS:
        ctl->keep_snapshots = TRUE;
        break;
    case OPT_DOMAIN_TYPE:
        ctl->domain_type = arg;
        break;
    case OPT_START:
        ctl->start = TRUE;
        break;
    case OPT_CONNECT:
        ctl->connect_uri = arg;
        break;
    case OPT_SOCKET:
        ctl->socket_path = arg;
        break;
    case OPT_READONLY:
        ctl->readonly = TRUE;
        break;
    default:
        g_assert_not_reached();
    }
}

/* A size such as "-5G" is an operand, not an option (qemu-img resize takes
 * it out too): remove it from argv before getopt sees it. No option is a
 * digit, so nothing else can look like this. */
static char *take_negative_size(int *argc, char **argv)
{
    for (int i = 1; i < *argc; i++) {
        char *arg = argv[i];
        if (g_str_equal(arg, "--"))
            break;
        if (arg[0] == '-' && g_ascii_isdigit(arg[1])) {
            memmove(argv + i, argv + i + 1, (*argc - i) * sizeof(*argv));
            --*argc;
            return arg;
        }
    }
    return NULL;
}

/* Parse argv (argv[0] is the command's name) into ctl. Returns the index
 * of the first operand, or -1 after printing why not; exits after --help. */
static int parse_options(Ctl *ctl, const CtlCommand *cmd, int argc, char **argv)
{
    g_autoptr(GString) shorts = g_string_new(NULL);
    g_autofree struct option *longs = options_for(cmd, shorts);
    int opt;

    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, shorts->str, longs, NULL)) != -1) {
        if (opt == 'h') {
            print_command_help(cmd, stdout);
            exit(EXIT_SUCCESS);
        }
        if (opt == ':' || opt == '?') {
            report_bad_option(cmd, opt, argv);
            return -1;
        }
        apply_option(ctl, cmd, opt, optarg);
    }
    return optind;
}

static gboolean check_operands(const CtlCommand *cmd, int n)
{
    if (n >= cmd->min_operands && n <= cmd->max_operands)
        return TRUE;
    ctl_error("%s: %s", cmd->name, n < cmd->min_operands ? "missing operand" : "too many operands");
    print_usage(cmd, stderr);
    fprintf(stderr, "Try 'vdiskctl %s --help' for more information.\n", cmd->name);
    return FALSE;
}

static int run_command(const CtlCommand *cmd, int argc, char **argv)
{
    g_autoptr(GPtrArray) create_options = g_ptr_array_new();
    g_autoptr(GPtrArray) objects = g_ptr_array_new();
    g_autoptr(GPtrArray) operands = g_ptr_array_new();
    g_autoptr(GError) error = NULL;
    Ctl ctl = { .create_options = create_options, .objects = objects };
    char *negative = g_str_equal(cmd->name, "resize") ? take_negative_size(&argc, argv) : NULL;
    int first = parse_options(&ctl, cmd, argc, argv);
    int status;

    if (first < 0)
        return CTL_EXIT_FAILURE;
    for (int i = first; i < argc; i++)
        g_ptr_array_add(operands, argv[i]);
    if (negative != NULL)
        g_ptr_array_add(operands, negative);
    if (!check_operands(cmd, (int)operands->len))
        return CTL_EXIT_FAILURE;
    g_ptr_array_add(operands, NULL);
    /* From here on, with --notify, the result is a notification too. */
    ctl_notify_start(cmd->name, g_ptr_array_index(operands, 0));
    if (!cmd->offline && !ctl_connect(&ctl, &error)) {
        status = ctl_fail(error);
    } else {
        status = cmd->run(&ctl, (char **)operands->pdata, (int)operands->len - 1);
        ctl_disconnect(&ctl);
    }
    ctl_notify_end(status);
    return status;
}

/* Options may come before the command ("vdiskctl --json pools"): the
 * index of the command's name, or argc when there is none. */
static int command_index(int argc, char **argv)
{
    int i = 1;

    while (i < argc && argv[i][0] == '-' && argv[i][1] != '\0')
        i++;
    return i;
}

/* Handle --help, --version and "help [COMMAND]"; -1 when argv is none. */
static int run_builtin(int argc, char **argv)
{
    const CtlCommand *cmd;

    if (argc >= 2 && (g_str_equal(argv[1], "--help") || g_str_equal(argv[1], "-h"))) {
        print_global_help(stdout);
        return EXIT_SUCCESS;
    }
    if (argc >= 2 && (g_str_equal(argv[1], "--version") || g_str_equal(argv[1], "-V"))) {
        printf("vdiskctl version %s\n", VDISK_VERSION);
        return EXIT_SUCCESS;
    }
    if (argc < 2 || !g_str_equal(argv[1], "help"))
        return -1;
    if (argc < 3) {
        print_global_help(stdout);
        return EXIT_SUCCESS;
    }
    cmd = find_command(argv[2]);
    if (cmd == NULL) {
        ctl_error("no command '%s'; 'vdiskctl --help' lists them", argv[2]);
        return CTL_EXIT_FAILURE;
    }
    print_command_help(cmd, stdout);
    return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
    const CtlCommand *cmd;
    g_autofree char **args = NULL;
    int status, index, n = 0;

    setlocale(LC_ALL, "");
    /* Numbers in output must stay machine-readable whatever the locale. */
    setlocale(LC_NUMERIC, "C");

    status = run_builtin(argc, argv);
    if (status >= 0)
        return status;
    index = command_index(argc, argv);
    if (index >= argc) {
        ctl_error("no command given; the commands are:");
        print_global_help(stderr);
        return CTL_EXIT_FAILURE;
    }
    cmd = find_command(argv[index]);
    if (cmd == NULL) {
        ctl_error("no command '%s'; 'vdiskctl --help' lists them", argv[index]);
        return CTL_EXIT_FAILURE;
    }
    /* The command sees argv[0] = its own name, the options given before it
     * and everything after. */
    args = g_new0(char *, argc + 1);
    args[n++] = argv[index];
    for (int i = 1; i < argc; i++) {
        if (i != index)
            args[n++] = argv[i];
    }
    return run_command(cmd, n, args);
}
