/* vdisk: secrets and image options for encrypted images, in qemu-img's
 * syntax (--object secret,id=ID,file=PATH; --image-opts) and for people
 * (--passphrase-file, or a prompt without echo on a terminal).
 *
 * Secrets only ever come from files or the terminal, never from the
 * command line (data= is accepted for qemu-img compatibility, but it is
 * visible to other users in the process list); they are wiped on exit and
 * never printed. */
#include "cli.h"
#include "qemu-syntax.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static VdSecrets *secrets;
static gboolean image_opts, target_image_opts, inspect_only;

static void free_secrets(void) { g_clear_pointer(&secrets, vd_secrets_free); }

VdSecrets *cli_secrets(void)
{
    if (secrets == NULL) {
        secrets = vd_secrets_new();
        atexit(free_secrets);
    }
    return secrets;
}

gboolean cli_image_opts(void) { return image_opts; }
gboolean cli_target_image_opts(void) { return target_image_opts; }
void cli_set_inspect_only(void) { inspect_only = TRUE; }

/* A passphrase file holds the passphrase; one trailing newline (as an
 * editor or echo leaves it) is not part of it. */
static gboolean read_passphrase_file(const char *path, GError **error)
{
    if (!vd_secrets_set_default_from_file(cli_secrets(), path, error)) {
        g_prefix_error(error, "--passphrase-file: ");
        return FALSE;
    }
    return TRUE;
}

/* Does an --object spec give its secret inline (data=)? One that is no
 * valid secret is refused right after, with no warning needed. */
static gboolean gives_data(const char *spec)
{
    g_autoptr(QsSecret) secret = qs_secret_parse(spec, NULL);
    return secret != NULL && secret->data != NULL;
}

/* A secret on the command line can be read by every local user (ps,
 * /proc/PID/cmdline) while the command runs: say so, once, as qemu's
 * documentation does, and name the safe form. */
static void warn_inline_secret(const char *spec)
{
    static gboolean warned;
    if (warned || !gives_data(spec))
        return;
    warned = TRUE;
    cli_advise("--object secret,data=... puts the secret on the command line, where other users "
               "can read it (ps); give it with file=PATH instead");
}

gboolean cli_secrets_option(int opt, const char *arg, GError **error)
{
    switch (opt) {
    case CLI_OPT_OBJECT:
        warn_inline_secret(arg);
        return vd_secrets_add_object(cli_secrets(), arg, error);
    case CLI_OPT_IMAGE_OPTS:
        image_opts = TRUE;
        return TRUE;
    case CLI_OPT_TARGET_IMAGE_OPTS:
        target_image_opts = TRUE;
        return TRUE;
    case CLI_OPT_PASSPHRASE_FILE:
        return read_passphrase_file(arg, error);
    default:
        return FALSE;
    }
}

typedef char *(*ProtocolNameFunc)(VdOptions *node, GError **error);

/* driver=PROTOCOL (the export or RBD image is the disk) or
 * file.driver=PROTOCOL (an image on one): *path becomes the name the
 * library opens, name_of's reading of the protocol node's options (or its
 * filename=), and the node's keys in open_keys stay open options. FALSE
 * with *path NULL and no error when the options name no such node. */
static gboolean split_protocol_opts(const char *text, const char *protocol,
                                    const char *const *open_keys, ProtocolNameFunc name_of,
                                    char **path, char **format, VdOptions **opts, GError **error)
{
    g_autoptr(VdOptions) all = vd_options_new();
    *path = NULL;
    if (!vd_options_parse(all, text, NULL))
        return FALSE;
    const char *driver = vd_options_get(all, "driver");
    const char *prefix = "";
    if (g_strcmp0(driver, protocol) != 0) {
        if (g_strcmp0(vd_options_get(all, "file.driver"), protocol) != 0)
            return FALSE;
        prefix = "file.";
    }
    g_autoptr(VdOptions) node = vd_options_new();
    *opts = vd_options_new();
    g_autoptr(GPtrArray) keys = vd_options_keys(all);
    gsize n = strlen(prefix);
    for (guint i = 0; i < keys->len; i++) {
        const char *key = keys->pdata[i], *value = vd_options_get(all, key);
        if (g_str_equal(key, "driver") || g_str_equal(key, "file.driver"))
            continue;
        if (*prefix != '\0' && !g_str_has_prefix(key, prefix))
            vd_options_set(*opts, key, value); /* the format's own */
        else if (open_keys != NULL && g_strv_contains(open_keys, key + n))
            vd_options_set(*opts, key + n, value);
        else
            vd_options_set(node, key + n, value);
    }
    const char *name = vd_options_get(node, "filename");
    *path = name != NULL ? g_strdup(name) : name_of(node, error);
    if (*path == NULL)
        return TRUE;
    /* driver=nbd or rbd is the bytes as they are: never probed. */
    *format = g_strdup(*prefix == '\0' ? "raw" : driver);
    return TRUE;
}

gboolean cli_split_image_opts(const char *text, char **path, char **format, VdOptions **opts,
                              GError **error)
{
    g_autoptr(GError) local = NULL;
    /* x-dirty-bitmap is an open option of the image on an export. */
    static const char *const nbd_open_keys[] = { "x-dirty-bitmap", NULL };
    if (split_protocol_opts(text, "nbd", nbd_open_keys, vd_nbd_name_from_options, path, format,
                            opts, error) ||
        split_protocol_opts(text, "rbd", NULL, vd_rbd_name_from_options, path, format, opts, error))
        return *path != NULL;
    g_autoptr(QsImageOpts) parsed = qs_image_opts_parse(text, &local);
    if (parsed == NULL) {
        if (g_error_matches(local, QS_ERROR, QS_ERROR_NO_FILE))
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                        "--image-opts: 'file.filename=PATH' is missing in '%s'", text);
        else
            g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "--image-opts: %s",
                        local->message);
        return FALSE;
    }
    if (parsed->file_driver != NULL && !g_str_equal(parsed->file_driver, "file")) {
        g_set_error(error, VD_ERROR, VD_ERROR_NOT_SUPPORTED,
                    "--image-opts: only local files are supported (file.driver=file)");
        return FALSE;
    }
    *path = g_strdup(parsed->filename);
    *format = g_strdup(parsed->driver);
    *opts = vd_options_new();
    for (guint i = 0; i < parsed->options->len; i++) {
        const QsOption *o = parsed->options->pdata[i];
        /* file.locking=off is the engine's: the file layer's locks. */
        if (g_str_equal(o->key, "driver") || g_str_equal(o->key, "filename") ||
            (g_str_has_prefix(o->key, "file.") && !g_str_equal(o->key, "file.locking")))
            continue;
        vd_options_set(*opts, o->key, o->value);
    }
    return TRUE;
}

/* Read a line from the terminal without echo. Returns NULL when there is
 * no terminal. */
static char *prompt_tty(const char *prompt, gsize *len)
{
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct termios old, quiet;
    gboolean have_termios = tcgetattr(fd, &old) == 0;
    if (!have_termios) {
        close(fd);
        return NULL;
    }
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
    quiet.c_lflag |= ICANON;
    if (write(fd, prompt, strlen(prompt)) < 0) {
        close(fd);
        return NULL;
    }
    tcsetattr(fd, TCSAFLUSH, &quiet);
    char *buf = g_malloc0(4096);
    gsize n = 0;
    while (n + 1 < 4096) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || c == '\n')
            break;
        buf[n++] = c;
    }
    tcsetattr(fd, TCSAFLUSH, &old);
    if (write(fd, "\n", 1) < 0) {
        /* the newline is cosmetic */
    }
    close(fd);
    *len = n;
    return buf;
}

static void wipe(char *p, gsize len)
{
    if (p != NULL) {
        explicit_bzero(p, len);
        g_free(p);
    }
}

static gboolean have_terminal(void) { return isatty(STDIN_FILENO) && isatty(STDERR_FILENO); }

VdImage *cli_open_image_with_keys(const char *path, const char *format, VdOptions *open_opts,
                                  VdOpenFlags flags, GError **error)
{
    g_autoptr(VdImage) img =
        vd_image_open_opts(path, format, flags, open_opts, cli_secrets(), error);
    if (img == NULL || inspect_only || !vd_image_needs_key(img))
        return g_steal_pointer(&img);
    if (!have_terminal()) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%s is encrypted: give its passphrase with --passphrase-file FILE, or with "
                    "--object secret,id=ID,file=FILE and --image-opts "
                    "driver=%s,file.filename=%s,%s=ID",
                    path, vd_image_format(img), path,
                    g_str_equal(vd_image_format(img), "luks") ? "key-secret"
                                                              : "encrypt.key-secret");
        return NULL;
    }
    g_autofree char *prompt = g_strdup_printf("Passphrase for %s: ", path);
    gsize len = 0;
    char *pass = prompt_tty(prompt, &len);
    if (pass == NULL) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT,
                    "%s is encrypted and no passphrase could be read", path);
        return NULL;
    }
    vd_secrets_set_default(cli_secrets(), pass, len);
    wipe(pass, 4096);
    g_clear_pointer(&img, vd_image_unref);
    return vd_image_open_opts(path, format, flags, open_opts, cli_secrets(), error);
}

/* qcow's and qcow2's legacy AES: encrypt.format=aes or its old alias
 * encryption=on. */
static gboolean asks_legacy_aes(const char *format, VdOptions *create_opts)
{
    const char *alias = vd_options_get(create_opts, "encryption");
    if (g_strcmp0(format, "qcow") != 0 && g_strcmp0(format, "qcow2") != 0)
        return FALSE;
    return g_strcmp0(vd_options_get(create_opts, "encrypt.format"), "aes") == 0 ||
           (alias != NULL &&
            g_strv_contains((const char *const[]){ "on", "yes", "true", "1", NULL }, alias));
}

gboolean cli_ensure_new_passphrase(const char *format, VdOptions *create_opts, GError **error)
{
    const char *key = g_strcmp0(format, "luks") == 0 ? "key-secret" : "encrypt.key-secret";
    gboolean aes = asks_legacy_aes(format, create_opts);
    gboolean encrypted = g_strcmp0(format, "luks") == 0 ||
                         vd_options_get(create_opts, "encrypt.format") != NULL || aes;
    /* qemu-img makes these without a word; vdisk says what they are. */
    if (aes)
        cli_advise("legacy AES encryption is weak (the key is the passphrase itself, with no key "
                   "derivation) and kept only for old images: -o encrypt.format=luks is the "
                   "recommended choice");
    if (!encrypted || vd_options_get(create_opts, key) != NULL)
        return TRUE;
    /* A --passphrase-file already gave it. */
    if (vd_secrets_has_default(cli_secrets()))
        return TRUE;
    if (!have_terminal())
        return TRUE; /* the engine says what is missing */
    gsize len1 = 0, len2 = 0;
    char *p1 = prompt_tty("New passphrase: ", &len1);
    char *p2 = p1 != NULL ? prompt_tty("Repeat the passphrase: ", &len2) : NULL;
    gboolean ok = p1 != NULL && p2 != NULL && len1 == len2 && memcmp(p1, p2, len1) == 0;
    if (ok && len1 == 0) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "the passphrase is empty");
        ok = FALSE;
    } else if (!ok) {
        g_set_error(error, VD_ERROR, VD_ERROR_INVALID_ARGUMENT, "the passphrases do not match");
    }
    if (ok)
        vd_secrets_set_default(cli_secrets(), p1, len1);
    wipe(p1, 4096);
    wipe(p2, 4096);
    return ok;
}
