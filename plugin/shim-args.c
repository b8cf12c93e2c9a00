#include "shim-args.h"

#include <string.h>

static void shim_option_free(ShimOption *o)
{
    g_free(o->key);
    g_free(o->value);
    g_free(o);
}

GPtrArray *shim_options_new(void)
{
    return g_ptr_array_new_with_free_func((GDestroyNotify)shim_option_free);
}

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
    g_clear_pointer(&req->source_opts, g_hash_table_unref);
    g_clear_pointer(&req->target_opts, g_hash_table_unref);
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

gboolean shim_parse_option_string(const char *text, GPtrArray *out, GError **error)
{
    g_autoptr(GString) item = g_string_new(NULL);
    for (const char *p = text;; p++) {
        if (*p == ',' && p[1] == ',') {
            g_string_append_c(item, ',');
            p++;
            continue;
        }
        if (*p != ',' && *p != '\0') {
            g_string_append_c(item, *p);
            continue;
        }
        if (item->len > 0) {
            ShimOption *o = g_new0(ShimOption, 1);
            const char *eq = strchr(item->str, '=');
            o->key = eq ? g_strndup(item->str, eq - item->str) : g_strdup(item->str);
            o->value = g_strdup(eq ? eq + 1 : "on");
            if (*o->key == '\0') {
                shim_option_free(o);
                return fail(error, "Invalid option list '%s': an option has no name", text);
            }
            g_ptr_array_add(out, o);
        } else if (*p == ',') {
            return fail(error, "Invalid option list '%s': empty option", text);
        }
        g_string_truncate(item, 0);
        if (*p == '\0')
            break;
    }
    return TRUE;
}

const char *shim_option_get(GPtrArray *options, const char *key)
{
    for (guint i = options ? options->len : 0; i > 0; i--) { /* the last one counts */
        ShimOption *o = options->pdata[i - 1];
        if (g_str_equal(o->key, key))
            return o->value;
    }
    return NULL;
}

gboolean shim_parse_size(const char *text, guint64 *size, GError **error)
{
    if (text == NULL || !g_ascii_isdigit(*text))
        return fail(error, "Invalid image size specified. You may use k, M, G, T, P or E "
                           "suffixes for kilobytes, megabytes, gigabytes, terabytes, "
                           "petabytes and exabytes.");
    char *end;
    guint64 v = g_ascii_strtoull(text, &end, 10);
    guint shift = 0;
    switch (*end) {
    case '\0':
    case 'b':
    case 'B':
        break;
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    case 't':
    case 'T':
        shift = 40;
        break;
    case 'p':
    case 'P':
        shift = 50;
        break;
    case 'e':
    case 'E':
        shift = 60;
        break;
    default:
        shift = 99;
    }
    if (*end != '\0')
        end++;
    if (shift == 99 || *end != '\0' || (shift > 0 && v > (G_MAXUINT64 >> shift)))
        return fail(error, "Invalid image size specified. You may use k, M, G, T, P or E "
                           "suffixes for kilobytes, megabytes, gigabytes, terabytes, "
                           "petabytes and exabytes.");
    *size = v << shift;
    return TRUE;
}

/* --image-opts "driver=qcow2,file.filename=/p,encrypt.key-secret=s". */
static GHashTable *parse_image_opts(const char *text, GError **error)
{
    g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func((GDestroyNotify)shim_option_free);
    if (!shim_parse_option_string(text, list, error))
        return NULL;
    GHashTable *dict = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    for (guint i = 0; i < list->len; i++) {
        ShimOption *o = list->pdata[i];
        g_hash_table_replace(dict, g_strdup(o->key), g_strdup(o->value));
    }
    const char *file = g_hash_table_lookup(dict, "file.filename");
    if (file == NULL)
        file = g_hash_table_lookup(dict, "filename");
    if (file == NULL) {
        g_hash_table_unref(dict);
        fail(error, "Could not open '%s': A block device must be specified for \"file\"", text);
        return NULL;
    }
    return dict;
}

/* The option string of an image: what the image is, with --image-opts:
 * its file, its driver and the secret that opens it. */
static void take_image_opts(ShimRequest *req, GHashTable *dict, char **filename, char **format,
                            char **key)
{
    const char *file = g_hash_table_lookup(dict, "file.filename");
    g_free(*filename);
    *filename = g_strdup(file ? file : g_hash_table_lookup(dict, "filename"));
    const char *driver = g_hash_table_lookup(dict, "driver");
    if (driver != NULL) {
        g_free(*format);
        *format = g_strdup(driver);
    }
    GHashTableIter it;
    gpointer name, value;
    g_hash_table_iter_init(&it, dict);
    while (g_hash_table_iter_next(&it, &name, &value)) {
        if (g_str_equal(name, "encrypt.key-secret") || g_str_equal(name, "key-secret")) {
            g_free(*key);
            *key = g_strdup(value);
        } else if (!g_str_equal(name, "driver") && !g_str_equal(name, "file.filename") &&
                   !g_str_equal(name, "filename") && !g_str_equal(name, "file.driver")) {
            unsupported(req, "image option %s", (char *)name);
        }
    }
}

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

static gboolean take_option(ShimRequest *req, char opt, const char *value, GError **error)
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
        if (g_str_equal(value, "help") || g_str_equal(value, "?"))
            unsupported(req, "-o help");
        else if (!shim_parse_option_string(value, req->options, error))
            return FALSE;
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

static ShimCommand command_of(const char *name)
{
    static const struct {
        const char *name;
        ShimCommand cmd;
    } table[] = {
        { "create", SHIM_CMD_CREATE },     { "convert", SHIM_CMD_CONVERT },
        { "resize", SHIM_CMD_RESIZE },     { "snapshot", SHIM_CMD_SNAPSHOT },
        { "--version", SHIM_CMD_VERSION }, { "-V", SHIM_CMD_VERSION },
        { "--help", SHIM_CMD_HELP },       { "-h", SHIM_CMD_HELP },
        { "--status", SHIM_CMD_STATUS },
    };
    for (guint i = 0; i < G_N_ELEMENTS(table); i++)
        if (g_str_equal(name, table[i].name))
            return table[i].cmd;
    return SHIM_CMD_OTHER;
}

/* Move backing_file/backing_fmt out of -o, where libvirt puts them for
 * external snapshots, so there is one place to look. */
static void pull_backing_options(ShimRequest *req)
{
    for (guint i = 0; i < req->options->len;) {
        ShimOption *o = req->options->pdata[i];
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

ShimRequest *shim_parse_args(int argc, char **argv, GError **error)
{
    g_autoptr(ShimRequest) req = g_new0(ShimRequest, 1);
    req->options = g_ptr_array_new_with_free_func((GDestroyNotify)shim_option_free);
    req->objects = g_ptr_array_new_with_free_func(g_free);
    if (argc < 2) {
        fail(error, "Not enough arguments\nTry 'qemu-img --help' for more information");
        return NULL;
    }
    req->command_name = g_strdup(argv[1]);
    req->command = command_of(argv[1]);
    if (req->command != SHIM_CMD_CREATE && req->command != SHIM_CMD_CONVERT &&
        req->command != SHIM_CMD_RESIZE && req->command != SHIM_CMD_SNAPSHOT) {
        if (req->command == SHIM_CMD_OTHER)
            unsupported(req, "qemu-img %s", argv[1]);
        return g_steal_pointer(&req);
    }
    const char *shorts = short_opts(req->command);
    g_autoptr(GPtrArray) positional = g_ptr_array_new();
    gboolean only_positional = FALSE;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || a[1] == '\0' ||
            /* resize takes "-SIZE" to shrink by SIZE */
            (req->command == SHIM_CMD_RESIZE && g_ascii_isdigit(a[1]))) {
            g_ptr_array_add(positional, (gpointer)a);
            continue;
        }
        if (g_str_equal(a, "--")) {
            only_positional = TRUE;
            continue;
        }
        const Opt *lo = NULL;
        for (const Opt *o = long_opts; o->name; o++)
            if (g_str_equal(a, o->name) ||
                (o->has_arg && g_str_has_prefix(a, o->name) && a[strlen(o->name)] == '='))
                lo = o;
        if (lo != NULL) {
            const char *value = NULL;
            if (lo->has_arg) {
                const char *eq = strchr(a, '=');
                if (eq != NULL)
                    value = eq + 1;
                else if (i + 1 < argc)
                    value = argv[++i];
                else {
                    fail(error, "option '%s' requires an argument", a);
                    return NULL;
                }
            }
            switch (lo->id) {
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
            continue;
        }
        if (a[1] == '-') {
            fail(error, "unrecognized option '%s'\nTry 'qemu-img --help' for more information", a);
            return NULL;
        }
        /* Bundled short options, getopt style: -qf qcow2, -fqcow2. */
        for (const char *p = a + 1; *p; p++) {
            const char *spec = strchr(shorts, *p);
            if (spec == NULL || *p == ':') {
                fail(error,
                     "invalid option -- '%c'\nTry 'qemu-img --help' for more "
                     "information",
                     *p);
                return NULL;
            }
            const char *value = NULL;
            if (spec[1] == ':') {
                if (p[1] != '\0')
                    value = p + 1;
                else if (i + 1 < argc)
                    value = argv[++i];
                else {
                    fail(error, "option requires an argument -- '%c'", *p);
                    return NULL;
                }
            }
            if (!take_option(req, *p, value, error))
                return NULL;
            if (value != NULL)
                break;
        }
    }
    pull_backing_options(req);
    for (guint i = 0; i < req->objects->len; i++) {
        const char *spec = req->objects->pdata[i];
        if (!g_str_has_prefix(spec, "secret,") && !g_str_has_prefix(spec, "qom-type=secret"))
            unsupported(req, "--object %s", spec);
    }
    const char *const *pos = (const char *const *)positional->pdata;
    guint npos = positional->len;
    switch (req->command) {
    case SHIM_CMD_CREATE:
        if (npos < 1 || npos > 2) {
            fail(error, "Expecting image file name");
            return NULL;
        }
        req->filename = g_strdup(pos[0]);
        if (npos == 2) {
            req->size_text = g_strdup(pos[1]);
            if (!shim_parse_size(pos[1], &req->size, error))
                return NULL;
        } else if (req->backing == NULL) {
            fail(error, "Image creation needs a size parameter");
            return NULL;
        }
        if (req->format == NULL)
            req->format = g_strdup("raw");
        break;
    case SHIM_CMD_CONVERT:
        if (npos < 2) {
            fail(error, "Must specify image file name");
            return NULL;
        }
        if (npos > 2)
            unsupported(req, "convert of several source images");
        req->filename = g_strdup(pos[0]);
        req->target = g_strdup(pos[npos - 1]);
        if (req->image_opts) {
            if ((req->source_opts = parse_image_opts(req->filename, error)) == NULL)
                return NULL;
            take_image_opts(req, req->source_opts, &req->filename, &req->format, &req->source_key);
        }
        if (req->target_image_opts) {
            if (!req->no_create) {
                fail(error, "--target-image-opts requires use of -n flag");
                return NULL;
            }
            if ((req->target_opts = parse_image_opts(req->target, error)) == NULL)
                return NULL;
            take_image_opts(req, req->target_opts, &req->target, &req->out_format,
                            &req->target_key);
        }
        if (req->out_format == NULL)
            req->out_format = g_strdup("raw");
        if (req->no_create && req->options->len > 0)
            unsupported(req, "convert -n with -o (the target exists already)");
        break;
    case SHIM_CMD_RESIZE:
        if (npos != 2) {
            fail(error, "Expecting image file name and size");
            return NULL;
        }
        req->filename = g_strdup(pos[0]);
        req->size_text = g_strdup(pos[1]);
        if (pos[1][0] == '+' || pos[1][0] == '-')
            unsupported(req, "a relative size");
        else if (!shim_parse_size(pos[1], &req->size, error))
            return NULL;
        if (req->image_opts) {
            if ((req->source_opts = parse_image_opts(req->filename, error)) == NULL)
                return NULL;
            take_image_opts(req, req->source_opts, &req->filename, &req->format, &req->source_key);
        }
        break;
    case SHIM_CMD_SNAPSHOT:
        if (npos != 1) {
            fail(error, "Expecting one image file name");
            return NULL;
        }
        if (req->snapshot_op == 0)
            unsupported(req, "snapshot without -c, -a or -d");
        req->filename = g_strdup(pos[0]);
        if (req->image_opts) {
            if ((req->source_opts = parse_image_opts(req->filename, error)) == NULL)
                return NULL;
            take_image_opts(req, req->source_opts, &req->filename, &req->format, &req->source_key);
        }
        break;
    default:
        break;
    }
    return g_steal_pointer(&req);
}
