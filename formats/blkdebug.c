/* blkdebug: QEMU's error-injection driver (see blkdebug.h).
 *
 * The rules follow qemu's blkdebug: the state starts at 1; a rule with a
 * state only acts in that state. When an event happens, its inject-error
 * rules replace the active ones and its set-state rules pick the next
 * state. A request fails with the errno of the first active rule whose
 * kinds include it (read, write, write-zeroes, discard and flush unless
 * the rule says otherwise) and whose sector, if any, lies in it; a "once"
 * rule is then gone for good. The event "none" happens when the layer is
 * made, so its rules are active from the start.
 *
 * Where the rules come from: a config file in qemu's format
 *
 *   [inject-error]
 *   event = "read_aio"
 *   errno = "5"
 *
 * (sections inject-error and set-state), and the open options
 * inject-error.N.KEY and set-state.N.KEY. The I/O limits qemu's blkdebug
 * takes (align, max-transfer, opt-/max-write-zero, opt-/max-discard) are
 * checked as qemu checks them; vdisk's requests do not depend on them, so
 * they change nothing else. */
#include "blkdebug.h"

#include "qemu-syntax.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A config file is a few rules: anything larger is no config file. */
#define CONFIG_MAX (1 << 20)

static const char *const event_names[VD_EVENT_COUNT] = {
    "l1_update",
    "l1_grow_alloc_table",
    "l1_grow_write_table",
    "l1_grow_activate_table",
    "l2_load",
    "l2_update",
    "l2_update_compressed",
    "l2_alloc_cow_read",
    "l2_alloc_write",
    "read_aio",
    "read_backing_aio",
    "read_compressed",
    "write_aio",
    "write_compressed",
    "vmstate_load",
    "vmstate_save",
    "cow_read",
    "cow_write",
    "reftable_load",
    "reftable_grow",
    "reftable_update",
    "refblock_load",
    "refblock_update",
    "refblock_update_part",
    "refblock_alloc",
    "refblock_alloc_hookup",
    "refblock_alloc_write",
    "refblock_alloc_write_blocks",
    "refblock_alloc_write_table",
    "refblock_alloc_switch_table",
    "cluster_alloc",
    "cluster_alloc_bytes",
    "cluster_free",
    "flush_to_os",
    "flush_to_disk",
    "pwritev_rmw_head",
    "pwritev_rmw_after_head",
    "pwritev_rmw_tail",
    "pwritev_rmw_after_tail",
    "pwritev",
    "pwritev_zero",
    "pwritev_done",
    "empty_image_prepare",
    "l1_shrink_write_table",
    "l1_shrink_free_l2_clusters",
    "cor_write",
    "cluster_alloc_space",
    "none",
};

static const char *const io_names[] = {
    "read", "write", "write-zeroes", "discard", "flush", "block-status",
};

/* Every kind but block status, as in qemu. */
#define IO_MASK_DEFAULT                                                                  \
    (1u << VD_DEBUG_IO_READ | 1u << VD_DEBUG_IO_WRITE | 1u << VD_DEBUG_IO_WRITE_ZEROES | \
     1u << VD_DEBUG_IO_DISCARD | 1u << VD_DEBUG_IO_FLUSH)

typedef struct {
    gboolean set_state; /* else inject-error */
    VdDebugEvent event;
    gint64 state; /* 0: in every state */
    /* inject-error */
    int err;
    gint64 offset; /* -1: anywhere */
    gboolean once;
    guint io_mask;
    /* set-state */
    gint64 new_state;
    gboolean removed; /* a once rule that fired */
} Rule;

struct VdBlkdebug {
    char *name;
    GMutex lock;
    GPtrArray *rules;  /* of Rule, in the order given */
    GPtrArray *active; /* borrowed from rules; the first match wins */
    gint64 state;
};

/* ----- reading rules ----- */

static gboolean parse_event(const char *where, const char *text, VdDebugEvent *out, GError **error)
{
    for (int i = 0; i < VD_EVENT_COUNT; i++) {
        if (g_str_equal(text, event_names[i])) {
            *out = (VdDebugEvent)i;
            return TRUE;
        }
    }
    g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "%sInvalid event name \"%s\"", where,
                text);
    return FALSE;
}

static gboolean parse_number(const char *where, const char *key, const char *text, gint64 min,
                             gint64 *out, GError **error)
{
    gint64 value = 0;
    if (!g_ascii_string_to_signed(text, 10, min, G_MAXINT64, &value, NULL)) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%sParameter '%s' expects a number, not '%s'", where, key, text);
        return FALSE;
    }
    *out = value;
    return TRUE;
}

static gboolean parse_bool(const char *where, const char *key, const char *text, gboolean *out,
                           GError **error)
{
    if (g_str_equal(text, "on") || g_str_equal(text, "true") || g_str_equal(text, "yes")) {
        *out = TRUE;
        return TRUE;
    }
    if (g_str_equal(text, "off") || g_str_equal(text, "false") || g_str_equal(text, "no")) {
        *out = FALSE;
        return TRUE;
    }
    g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                "%sParameter '%s' expects 'on' or 'off'", where, key);
    return FALSE;
}

/* One key of a rule. */
static gboolean rule_set(Rule *rule, const char *where, const char *key, const char *value,
                         gboolean *have_event, gboolean *have_new_state, GError **error)
{
    gint64 n = 0;
    if (g_str_equal(key, "event")) {
        *have_event = TRUE;
        return parse_event(where, value, &rule->event, error);
    }
    if (g_str_equal(key, "state"))
        return parse_number(where, key, value, 0, &rule->state, error);
    if (!rule->set_state && g_str_equal(key, "errno")) {
        if (!parse_number(where, key, value, 0, &n, error))
            return FALSE;
        rule->err = (int)MIN(n, G_MAXINT);
        return TRUE;
    }
    if (!rule->set_state && g_str_equal(key, "sector")) {
        if (!parse_number(where, key, value, -1, &n, error))
            return FALSE;
        if (n > G_MAXINT64 / 512) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "%sParameter 'sector' is out of range", where);
            return FALSE;
        }
        rule->offset = n < 0 ? -1 : n * 512;
        return TRUE;
    }
    if (!rule->set_state && g_str_equal(key, "once"))
        return parse_bool(where, key, value, &rule->once, error);
    if (!rule->set_state && g_str_equal(key, "immediately")) {
        /* qemu fails at once or after a turn of its event loop; vdisk's
         * requests are synchronous, so both fail the same way. */
        gboolean ignored;
        return parse_bool(where, key, value, &ignored, error);
    }
    if (!rule->set_state && g_str_equal(key, "iotype")) {
        for (guint i = 0; i < G_N_ELEMENTS(io_names); i++) {
            if (g_str_equal(value, io_names[i])) {
                rule->io_mask = 1u << i;
                return TRUE;
            }
        }
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%sParameter 'iotype' does not accept value '%s'", where, value);
        return FALSE;
    }
    if (rule->set_state && g_str_equal(key, "new_state")) {
        *have_new_state = TRUE;
        return parse_number(where, key, value, 1, &rule->new_state, error);
    }
    g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "%sInvalid parameter '%s'", where, key);
    return FALSE;
}

static Rule *rule_new(gboolean set_state)
{
    Rule *rule = g_new0(Rule, 1);
    rule->set_state = set_state;
    rule->err = EIO;
    rule->offset = -1;
    rule->io_mask = IO_MASK_DEFAULT;
    return rule;
}

static gboolean rule_complete(const Rule *rule, const char *where, gboolean have_event,
                              gboolean have_new_state, GError **error)
{
    if (!have_event) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "%sMissing event name for rule",
                    where);
        return FALSE;
    }
    if (rule->set_state && !have_new_state) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%sParameter 'new_state' is missing", where);
        return FALSE;
    }
    return TRUE;
}

/* qemu's config file syntax: "[group]" lines, then "key = "value"" lines;
 * '#' starts a comment. */
static gboolean read_config(VdBlkdebug *d, const char *path, GError **error)
{
    g_autofree char *text = NULL;
    gsize length = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    int err = fd < 0 ? errno : 0;
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > CONFIG_MAX))
        err = fstat(fd, &st) < 0 ? errno : S_ISREG(st.st_mode) ? EFBIG : EINVAL;
    if (fd >= 0 && err == 0) {
        text = g_malloc((gsize)st.st_size + 1);
        while (length < (gsize)st.st_size) {
            ssize_t n = read(fd, text + length, (gsize)st.st_size - length);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                err = n < 0 ? errno : 0;
                break;
            }
            length += (gsize)n;
        }
        text[length] = '\0';
    }
    if (fd >= 0)
        close(fd);
    if (err != 0) {
        g_set_error(error, VD_ERROR, err == ENOENT ? VD_ERROR_NOT_FOUND : VD_ERROR_IO,
                    "Could not read blkdebug config file %s: %s", path, g_strerror(err));
        return FALSE;
    }
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    Rule *rule = NULL;
    gboolean have_event = FALSE, have_new_state = FALSE;
    g_autofree char *section = NULL; /* where the rule's section starts */
    for (guint i = 0;; i++) {
        char *line = lines[i] != NULL ? g_strstrip(lines[i]) : NULL;
        g_autofree char *where = g_strdup_printf("%s:%u: ", path, i + 1);
        if (line == NULL || line[0] == '[') {
            if (rule != NULL) {
                g_ptr_array_add(d->rules, rule);
                if (!rule_complete(rule, section, have_event, have_new_state, error))
                    return FALSE;
            }
            rule = NULL;
            if (line == NULL)
                return TRUE;
            have_event = have_new_state = FALSE;
            g_free(section);
            section = g_strdup(where);
            if (g_str_equal(line, "[inject-error]") || g_str_has_prefix(line, "[inject-error \""))
                rule = rule_new(FALSE);
            else if (g_str_equal(line, "[set-state]") || g_str_has_prefix(line, "[set-state \""))
                rule = rule_new(TRUE);
            else {
                g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                            "%sunknown section %s: blkdebug takes [inject-error] and [set-state]",
                            where, line);
                return FALSE;
            }
            continue;
        }
        if (line[0] == '\0' || line[0] == '#')
            continue;
        char *eq = strchr(line, '=');
        if (rule == NULL || eq == NULL) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "%sparse error", where);
            return FALSE;
        }
        *eq = '\0';
        char *key = g_strstrip(line), *value = g_strstrip(eq + 1);
        gsize len = strlen(value);
        if (len < 2 || value[0] != '"' || value[len - 1] != '"') {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "%sparse error (values are in double quotes)", where);
            return FALSE;
        }
        value[len - 1] = '\0';
        if (!rule_set(rule, where, key, value + 1, &have_event, &have_new_state, error))
            return FALSE;
    }
}

/* The rules of the option list at base ("inject-error." or "set-state."
 * after the node's prefix): base N.KEY=VALUE for N = 0, 1, ... */
static gboolean read_option_rules(VdBlkdebug *d, VdOptions *opts, GPtrArray *keys, const char *base,
                                  gboolean set_state, GError **error)
{
    gsize base_len = strlen(base);
    g_autoptr(GHashTable) by_index = g_hash_table_new_full(NULL, NULL, NULL, NULL);
    guint64 max_index = 0;
    gboolean any = FALSE;
    for (guint i = 0; i < keys->len; i++) {
        const char *key = keys->pdata[i];
        guint64 index = 0;
        if (!g_str_has_prefix(key, base))
            continue;
        const char *dot = strchr(key + base_len, '.');
        g_autofree char *digits =
            dot != NULL ? g_strndup(key + base_len, (gsize)(dot - key - base_len)) : NULL;
        if (digits == NULL || !g_ascii_string_to_unsigned(digits, 10, 0, 1023, &index, NULL)) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Invalid parameter '%s' (a list entry is %sN.KEY)", key, base);
            return FALSE;
        }
        max_index = MAX(max_index, index);
        any = TRUE;
    }
    for (guint64 n = 0; any && n <= max_index; n++) {
        g_autofree char *item = g_strdup_printf("%s%" G_GUINT64_FORMAT ".", base, n);
        g_autofree char *where = g_strdup_printf("%s%" G_GUINT64_FORMAT ": ", base, n);
        Rule *rule = rule_new(set_state);
        g_ptr_array_add(d->rules, rule);
        gboolean have_event = FALSE, have_new_state = FALSE, seen = FALSE;
        for (guint i = 0; i < keys->len; i++) {
            const char *key = keys->pdata[i];
            if (!g_str_has_prefix(key, item))
                continue;
            seen = TRUE;
            if (!rule_set(rule, where, key + strlen(item), vd_options_get(opts, key), &have_event,
                          &have_new_state, error))
                return FALSE;
        }
        if (seen && !rule_complete(rule, where, have_event, have_new_state, error))
            return FALSE;
        if (!seen)
            rule->removed = TRUE;
    }
    return TRUE;
}

/* align and the other limits: numbers as qemu's blkdebug requires them. */
static gboolean check_limits(VdOptions *opts, const char *prefix, GError **error)
{
    static const char *const names[] = { "align",          "max-transfer", "opt-write-zero",
                                         "max-write-zero", "opt-discard",  "max-discard" };
    guint64 v[G_N_ELEMENTS(names)] = { 0 };
    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        g_autofree char *key = g_strconcat(prefix, names[i], NULL);
        if (!vd_option_size(opts, key, 0, &v[i], error))
            return FALSE;
        if (v[i] > G_MAXINT32) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Cannot meet constraints with %s %" G_GUINT64_FORMAT, names[i], v[i]);
            return FALSE;
        }
    }
    guint64 align = v[0];
    if (align != 0 && (align & (align - 1)) != 0) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "Cannot meet constraints with align %" G_GUINT64_FORMAT, align);
        return FALSE;
    }
    guint64 a = align != 0 ? align : 1;
    if (v[1] != 0 && (v[1] < a || v[1] % a != 0)) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "Cannot meet constraints with max-transfer %" G_GUINT64_FORMAT, v[1]);
        return FALSE;
    }
    for (guint i = 2; i < G_N_ELEMENTS(names); i += 2) {
        /* opt-X a multiple of align, max-X of opt-X (or of align) */
        if (v[i] != 0 && v[i] % a != 0) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Cannot meet constraints with %s %" G_GUINT64_FORMAT, names[i], v[i]);
            return FALSE;
        }
        guint64 unit = v[i] != 0 ? v[i] : a;
        if (v[i + 1] != 0 && (v[i + 1] < unit || v[i + 1] % a != 0)) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "Cannot meet constraints with %s %" G_GUINT64_FORMAT, names[i + 1],
                        v[i + 1]);
            return FALSE;
        }
    }
    return TRUE;
}

/* Is key (after the node's prefix) one of blkdebug's own, or one qemu
 * takes for any node (accepted; they change nothing here)? */
static gboolean own_key(const char *key)
{
    static const char *const plain[] = {
        "driver",         "config",      "align",       "max-transfer",  "opt-write-zero",
        "max-write-zero", "opt-discard", "max-discard", "image",         "node-name",
        "read-only",      "force-share", "discard",     "detect-zeroes", "auto-read-only",
    };
    for (guint i = 0; i < G_N_ELEMENTS(plain); i++)
        if (g_str_equal(key, plain[i]))
            return TRUE;
    return g_str_has_prefix(key, "inject-error.") || g_str_has_prefix(key, "set-state.") ||
           g_str_has_prefix(key, "image.") || g_str_has_prefix(key, "take-child-perms.") ||
           g_str_has_prefix(key, "unshare-child-perms.") || g_str_has_prefix(key, "cache.");
}

VdBlkdebug *vd_blkdebug_new(const char *name, VdOptions *opts, const char *prefix,
                            const char *config_file, GError **error)
{
    g_autoptr(VdBlkdebug) d = g_new0(VdBlkdebug, 1);
    d->name = g_strdup(name);
    g_mutex_init(&d->lock);
    d->rules = g_ptr_array_new_with_free_func(g_free);
    d->active = g_ptr_array_new();
    d->state = 1;

    g_autofree char *config_key = g_strconcat(prefix, "config", NULL);
    const char *config = config_file;
    if (config == NULL || *config == '\0')
        config = vd_options_get(opts, config_key);
    if (config != NULL && *config != '\0' && !read_config(d, config, error))
        return NULL;
    if (opts != NULL) {
        g_autoptr(GPtrArray) all = vd_options_keys(opts);
        g_autoptr(GPtrArray) keys = g_ptr_array_new_with_free_func(g_free);
        gsize plen = strlen(prefix);
        for (guint i = 0; i < all->len; i++) {
            const char *key = all->pdata[i];
            if (!g_str_has_prefix(key, prefix))
                continue;
            if (!own_key(key + plen)) {
                g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                            "Block protocol 'blkdebug' doesn't support the option '%s'",
                            key + plen);
                return NULL;
            }
            g_ptr_array_add(keys, g_strdup(key));
        }
        g_autofree char *inject = g_strconcat(prefix, "inject-error.", NULL);
        g_autofree char *set_state = g_strconcat(prefix, "set-state.", NULL);
        if (!read_option_rules(d, opts, keys, inject, FALSE, error) ||
            !read_option_rules(d, opts, keys, set_state, TRUE, error) ||
            !check_limits(opts, prefix, error))
            return NULL;
    }
    vd_blkdebug_event(d, VD_EVENT_NONE);
    return g_steal_pointer(&d);
}

void vd_blkdebug_free(VdBlkdebug *debug)
{
    if (debug == NULL)
        return;
    g_ptr_array_unref(debug->active);
    g_ptr_array_unref(debug->rules);
    g_mutex_clear(&debug->lock);
    g_free(debug->name);
    g_free(debug);
}

/* ----- events and requests ----- */

void vd_blkdebug_event(VdBlkdebug *d, VdDebugEvent event)
{
    g_mutex_lock(&d->lock);
    gint64 new_state = d->state;
    gboolean injected = FALSE;
    for (guint i = 0; i < d->rules->len; i++) {
        Rule *rule = d->rules->pdata[i];
        if (rule->removed || rule->event != event || (rule->state != 0 && rule->state != d->state))
            continue;
        if (rule->set_state) {
            new_state = rule->new_state;
            continue;
        }
        /* An event's error rules take the place of those active before. */
        if (!injected)
            g_ptr_array_set_size(d->active, 0);
        injected = TRUE;
        g_ptr_array_add(d->active, rule);
    }
    d->state = new_state;
    g_mutex_unlock(&d->lock);
}

gboolean vd_blkdebug_check(VdBlkdebug *d, VdDebugIo io, guint64 offset, guint64 len,
                           const char *name, GError **error)
{
    g_mutex_lock(&d->lock);
    Rule *hit = NULL;
    for (guint i = 0; i < d->active->len && hit == NULL; i++) {
        Rule *rule = d->active->pdata[i];
        if ((rule->io_mask & (1u << io)) &&
            (rule->offset < 0 ||
             (len > 0 && (guint64)rule->offset >= offset && (guint64)rule->offset - offset < len)))
            hit = rule;
    }
    int err = hit != NULL ? hit->err : 0;
    if (hit != NULL && hit->once) {
        g_ptr_array_remove(d->active, hit);
        hit->removed = TRUE;
    }
    g_mutex_unlock(&d->lock);
    if (err == 0)
        return TRUE;
    static const char *const what[] = {
        "read failed",    "write failed", "writing zeroes failed",
        "discard failed", "sync failed",  "block status failed",
    };
    vd_set_file_error(error, name != NULL ? name : d->name,
                      err == ENOSPC ? VD_ERROR_NO_SPACE : VD_ERROR_IO, "%s: %s", what[io],
                      g_strerror(err));
    return FALSE;
}

/* ----- opening ----- */

/* Split "blkdebug:CONF:IMAGE". */
static gboolean split_name(const char *name, char **config, const char **image)
{
    if (!g_str_has_prefix(name, "blkdebug:"))
        return FALSE;
    const char *rest = name + strlen("blkdebug:");
    const char *colon = strchr(rest, ':');
    if (colon == NULL)
        return FALSE;
    if (config != NULL)
        *config = g_strndup(rest, (gsize)(colon - rest));
    *image = colon + 1;
    return TRUE;
}

const char *vd_blkdebug_image_name(const char *name)
{
    const char *image = name;
    while (split_name(image, NULL, &image)) {
    }
    return image;
}

VdFile *vd_blkdebug_open_file(const char *name, gboolean read_write, GError **error)
{
    g_autofree char *config = NULL;
    const char *image = NULL;
    if (!split_name(name, &config, &image)) {
        vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT,
                          "a blkdebug name is blkdebug:CONFIG:IMAGE (CONFIG may be empty)");
        return NULL;
    }
    g_autoptr(VdBlkdebug) debug = vd_blkdebug_new(name, NULL, "", config, error);
    if (debug == NULL) {
        g_prefix_error(error, "%s: ", name);
        return NULL;
    }
    VdFile *file = vd_file_open(image, read_write, error);
    if (file != NULL)
        vd_file_set_debug(file, g_steal_pointer(&debug));
    return file;
}

VdFile *vd_blkdebug_open_file_node(VdOptions *opts, const char *prefix, gboolean read_write,
                                   GError **error)
{
    g_autofree char *driver_key = g_strconcat(prefix, "driver", NULL);
    g_autofree char *filename_key = g_strconcat(prefix, "filename", NULL);
    const char *driver = vd_options_get(opts, driver_key);
    const char *filename = vd_options_get(opts, filename_key);

    if (driver == NULL || g_str_equal(driver, "file")) {
        if (filename == NULL) {
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "The '%s' option is missing",
                        filename_key);
            return NULL;
        }
        return vd_file_open(filename, read_write, error);
    }
    if (!g_str_equal(driver, "blkdebug")) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "%s=%s: only a local file (driver=file) or a blkdebug node over one can be "
                    "opened here",
                    driver_key, driver);
        return NULL;
    }
    g_autofree char *image_key = g_strconcat(prefix, "image", NULL);
    g_autofree char *child = g_strconcat(prefix, "image.", NULL);
    const char *image = vd_options_get(opts, image_key);
    VdFile *file = NULL;
    if (image != NULL)
        file = vd_file_open(image, read_write, error);
    else
        file = vd_blkdebug_open_file_node(opts, child, read_write, error);
    if (file == NULL)
        return NULL;
    VdBlkdebug *debug = vd_blkdebug_new(vd_file_name(file), opts, prefix, NULL, error);
    if (debug == NULL) {
        vd_file_close(file);
        return NULL;
    }
    vd_file_set_debug(file, debug);
    return file;
}

/* The file under the format node at prefix: "PREFIXfile" naming it, or
 * the node "PREFIXfile.". */
static VdFile *open_format_file(VdOptions *opts, const char *prefix, gboolean read_write,
                                GError **error)
{
    g_autofree char *key = g_strconcat(prefix, "file", NULL);
    g_autofree char *node = g_strconcat(prefix, "file.", NULL);
    const char *name = vd_options_get(opts, key);
    if (name != NULL)
        return vd_file_open(name, read_write, error);
    return vd_blkdebug_open_file_node(opts, node, read_write, error);
}

static gboolean is_format(const char *driver)
{
    return driver != NULL && !g_str_equal(driver, "file") && !g_str_equal(driver, "blkdebug");
}

VdImage *vd_image_open_described(VdOptions *opts, const char *name, const char *format,
                                 VdOpenFlags flags, VdSecrets *secrets, GError **error)
{
    gboolean rw = (flags & VD_OPEN_READ_WRITE) != 0;
    const char *driver = vd_options_get(opts, "driver");
    VdFile *file = NULL;
    gboolean share = FALSE;
    /* -U in the options: read while another process writes */
    if ((vd_options_get(opts, "force-share") != NULL &&
         !vd_option_bool(opts, "force-share", FALSE, &share, error)) ||
        (vd_options_get(opts, "image.force-share") != NULL &&
         !vd_option_bool(opts, "image.force-share", share, &share, error)))
        return NULL;
    if (share)
        flags |= VD_OPEN_FORCE_SHARE;

    if (g_strcmp0(driver, "blkdebug") == 0 && is_format(vd_options_get(opts, "image.driver"))) {
        /* Above the format: the rules see the guest's requests. */
        const char *child = vd_options_get(opts, "image.driver");
        g_autoptr(VdBlkdebug) debug = NULL;
        file = open_format_file(opts, "image.", rw, error);
        if (file == NULL)
            return NULL;
        g_autofree char *file_name = g_strdup(vd_file_name(file));
        debug = vd_blkdebug_new(file_name, opts, "", NULL, error);
        if (debug == NULL) {
            vd_file_close(file);
            return NULL;
        }
        VdImage *img = vd_image_open_on_file(file, file_name, child, flags, NULL, secrets, error);
        if (img != NULL)
            img->debug = g_steal_pointer(&debug);
        return img;
    }
    if (driver == NULL || !is_format(driver))
        file = vd_blkdebug_open_file_node(opts, "", rw, error);
    else
        file = open_format_file(opts, "", rw, error);
    if (file == NULL)
        return NULL;
    const char *fmt = is_format(driver) ? driver : format;
    if (name == NULL)
        name = vd_file_name(file);
    g_autofree char *label = g_strdup(name);
    return vd_image_open_on_file(file, label, fmt, flags, NULL, secrets, error);
}

VdImage *vd_image_open_json(const char *name, const char *format, VdOpenFlags flags,
                            VdSecrets *secrets, GError **error)
{
    g_autoptr(GError) local = NULL;
    g_autofree char *text = qs_json_filename_options(name, &local);
    g_autoptr(VdOptions) opts = vd_options_new();
    if (text == NULL || !vd_options_parse(opts, text, &local)) {
        vd_set_file_error(error, name, VD_ERROR_INVALID_ARGUMENT, "%s", local->message);
        return NULL;
    }
    return vd_image_open_described(opts, name, format, flags, secrets, error);
}

gboolean vd_image_open_blkdebug(const char *options, const char *format, VdOpenFlags flags,
                                VdSecrets *secrets, VdImage **img, GError **error)
{
    g_autoptr(VdOptions) opts = vd_options_new();
    *img = NULL;
    if (!vd_options_parse(opts, options, NULL))
        return TRUE;
    g_autoptr(GPtrArray) keys = vd_options_keys(opts);
    gboolean uses = FALSE;
    for (guint i = 0; i < keys->len && !uses; i++) {
        const char *key = keys->pdata[i];
        uses = (g_str_equal(key, "driver") || g_str_has_suffix(key, ".driver")) &&
               g_str_equal(vd_options_get(opts, key), "blkdebug");
    }
    if (!uses)
        return TRUE;
    *img = vd_image_open_described(opts, NULL, format, flags, secrets, error);
    return *img != NULL;
}
