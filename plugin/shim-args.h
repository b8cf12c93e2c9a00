/* The qemu-img command lines the shim understands: the ones libvirt 9.0
 * builds for dir/fs/netfs pools and for inactive domains (DESIGN.md, "The
 * libvirt shim"). Parsing only: no file is touched, so the unit tests run
 * it on every form. */
#pragma once

#include <glib.h>

#include "qemu-syntax.h"

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
    ShimCommand command;
    char *command_name;
    char *format;         /* -f, or driver= of --image-opts */
    char *out_format;     /* convert -O, or driver= of --target-image-opts */
    char *backing;        /* -b, or -o backing_file= */
    char *backing_format; /* -F, or -o backing_fmt= */
    GPtrArray *options;   /* QsOption: -o, in order, without backing_* */
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
    /* --image-opts and --target-image-opts (driver=...,file.filename=...), or NULL */
    QsImageOpts *source_opts, *target_opts;
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
