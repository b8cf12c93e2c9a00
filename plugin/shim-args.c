/* The shim's command line: one scan of argv (options, bundled short
 * options, positional arguments), then one function per command for what
 * its positional arguments mean. Sizes, option lists, --image-opts and
 * secret objects are read by qemu-syntax/, as vdisk and vdiskctl read
 * them. */
#include "shim-args.h"

#include <string.h>

void shim_request_free(ShimRequest *req)
{
    if (req == NULL)
        return;
    g_free(req->command_name);
    g_free(req->format);
    g_free(req->out_format);
    g_free(req->backing);
    g_free(req->backing_format);
    g_ptr_array_unref(req->options);
    g_ptr_array_unref(req->objects);
    g_free(req->filename);
    g_free(req->target);
    g_free(req->size_text);
    g_free(req->snapshot);
    g_free(req->source_key);
    g_free(req->target_key);
    g_clear_pointer(&req->source_opts, qs_image_opts_free);
    g_clear_pointer(&req->target_opts, qs_image_opts_free);
    g_free(req->unsupported);
    g_free(req);
}

static gboolean fail(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static gboolean fail(GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED, msg);
    return FALSE;
}

/* The first reason wins: it is the one the user can act on. */
static void unsupported(ShimRequest *req, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void unsupported(ShimRequest *req, const char *fmt, ...)
{
    if (req->unsupported != NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    req->unsupported = g_strdup_vprintf(fmt, ap);
    va_end(ap);
}

/* A size in qemu's syntax, refused in qemu-img's words. */
static gboolean parse_size(const char *text, guint64 *size, GError **error)
{
    if (qs_parse_size(text, size, NULL))
        return TRUE;
    return fail(error, "Invalid image size specified. You may use k, M, G, T, P or E "
                       "suffixes for kilobytes, megabytes, gigabytes, terabytes, "
                       "petabytes and exabytes.");
}

/* The driver= of image options that name no file, when it is a protocol
 * (driver=rbd,pool=P,image=I; driver=nbd,server.path=...) rather than a
 * format, which needs a file below it; else NULL. A new string. */
static char *protocol_driver(const char *text)
{
    static const char *const formats[] = { "raw", "qcow2", "qcow",  "vmdk", "vdi",
                                           "vpc", "vhdx",  "luks",  "qed",  "parallels",
                                           "cow", "bochs", "cloop", "dmg",  NULL };
    g_autoptr(GPtrArray) options = qs_options_new();
    if (!qs_options_parse(text, options, NULL))
        return NULL;
    const char *driver = qs_options_get(options, "driver");
    if (driver == NULL || g_strv_contains(formats, driver))
        return NULL;
    return g_strdup(driver);
}

/* Does qemu read name as PROTOCOL:... (rbd:POOL/IMAGE, nbd:..., json:{...},
 * http://...)? As qemu-img decides: a ':' before any '/'. Such a name is
 * never a file of a storage pool. */
static gboolean has_protocol(const char *name)
{
    return name != NULL && name[strcspn(name, ":/")] == ':';
}

/* Names the shim leaves to the real qemu-img: libvirt 9.0 never runs
 * qemu-img with one (its rbd pools work through librbd itself), so one
 * here comes from someone else. The reason names the protocol only: an
 * rbd: name may carry a key (":key=..."), and reasons are logged. */
static void check_protocol(ShimRequest *req, const char *what, const char *name)
{
    if (has_protocol(name))
        unsupported(req, "%s is a %.*s: image, which qemu opens through that protocol, not a file",
                    what, (int)strcspn(name, ":"), name);
}

/* An --image-opts argument ("driver=qcow2,file.filename=/p,
 * encrypt.key-secret=s"): what the image is, its driver and the secret
 * that opens it. Kept in *slot; an option the shim does not pass on to
 * vdiskd makes the request unsupported. */
static gboolean take_image_opts(ShimRequest *req, const char *text, QsImageOpts **slot,
                                char **filename, char **format, char **key, GError **error)
{
    g_autoptr(GError) local = NULL;
    g_autoptr(QsImageOpts) opts = qs_image_opts_parse(text, &local);
    if (opts == NULL) {
        g_autofree char *protocol = NULL;
        if (g_error_matches(local, QS_ERROR, QS_ERROR_NO_FILE) &&
            (protocol = protocol_driver(text)) != NULL) {
            unsupported(req, "image option driver=%s (an image on a network, not a file)",
                        protocol);
            return TRUE;
        }
        if (g_error_matches(local, QS_ERROR, QS_ERROR_NO_FILE))
            return fail(error, "Could not open '%s': A block device must be specified for \"file\"",
                        text);
        return fail(error, "Could not open '%s': %s", text, local->message);
    }
    g_free(*filename);
    *filename = g_strdup(opts->filename);
    if (opts->driver != NULL) {
        g_free(*format);
        *format = g_strdup(opts->driver);
    }
    if (opts->key_secret != NULL) {
        g_free(*key);
        *key = g_strdup(opts->key_secret);
    }
    if (opts->file_driver != NULL && !g_str_equal(opts->file_driver, "file"))
        unsupported(req, "image option file.driver=%s", opts->file_driver);
    static const char *const known[] = { "driver",      "file.filename",      "filename",
                                         "file.driver", "encrypt.key-secret", "key-secret" };
    for (guint i = 0; i < opts->options->len; i++) {
        const QsOption *o = opts->options->pdata[i];
        if (!g_strv_contains(known, o->key))
            unsupported(req, "image option %s", o->key);
    }
    g_clear_pointer(slot, qs_image_opts_free);
    *slot = g_steal_pointer(&opts);
    return TRUE;
}

/* ---- the scan: options in any order, then the positional arguments ---- */

typedef struct {
    const char *name;
    gboolean has_arg;
    int id;
} Opt;

enum { O_OBJECT = 256, O_IMAGE_OPTS, O_TARGET_IMAGE_OPTS, O_SHRINK, O_FORCE_SHARE };

static const Opt long_opts[] = {
    { "--object", TRUE, O_OBJECT },
    { "--image-opts", FALSE, O_IMAGE_OPTS },
    { "--target-image-opts", FALSE, O_TARGET_IMAGE_OPTS },
    { "--shrink", FALSE, O_SHRINK },
    { "--force-share", FALSE, O_FORCE_SHARE },
    { "-U", FALSE, O_FORCE_SHARE },
    { NULL },
};

/* The short options of each command (getopt syntax: "x:" takes a value). */
static const char *short_opts(ShimCommand cmd)
{
    switch (cmd) {
    case SHIM_CMD_CREATE:
        return "qf:b:F:o:u";
    case SHIM_CMD_CONVERT:
        return "qf:O:o:nps:t:T:cW:m:B:l:SCr:";
    case SHIM_CMD_RESIZE:
        return "qf:";
    case SHIM_CMD_SNAPSHOT:
        return "qf:c:a:d:l";
    default:
        return "";
    }
}

static gboolean take_short(ShimRequest *req, char opt, const char *value, GError **error)
{
    switch (opt) {
    case 'q':
        req->quiet = TRUE;
        break;
    case 'f':
        g_free(req->format);
        req->format = g_strdup(value);
        break;
    case 'O':
        g_free(req->out_format);
        req->out_format = g_strdup(value);
        break;
    case 'b':
        g_free(req->backing);
        req->backing = g_strdup(value);
        break;
    case 'F':
        g_free(req->backing_format);
        req->backing_format = g_strdup(value);
        break;
    case 'o':
        if (g_str_equal(value, "help") || g_str_equal(value, "?")) {
            unsupported(req, "-o help");
        } else {
            g_autoptr(GError) local = NULL;
            if (!qs_options_parse(value, req->options, &local))
                return fail(error, "Invalid option list: %s", local->message);
        }
        break;
    case 'n':
        req->no_create = TRUE;
        break;
    case 'p':
    case 't':
    case 'T':
    case 'u':
        break; /* progress, cache modes: no effect here */
    case 'c':
    case 'a':
    case 'd':
        if (req->command == SHIM_CMD_SNAPSHOT) {
            req->snapshot_op = opt;
            g_free(req->snapshot);
            req->snapshot = g_strdup(value);
            break;
        }
        unsupported(req, "convert -%c", opt);
        break;
    case 'l':
        if (req->command == SHIM_CMD_SNAPSHOT) {
            req->snapshot_op = 'l';
            unsupported(req, "snapshot -l (listing is read-only; qemu-img does it)");
            break;
        }
        unsupported(req, "convert -l");
        break;
    default:
        unsupported(req, "option -%c", opt);
    }
    return TRUE;
}

static void take_long(ShimRequest *req, int id, const char *value)
{
    switch (id) {
    case O_OBJECT:
        g_ptr_array_add(req->objects, g_strdup(value));
        break;
    case O_IMAGE_OPTS:
        req->image_opts = TRUE;
        break;
    case O_TARGET_IMAGE_OPTS:
        req->target_image_opts = TRUE;
        break;
    case O_SHRINK:
        req->shrink = TRUE;
        break;
    case O_FORCE_SHARE:
        break;
    }
}

static const Opt *long_opt_of(const char *arg)
{
    for (const Opt *o = long_opts; o->name; o++)
        if (g_str_equal(arg, o->name) ||
            (o->has_arg && g_str_has_prefix(arg, o->name) && arg[strlen(o->name)] == '='))
            return o;
    return NULL;
}

/* Bundled short options, getopt style (-qf qcow2, -fqcow2), at argv[*i];
 * a value in the next argument moves *i on. */
static gboolean scan_shorts(ShimRequest *req, int argc, char **argv, int *i, GError **error)
{
    const char *shorts = short_opts(req->command);
    for (const char *p = argv[*i] + 1; *p; p++) {
        const char *spec = strchr(shorts, *p);
        if (spec == NULL || *p == ':')
            return fail(error, "invalid option -- '%c'\nTry 'qemu-img --help' for more information",
                        *p);
        const char *value = NULL;
        if (spec[1] == ':') {
            if (p[1] != '\0')
                value = p + 1;
            else if (*i + 1 < argc)
                value = argv[++*i];
            else
                return fail(error, "option requires an argument -- '%c'", *p);
        }
        if (!take_short(req, *p, value, error))
            return FALSE;
        if (value != NULL)
            break;
    }
    return TRUE;
}

/* Every option of argv[2...] into req, the rest into positional. */
static gboolean scan(ShimRequest *req, int argc, char **argv, GPtrArray *positional, GError **error)
{
    gboolean only_positional = FALSE;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || a[1] == '\0' ||
            /* resize takes "-SIZE" to shrink by SIZE */
            (req->command == SHIM_CMD_RESIZE && g_ascii_isdigit(a[1]))) {
            g_ptr_array_add(positional, (gpointer)a);
        } else if (g_str_equal(a, "--")) {
            only_positional = TRUE;
        } else if (long_opt_of(a) != NULL) {
            const Opt *lo = long_opt_of(a);
            const char *value = NULL;
            if (lo->has_arg) {
                const char *eq = strchr(a, '=');
                if (eq != NULL)
                    value = eq + 1;
                else if (i + 1 < argc)
                    value = argv[++i];
                else
                    return fail(error, "option '%s' requires an argument", a);
            }
            take_long(req, lo->id, value);
        } else if (a[1] == '-') {
            return fail(error,
                        "unrecognized option '%s'\nTry 'qemu-img --help' for more information", a);
        } else if (!scan_shorts(req, argc, argv, &i, error)) {
            return FALSE;
        }
    }
    return TRUE;
}

/* Move backing_file/backing_fmt out of -o, where libvirt puts them for
 * external snapshots, so there is one place to look. */
static void pull_backing_options(ShimRequest *req)
{
    for (guint i = 0; i < req->options->len;) {
        QsOption *o = req->options->pdata[i];
        char **slot = g_str_equal(o->key, "backing_file")  ? &req->backing
                      : g_str_equal(o->key, "backing_fmt") ? &req->backing_format
                                                           : NULL;
        if (slot == NULL) {
            i++;
            continue;
        }
        g_free(*slot);
        *slot = g_strdup(o->value);
        g_ptr_array_remove_index(req->options, i);
    }
}

/* ---- each command's positional arguments ---- */

static gboolean finish_create(ShimRequest *req, const char *const *pos, guint npos, GError **error)
{
    if (npos < 1 || npos > 2)
        return fail(error, "Expecting image file name");
    req->filename = g_strdup(pos[0]);
    if (npos == 2) {
        req->size_text = g_strdup(pos[1]);
        if (!parse_size(pos[1], &req->size, error))
            return FALSE;
    } else if (req->backing == NULL) {
        return fail(error, "Image creation needs a size parameter");
    }
    if (req->format == NULL)
        req->format = g_strdup("raw");
    return TRUE;
}

static gboolean finish_convert(ShimRequest *req, const char *const *pos, guint npos, GError **error)
{
    if (npos < 2)
        return fail(error, "Must specify image file name");
    if (npos > 2)
        unsupported(req, "convert of several source images");
    req->filename = g_strdup(pos[0]);
    req->target = g_strdup(pos[npos - 1]);
    if (req->image_opts && !take_image_opts(req, pos[0], &req->source_opts, &req->filename,
                                            &req->format, &req->source_key, error))
        return FALSE;
    if (req->target_image_opts) {
        if (!req->no_create)
            return fail(error, "--target-image-opts requires use of -n flag");
        if (!take_image_opts(req, pos[npos - 1], &req->target_opts, &req->target, &req->out_format,
                             &req->target_key, error))
            return FALSE;
    }
    if (req->out_format == NULL)
        req->out_format = g_strdup("raw");
    if (req->no_create && req->options->len > 0)
        unsupported(req, "convert -n with -o (the target exists already)");
    return TRUE;
}

static gboolean finish_resize(ShimRequest *req, const char *const *pos, guint npos, GError **error)
{
    if (npos != 2)
        return fail(error, "Expecting image file name and size");
    req->filename = g_strdup(pos[0]);
    req->size_text = g_strdup(pos[1]);
    if (pos[1][0] == '+' || pos[1][0] == '-')
        unsupported(req, "a relative size");
    else if (!parse_size(pos[1], &req->size, error))
        return FALSE;
    if (req->image_opts)
        return take_image_opts(req, pos[0], &req->source_opts, &req->filename, &req->format,
                               &req->source_key, error);
    return TRUE;
}

static gboolean finish_snapshot(ShimRequest *req, const char *const *pos, guint npos,
                                GError **error)
{
    if (npos != 1)
        return fail(error, "Expecting one image file name");
    if (req->snapshot_op == 0)
        unsupported(req, "snapshot without -c, -a or -d");
    req->filename = g_strdup(pos[0]);
    if (req->image_opts)
        return take_image_opts(req, pos[0], &req->source_opts, &req->filename, &req->format,
                               &req->source_key, error);
    return TRUE;
}

typedef gboolean (*FinishFunc)(ShimRequest *req, const char *const *pos, guint npos,
                               GError **error);

static const struct {
    const char *name;
    ShimCommand cmd;
    FinishFunc finish; /* NULL: no arguments are read */
} commands[] = {
    { "create", SHIM_CMD_CREATE, finish_create },
    { "convert", SHIM_CMD_CONVERT, finish_convert },
    { "resize", SHIM_CMD_RESIZE, finish_resize },
    { "snapshot", SHIM_CMD_SNAPSHOT, finish_snapshot },
    { "--version", SHIM_CMD_VERSION, NULL },
    { "-V", SHIM_CMD_VERSION, NULL },
    { "--help", SHIM_CMD_HELP, NULL },
    { "-h", SHIM_CMD_HELP, NULL },
    { "--status", SHIM_CMD_STATUS, NULL },
};

ShimRequest *shim_parse_args(int argc, char **argv, GError **error)
{
    if (argc < 2) {
        fail(error, "Not enough arguments\nTry 'qemu-img --help' for more information");
        return NULL;
    }
    g_autoptr(ShimRequest) req = g_new0(ShimRequest, 1);
    req->options = qs_options_new();
    req->objects = g_ptr_array_new_with_free_func(g_free);
    req->command_name = g_strdup(argv[1]);
    req->command = SHIM_CMD_OTHER;
    FinishFunc finish = NULL;
    for (guint i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (g_str_equal(argv[1], commands[i].name)) {
            req->command = commands[i].cmd;
            finish = commands[i].finish;
        }
    }
    if (req->command == SHIM_CMD_OTHER)
        unsupported(req, "qemu-img %s", argv[1]);
    if (finish == NULL)
        return g_steal_pointer(&req);

    g_autoptr(GPtrArray) positional = g_ptr_array_new();
    if (!scan(req, argc, argv, positional, error))
        return NULL;
    pull_backing_options(req);
    for (guint i = 0; i < req->objects->len; i++) {
        const char *spec = req->objects->pdata[i];
        if (!g_str_has_prefix(spec, "secret,") && !g_str_has_prefix(spec, "qom-type=secret"))
            unsupported(req, "--object %s", spec);
    }
    if (!finish(req, (const char *const *)positional->pdata, positional->len, error))
        return NULL;
    check_protocol(req, req->command == SHIM_CMD_CONVERT ? "the source" : "the image",
                   req->filename);
    check_protocol(req, "the target", req->target);
    check_protocol(req, "the backing file", req->backing);
    return g_steal_pointer(&req);
}
