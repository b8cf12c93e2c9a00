/* qemu's command-line syntax, read once for every vdisk front end: option
 * lists ("-o a=1,b=x,,y,flag"), sizes ("20G", "1.5M"), secret objects
 * ("--object secret,id=ID,file=PATH") and --image-opts strings
 * ("driver=qcow2,file.filename=PATH,encrypt.key-secret=ID").
 *
 * A library of its own rather than part of libvdisk's public API: it is
 * syntax, not images. libvdisk builds its typed options (VdOptions,
 * vd_parse_size, vd_secrets_add_object) on it, and the shim's parser and
 * vdiskctl use it directly; it needs GLib only, so the shim's parser and
 * its unit tests do not pull in the engine. Errors are in QS_ERROR with a
 * neutral message that each front end may word its own way (the shim
 * speaks qemu-img's words, vdisk its own). */
#pragma once

#include <glib.h>

#define QS_ERROR (qs_error_quark())
GQuark qs_error_quark(void);

typedef enum {
    QS_ERROR_INVALID,     /* not the syntax of a size, option list or object */
    QS_ERROR_UNSUPPORTED, /* valid for qemu, not for vdisk (an object that is no secret) */
    QS_ERROR_NOT_FOUND,   /* a secret's file does not exist */
    QS_ERROR_IO,          /* a secret's file cannot be read */
    QS_ERROR_NO_FILE,     /* an --image-opts string that names no file */
} QsError;

/* ---- option lists ---- */

typedef struct {
    char *key;
    char *value; /* "on" for a bare key, as qemu reads it */
} QsOption;

/* An empty array of QsOption that owns them. */
GPtrArray *qs_options_new(void);

/* Split text ("a=1,b=x,,y,flag") into QsOptions appended to out, in order
 * (a key given twice is there twice; qs_options_get takes the last): ",,"
 * is a literal comma, a key without "=" has the value "on", a trailing
 * comma ends the list. QS_ERROR_INVALID for an option without a name
 * ("=x") or an empty one (",x"), as qemu refuses them. */
gboolean qs_options_parse(const char *text, GPtrArray *out, GError **error);

/* The value of the last option named key in options (may be NULL), or NULL.
 * Borrowed from options. */
const char *qs_options_get(GPtrArray *options, const char *key);

/* ---- sizes ---- */

/* qemu's size syntax: a number of bytes, or a number with one suffix of
 * B, K, M, G, T, P or E (either case; powers of 1024), a fraction allowed
 * where it makes a whole number of bytes ("1.5K"). No sign, no spaces.
 * QS_ERROR_INVALID, with the message "invalid size 'TEXT': ...", for
 * anything else or a size past 2^64 - 1. */
gboolean qs_parse_size(const char *text, guint64 *size, GError **error);

/* ---- secret objects ---- */

typedef struct {
    char *id;
    char *file;      /* file=PATH, or NULL */
    char *data;      /* data=TEXT, or NULL; wiped when freed */
    gboolean base64; /* format=base64 (else raw) */
} QsSecret;

/* Parse one --object definition: "secret,id=ID,file=PATH" or
 * "secret,id=ID,data=TEXT", each with an optional ",format=raw|base64";
 * "qom-type=secret" may stand for the leading "secret", which may also be
 * left out (vdisk always took it so). Nothing is read.
 * Returns a new QsSecret (free with qs_secret_free), or NULL with
 * QS_ERROR_UNSUPPORTED for an object of another type and
 * QS_ERROR_INVALID for a malformed secret (no id, both or neither of file
 * and data, an unknown property or format). No message contains data's
 * value. */
QsSecret *qs_secret_parse(const char *spec, GError **error);
void qs_secret_free(QsSecret *secret);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(QsSecret, qs_secret_free)

/* The largest secret file read: a passphrase, not a disk (qemu reads any
 * size; a bound keeps a wrong file= from filling memory). */
#define QS_SECRET_FILE_MAX (1u << 20)

/* Reads fd into buf until its end or until cap bytes are in (a file of
 * more than cap bytes then shows as exactly cap), going on after EINTR.
 * Returns the bytes read; *err is the errno of a failed read, else 0. The
 * one reader of secret files, for buffers in plain or secure memory. */
gsize qs_read_bounded(int fd, void *buf, gsize cap, int *err);

/* specs (char *): --object definitions. Parses each, reads its file with
 * the caller's rights and decodes it; returns a floating a{say} (id to
 * bytes: the secrets option of vdiskd's methods), or NULL with an error
 * that names the secret at fault by its id. Every copy of a secret made
 * on the way is wiped. */
GVariant *qs_secrets_variant(GPtrArray *specs, GError **error);

/* ---- json: image names ---- */

/* qemu's "json:{...}" image name as the --image-opts text of the same
 * options ("driver=qcow2,file.filename=d.qcow2"; list items numbered,
 * "inject-error.0.event=..."). NULL with QS_ERROR_INVALID when name is no
 * such JSON object. */
char *qs_json_filename_options(const char *name, GError **error);

/* ---- --image-opts ---- */

typedef struct {
    char *filename;     /* file.filename= or filename= */
    char *driver;       /* driver=, or NULL */
    char *file_driver;  /* file.driver=, or NULL */
    char *key_secret;   /* encrypt.key-secret= or key-secret=, or NULL */
    GPtrArray *options; /* QsOption: every option, in order, the above too */
} QsImageOpts;

/* Parse an --image-opts argument. NULL with QS_ERROR_INVALID when it is
 * no option list, QS_ERROR_NO_FILE when it names no file (neither
 * file.filename= nor filename=). */
QsImageOpts *qs_image_opts_parse(const char *text, GError **error);
void qs_image_opts_free(QsImageOpts *opts);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(QsImageOpts, qs_image_opts_free)
