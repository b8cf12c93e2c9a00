/* The qemu-img command lines the shim understands: the ones libvirt 9.0
 * builds for dir/fs/netfs pools and for inactive domains (DESIGN.md, "The
 * libvirt shim"). Parsing only: no file is touched, so the unit tests run
 * it on every form. */
#pragma once

#include <glib.h>

typedef enum {
    SHIM_CMD_NONE, /* no command: usage error */
    SHIM_CMD_CREATE,
    SHIM_CMD_CONVERT,
    SHIM_CMD_RESIZE,
    SHIM_CMD_SNAPSHOT,
    SHIM_CMD_VERSION, /* --version, -V */
    SHIM_CMD_HELP,    /* --help, -h */
    SHIM_CMD_STATUS,  /* --status: is libvirtd using the shim? */
    SHIM_CMD_OTHER,   /* a qemu-img command the shim passes on (info, check...) */
} ShimCommand;

typedef struct {
    char *key;
    char *value; /* "on" for a bare key, as qemu-img reads it */
} ShimOption;

/* One --image-opts / --target-image-opts argument: driver=...,file.filename=... */
typedef struct {
    ShimCommand command;
    char *command_name;
    char *format;         /* -f, or driver= of --image-opts */
    char *out_format;     /* convert -O, or driver= of --target-image-opts */
    char *backing;        /* -b, or -o backing_file= */
    char *backing_format; /* -F, or -o backing_fmt= */
    GPtrArray *options;   /* ShimOption: -o, in order, without backing_* */
    GPtrArray *objects;   /* char *: --object specs */
    char *filename;       /* the image (convert: the source) */
    char *target;         /* convert: the target */
    char *size_text;      /* create/resize SIZE as given, or NULL */
    guint64 size;
    gboolean shrink;    /* resize --shrink */
    gboolean no_create; /* convert -n */
    gboolean image_opts, target_image_opts;
    gboolean quiet;
    char snapshot_op; /* 'c', 'a', 'd', 'l' */
    char *snapshot;
    GHashTable *source_opts, *target_opts; /* parsed --image-opts dicts, or NULL */
    /* The --object secret ids that open the image and the convert -n
     * target (encrypt.key-secret= or key-secret= of their image options). */
    char *source_key, *target_key;
    /* Why vdiskd cannot serve this request as it stands (the shim then
     * passes it to the real qemu-img), or NULL. */
    char *unsupported;
} ShimRequest;

void shim_request_free(ShimRequest *req);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ShimRequest, shim_request_free)

/* Parse argv (argv[0] is the program) into a request. NULL with a message
 * in qemu-img's words (G_OPTION_ERROR) on a command line qemu-img would
 * refuse. */
ShimRequest *shim_parse_args(int argc, char **argv, GError **error);

/* Split a qemu option string ("a=1,b=x,,y,c") into ShimOptions: ",," is a
 * literal comma, a key without "=" has the value "on". Appends to out. */
gboolean shim_parse_option_string(const char *text, GPtrArray *out, GError **error);

/* qemu-img's size syntax: bytes, or a number with k/K, M, G, T, P, E
 * (binary multiples); a trailing "B"/"b" is bytes. No sign. */
gboolean shim_parse_size(const char *text, guint64 *size, GError **error);

/* An empty array of ShimOption, owning them. */
GPtrArray *shim_options_new(void);

/* The value of key in options, or NULL. */
const char *shim_option_get(GPtrArray *options, const char *key);
