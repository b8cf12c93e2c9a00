/* libvdisk: the public image API.
 *
 * One generic handle (VdImage) over every format. Offsets and lengths are
 * guest bytes. Every function that can fail returns FALSE/NULL and sets a
 * GError in VD_ERROR whose message names the file and the problem.
 */
#pragma once

#include <gio/gio.h>
#include <glib.h>

G_BEGIN_DECLS

#define VD_ERROR (vd_error_quark())
GQuark vd_error_quark(void);

typedef enum {
    VD_ERROR_FAILED,
    VD_ERROR_IO,                 /* a read, write or sync failed */
    VD_ERROR_NOT_SUPPORTED,      /* the format cannot do this */
    VD_ERROR_UNSUPPORTED_FORMAT, /* unknown format or feature */
    VD_ERROR_CORRUPT,            /* the image contradicts its format */
    VD_ERROR_INVALID_ARGUMENT,
    VD_ERROR_NOT_FOUND,
    VD_ERROR_EXISTS,
    VD_ERROR_BUSY,
    VD_ERROR_CANCELLED,
    VD_ERROR_NO_SPACE, /* shrinking would lose data, or the disk is full */
} VdError;

typedef enum {
    VD_OPEN_READ_WRITE = 1 << 0,
    VD_OPEN_NO_BACKING = 1 << 1, /* do not open backing files */
    /* Open even with a dirty flag or unknown autoclear bits (check, repair). */
    VD_OPEN_FOR_CHECK = 1 << 2,
    /* Refuse images that name other files (vmdk extents, qcow2 data files,
     * backing files): for descriptors from a less trusted caller, whose
     * names must not be opened with the opener's rights. */
    VD_OPEN_NO_RELATED_FILES = 1 << 3,
    /* Image locking, as QEMU's: every file an open touches is locked so
     * that a process writing it (a running VM, qemu-nbd, another vdisk)
     * and vdisk refuse each other (VD_ERROR_BUSY). FORCE_SHARE reads an
     * image even while another process writes it (qemu-img -U); read-only
     * opens only. NO_LOCKING takes and checks no locks (locking=off).
     * BACKING_SHARE_WRITE lets the backing chain be written through another
     * handle (a commit writing its base). */
    VD_OPEN_FORCE_SHARE = 1 << 4,
    VD_OPEN_NO_LOCKING = 1 << 5,
    VD_OPEN_BACKING_SHARE_WRITE = 1 << 6,
    /* Cache modes (qemu's -t CACHE). By default everything written is on
     * stable storage once a flush returns. NO_FLUSH never waits for the
     * disk (cache=unsafe); WRITETHROUGH also flushes after every write
     * (cache=writethrough). */
    VD_OPEN_NO_FLUSH = 1 << 8,
    VD_OPEN_WRITETHROUGH = 1 << 9,
    /* The image's format was probed, not named, and is raw: as in qemu, a
     * write that would make its first bytes probe as another format is
     * refused ("Operation not permitted"). Set by the open of a backing
     * file without a format; a caller reopening such a file sets it. */
    VD_OPEN_PROBED_RAW = 1 << 10,
} VdOpenFlags;

typedef struct VdImage VdImage;

/* Block status flags, as qemu-img map reports them. */
typedef enum {
    VD_BLOCK_DATA = 1 << 0,         /* reads come from stored data */
    VD_BLOCK_ZERO = 1 << 1,         /* reads return zeroes */
    VD_BLOCK_ALLOCATED = 1 << 2,    /* the answer comes from some layer ("present") */
    VD_BLOCK_OFFSET_VALID = 1 << 3, /* host_offset says where the data lies */
    VD_BLOCK_COMPRESSED = 1 << 4,
} VdBlockFlags;

typedef struct {
    guint64 length;      /* bytes from the asked offset with this status */
    guint32 flags;       /* VdBlockFlags */
    guint depth;         /* layer that answered: 0 = this image */
    guint64 host_offset; /* with VD_BLOCK_OFFSET_VALID */
    VdImage *layer;      /* the layer that answered (borrowed); NULL if none */
    /* With VD_BLOCK_OFFSET_VALID: the file host_offset lies in, named as
     * qemu-img map names it (borrowed). */
    const char *host_name;
} VdBlockStatus;

typedef struct {
    char *id;
    char *name;
    guint64 vm_state_size;
    guint32 date_sec;
    guint32 date_nsec;
    guint64 vm_clock_nsec;
    guint64 icount; /* G_MAXUINT64 when unknown */
} VdSnapshotInfo;

void vd_snapshot_info_free(VdSnapshotInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VdSnapshotInfo, vd_snapshot_info_free)

typedef struct {
    char *filename;
    const char *format;
    guint64 virtual_size;
    gint64 actual_size;   /* bytes the file occupies on disk; -1 unknown */
    guint32 cluster_size; /* 0 when the format has none */
    gboolean encrypted;
    gboolean dirty;
    char *backing_filename;      /* as stored in the image */
    char *full_backing_filename; /* resolved */
    char *backing_format;
    GPtrArray *snapshots;      /* of VdSnapshotInfo */
    GVariant *format_specific; /* a{sv} with qemu-img's key names, or NULL */
} VdImageInfo;

void vd_image_info_free(VdImageInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VdImageInfo, vd_image_info_free)

/* Key=value create options in qemu-img's -o syntax. */
typedef struct VdOptions VdOptions;
VdOptions *vd_options_new(void);
void vd_options_free(VdOptions *opts);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VdOptions, vd_options_free)
/* Parse "a=1,b=x,,y" (",," is a literal comma) and add to opts. */
gboolean vd_options_parse(VdOptions *opts, const char *text, GError **error);
void vd_options_set(VdOptions *opts, const char *key, const char *value);
const char *vd_options_get(VdOptions *opts, const char *key);
/* Sorted list of the keys that are set (free the container only). */
GPtrArray *vd_options_keys(VdOptions *opts);

/* Parse a size with an optional K/M/G/T/P/E suffix (powers of 1024, like
 * qemu-img) or a plain byte count. */
gboolean vd_parse_size(const char *text, guint64 *out, GError **error);

/* Where a file named inside an image (a backing file, an extent) lies:
 * name resolved against the image's folder. Returns a new string. */
char *vd_resolve_relative(const char *image_filename, const char *name);

/* fsync the folder holding path, so a file just created (or renamed)
 * there survives a power cut under its name. */
gboolean vd_sync_parent_dir(const char *path, GError **error);
/* Give oldname (relative to olddirfd) the name newname (relative to
 * newdirfd) without ever replacing a file that has that name:
 * renameat2(RENAME_NOREPLACE), or where the file system lacks it a hard
 * link and an unlink. 0, or -1 with errno set (EEXIST when the name is
 * taken). */
int vd_rename_noreplace(int olddirfd, const char *oldname, int newdirfd, const char *newname);

/* Format names this build knows, NULL-terminated, static. */
const char *const *vd_formats(void);
gboolean vd_format_known(const char *format);
/* The format a file name suggests ("disk.vdi" -> "vdi"), or NULL. */
const char *vd_format_from_extension(const char *filename);
/* The create options a format takes, NULL-terminated, static. */
const char *const *vd_format_create_options(const char *format);

/* One create option of a format, as qemu-img describes it. */
typedef enum {
    VD_OPTION_STRING,
    VD_OPTION_BOOL,
    VD_OPTION_SIZE,   /* bytes, with qemu's suffixes */
    VD_OPTION_NUMBER, /* an integer (qemu reads 0x and 0 prefixes) */
} VdOptionType;

typedef struct {
    const char *name;
    VdOptionType type;
    /* What qemu-img's "Formatting" line shows when the option is not
     * given, or NULL: not shown. */
    const char *shown_default;
    const char *help; /* qemu-img's description */
    /* An option of the image file rather than of the format (raw's
     * preallocation is qemu's file layer's): '-o help' without a file
     * name leaves it out, as qemu-img does. */
    gboolean file_level;
} VdCreateOption;

/* The create options of format in the order qemu-img's "Formatting" line
 * lists them, "size" included; ends with an entry whose name is NULL.
 * Static; NULL for an unknown format. */
const VdCreateOption *vd_format_create_option_table(const char *format);
/* The options of the image file itself that every format takes (nocow,
 * extent_size_hint); ends with an entry whose name is NULL. */
const VdCreateOption *vd_file_create_option_table(void);
/* qemu-img create's "Formatting 'PATH', fmt=FMT ..." line (without the
 * newline): every option of the format that opts sets or that has a shown
 * default, in the format's order, sizes and numbers in bytes as qemu-img
 * prints them; keys the format does not know follow. Free with g_free. */
char *vd_format_describe_create(const char *path, const char *format, guint64 size,
                                VdOptions *opts);

/* ----- secrets for encrypted images -----
 * A small store of named secrets (passphrases), as qemu-img's
 * "--object secret,id=ID,file=PATH" defines them; options name them by id
 * ("encrypt.key-secret=ID" for qcow2 and qcow, "key-secret=ID" for luks).
 * Values are wiped from memory when the store is freed and never appear
 * in error messages or core dumps. */
typedef struct VdSecrets VdSecrets;
VdSecrets *vd_secrets_new(void);
void vd_secrets_free(VdSecrets *secrets);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VdSecrets, vd_secrets_free)
/* Add (or replace) secret id with a copy of len bytes of data. */
void vd_secrets_add(VdSecrets *secrets, const char *id, const void *data, gsize len);
/* Add a secret from qemu's object syntax: "secret,id=ID,file=PATH" or
 * "secret,id=ID,data=TEXT", optionally ",format=base64" (or "raw"). The
 * leading "secret," may be left out. */
gboolean vd_secrets_add_object(VdSecrets *secrets, const char *spec, GError **error);
/* The bytes of secret id (borrowed) or NULL. */
const guint8 *vd_secrets_lookup(VdSecrets *secrets, const char *id, gsize *len);
/* A passphrase used when an encrypted image names no secret (from
 * --passphrase-file or a prompt). */
void vd_secrets_set_default(VdSecrets *secrets, const void *data, gsize len);
/* The same from a passphrase file (--passphrase-file): its bytes, less one
 * trailing newline, read straight into the store's memory. */
gboolean vd_secrets_set_default_from_file(VdSecrets *secrets, const char *path, GError **error);
gboolean vd_secrets_has_default(VdSecrets *secrets);

/* Open an image. format NULL probes. With VD_OPEN_NO_BACKING the backing
 * chain is left closed (block status then reports unallocated ranges).
 * Returns a new reference. */
VdImage *vd_image_open(const char *path, const char *format, VdOpenFlags flags, GError **error);
/* Same, on a descriptor the caller opened; the image dups it. name is used in
 * messages and to resolve relative backing names (may be NULL). */
VdImage *vd_image_open_fd(int fd, const char *name, const char *format, VdOpenFlags flags,
                          GError **error);
/* Open the image on an NBD export, over sock, a stream socket connected
 * to the server by the caller (vdiskd gets it from a client, and has no
 * network of its own); the NBD handshake asks for export_name (NULL or ""
 * the default export). sock is dup'ed: the caller still closes its own.
 * format NULL probes (raw unless the export holds an image). Messages
 * name the export "NBD export 'NAME' on fd N". Fails with
 * VD_ERROR_NOT_SUPPORTED in a build without libnbd, VD_ERROR_IO when the
 * handshake fails, VD_ERROR_INVALID_ARGUMENT for writing a read-only
 * export. Paths given to vd_image_open and the other opens may be NBD
 * names too: nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH,
 * nbd:HOST:PORT[:exportname=E], nbd:unix:PATH[:exportname=E]. Returns a
 * new reference. */
VdImage *vd_image_open_nbd_socket(int sock, const char *export_name, const char *format,
                                  VdOpenFlags flags, GError **error);
/* Does name look like an NBD export's (nbd://, nbd+unix://, nbds://,
 * qemu's nbd:HOST:PORT and nbd:unix:PATH)? Such a name is never a path:
 * the opens take it as the export. */
gboolean vd_nbd_is_name(const char *name);
/* qemu's --image-opts driver=nbd options (server.type=unix with
 * server.path, or server.type=inet with server.host and server.port;
 * export) as the export's name, nbd+unix:///EXPORT?socket=PATH or
 * nbd://HOST:PORT/EXPORT. Free with g_free; NULL with
 * VD_ERROR_INVALID_ARGUMENT when they name no server. */
char *vd_nbd_name_from_options(VdOptions *opts, GError **error);
/* Does name look like a Ceph RBD image's (qemu's rbd:POOL/IMAGE[@SNAP]
 * [:conf=PATH][:id=USER][:KEY=VALUE...])? Such a name is never a path:
 * the opens take it as the image, through librbd (VD_ERROR_NOT_SUPPORTED
 * in a build without it), and creating one makes the RBD image. */
gboolean vd_rbd_is_name(const char *name);
/* qemu's --image-opts driver=rbd options (pool, image, namespace,
 * snapshot, conf, user) as the image's rbd: name. Free with g_free; NULL
 * with VD_ERROR_INVALID_ARGUMENT without pool or image. */
char *vd_rbd_name_from_options(VdOptions *opts, GError **error);
/* The format probing would pick for path ("ova" for an OVA appliance);
 * *fell_back_to_raw is set when nothing matched and it settled on raw. */
const char *vd_probe_file(const char *path, gboolean *fell_back_to_raw, GError **error);
/* Same, on a descriptor (dup'ed; its offset is left alone), reading only
 * the first bytes: no table is parsed and no other file opened. */
const char *vd_probe_fd(int fd, const char *name, gboolean *fell_back_to_raw, GError **error);

/* What a file that probed as raw (no format claimed it) looks like. */
typedef enum {
    VD_RAW_DISK,           /* nothing says it is not a disk; devices always */
    VD_RAW_EMPTY,          /* 0 bytes */
    VD_RAW_TOO_SMALL,      /* less than one 512-byte sector */
    VD_RAW_PARTIAL_SECTOR, /* not a whole number of 512-byte sectors */
    VD_RAW_VBOX_SETTINGS,  /* a VirtualBox VM's .vbox */
    VD_RAW_OVF,            /* an OVF descriptor */
    VD_RAW_VMX,            /* a VMware VM's .vmx */
    VD_RAW_XML,            /* another XML document */
    VD_RAW_TEXT,           /* other text: UTF-8 without control characters */
} VdRawKind;
/* Sets *kind for the file fd reads (read at offsets from its first 4 KiB;
 * its offset is left alone). A regular file is a disk when it is a whole
 * number of sectors and its first 4 KiB are not text; text is named by
 * what it looks like before its size is considered. Fails only when fd
 * cannot be read (VD_ERROR_IO, naming name). */
gboolean vd_raw_kind_fd(int fd, const char *name, VdRawKind *kind, GError **error);
/* A phrase for kind: "a VirtualBox VM's settings (.vbox)". Static. */
const char *vd_raw_kind_describe(VdRawKind kind);
/* TRUE when fd looks like a disk; otherwise FALSE with
 * VD_ERROR_UNSUPPORTED_FORMAT "NAME looks like ..., not a disk" (callers
 * add what to do instead). kind (may be NULL) gets what it looks like.
 * For a source whose format was probed, never one the caller named. */
gboolean vd_raw_check_fd(int fd, const char *name, VdRawKind *kind, GError **error);
/* Open with qemu's --image-opts style options (open_opts may be NULL:
 * "encrypt.key-secret=ID" for qcow2/qcow, "key-secret=ID" for luks) and
 * the secrets they name (may be NULL). The backing chain gets the same.
 * An encrypted image opened without any key opens for inspection only:
 * reading or writing its data fails (see vd_image_needs_key). A wrong
 * passphrase fails with "no key slot matches the passphrase".
 * "backing=FILE" (and "backing-format=FMT") names the top image's parent
 * explicitly, over what its header says or a differencing VDI's search;
 * "backing.backing=FILE" (and "backing.backing-format") names the parent's
 * parent, and so on down the chain. A relative FILE is relative to the
 * folder of the image whose parent it names. */
VdImage *vd_image_open_opts(const char *path, const char *format, VdOpenFlags flags,
                            VdOptions *open_opts, VdSecrets *secrets, GError **error);
/* QEMU's blkdebug error-injection driver (blkdebug.h): when options (the
 * text of --image-opts, or of a json: name's options) put a blkdebug node
 * into the image ("driver=blkdebug,image.driver=qcow2,image.file.filename=
 * d.qcow2,inject-error.0.event=none"), open that image into *img;
 * otherwise leave *img NULL and return TRUE. format is the caller's where
 * the options name none. "blkdebug:CONFIG:FILE" names and json: names
 * need no such call: every open takes them. */
gboolean vd_image_open_blkdebug(const char *options, const char *format, VdOpenFlags flags,
                                VdSecrets *secrets, VdImage **img, GError **error);
/* An image that is no file, opened from its options alone: format names
 * such a driver ("null-co"; see vd_format_is_fileless), name is what
 * messages and info call it. Fails with VD_ERROR_UNSUPPORTED_FORMAT when
 * format is no such driver, and as the driver says for bad options. */
VdImage *vd_image_open_fileless(const char *format, const char *name, VdOpenFlags flags,
                                VdOptions *open_opts, GError **error);
/* Does format name a driver whose images are no file (null-co)? */
gboolean vd_format_is_fileless(const char *format);
/* Same, on a descriptor the caller opened (as vd_image_open_fd). */
VdImage *vd_image_open_fd_opts(int fd, const char *name, const char *format, VdOpenFlags flags,
                               VdOptions *open_opts, VdSecrets *secrets, GError **error);

/* Where the files an image names may be: vdiskd's pools. Every name an
 * image carries (backing files down the whole chain, a qcow2 data file,
 * vmdk extents, a differencing VDI's parent) is opened beneath dirfd only —
 * openat2() with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
 * (a component-by-component O_NOFOLLOW walk where the kernel lacks openat2),
 * O_NONBLOCK so that a FIFO cannot block, and it must be a regular file.
 * A relative name is taken relative to the naming image's folder inside
 * dirfd; an absolute name must lie under dir_path ("/srv/pool/x" with
 * dir_path "/srv/pool" is "x" beneath dirfd), anything else is refused:
 * "pool/vm.qcow2: data file /etc/shadow lies outside /srv/pool". No path is
 * ever passed to realpath() or open() by name. max_metadata (0: the
 * formats' own bounds) caps the bytes of metadata tables (L1/refcount
 * tables, VDI block maps, vmdk grain directories, ...) one open may read into
 * memory, for images parsed on behalf of unprivileged callers; beyond it the
 * open fails with VD_ERROR_NOT_SUPPORTED naming the table and the limit. */
typedef struct {
    int dirfd;
    const char *dir_path; /* canonical, for absolute names and messages */
    guint64 max_metadata;
    /* Where set, files beneath the folder are opened by asking this
     * function instead of opening them beneath dirfd (vdisk-worker, which
     * may open no file itself, asks vdiskd, which holds the folder). rel is
     * a name beneath the folder, flags O_RDONLY | O_CLOEXEC | O_NOCTTY |
     * O_NONBLOCK, with O_DIRECTORY for a folder; the answer is a new
     * descriptor, or -1 with errno (EXDEV: outside the folder, ELOOP: a
     * symbolic link on the way, ENODEV: not a regular file, EACCES:
     * writing refused). */
    int (*open_beneath)(const char *rel, int flags, gpointer data);
    gpointer open_data;
} VdConfinement;

/* vd_image_open_fd_opts, with every other file resolved as confine says.
 * name is the image's own name relative to dirfd ("vm.qcow2"); messages
 * name it as dir_path/name. confine is used during the call only: the
 * caller keeps dirfd. Returns a new reference. */
VdImage *vd_image_open_fd_confined(int fd, const char *name, const char *format, VdOpenFlags flags,
                                   VdOptions *open_opts, VdSecrets *secrets,
                                   const VdConfinement *confine, GError **error);
/* TRUE when img or its backing chain is encrypted and was opened without
 * its key. */
gboolean vd_image_needs_key(VdImage *img);
/* TRUE when img's data is encrypted. */
gboolean vd_image_is_encrypted(VdImage *img);

/* OVA appliances (a tar of an .ovf and its disks): is path one, which
 * disks does it hold (char* member names), and open disk index (0-based;
 * -1 asks for the only one) read-only, in place. vd_image_open with no
 * format opens an OVA's only disk too. */
gboolean vd_is_ova(const char *path);
GPtrArray *vd_ova_list_disks(const char *path, GError **error);
VdImage *vd_image_open_ova(const char *path, int index, GError **error);
/* The same on a descriptor of the appliance (dup'ed), as vdisk-worker
 * gets it: disk index (-1: the only one) opened read-only, naming no
 * other file (VD_OPEN_NO_RELATED_FILES), its metadata tables bounded by
 * max_metadata bytes (0: the formats' own bounds); name labels messages
 * ("NAME:MEMBER"). VD_ERROR_UNSUPPORTED_FORMAT when fd is no appliance. */
VdImage *vd_image_open_ova_fd(int fd, const char *name, int index, guint64 max_metadata,
                              GError **error);
/* The appliance's .ovf descriptor (the first member named *.ovf), NUL
 * terminated, its length in *len. Returns a new string. */
char *vd_ova_read_descriptor(const char *path, gsize *len, GError **error);

/* The other files img itself opened, besides its backing chain (a split
 * vmdk's extents, a qcow2's external data file), each as the image names
 * it (relative to its own folder, or absolute), in the order opened.
 * Returns a new array of new strings, empty when there are none. */
GPtrArray *vd_image_related_files(VdImage *img);

VdImage *vd_image_ref(VdImage *img);
void vd_image_unref(VdImage *img);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VdImage, vd_image_unref)

/* Create (or truncate) path as an empty image of format and size. Size 0
 * with a backing_file option takes the backing file's size. Returns once
 * the image and its entry in the folder are on stable storage. */
gboolean vd_image_create(const char *path, const char *format, guint64 size, VdOptions *opts,
                         GError **error);
/* Same, with the secrets that encryption options name
 * ("encrypt.key-secret=ID"); secrets may be NULL. */
gboolean vd_image_create_with_secrets(const char *path, const char *format, guint64 size,
                                      VdOptions *opts, VdSecrets *secrets, GError **error);
/* Same, without opening the backing file the options name (qemu-img
 * create -u): it is stored as given, with the backing format if one is
 * given; size is not taken from it. */
gboolean vd_image_create_unsafe(const char *path, const char *format, guint64 size, VdOptions *opts,
                                VdSecrets *secrets, GError **error);

/* Same, into a descriptor the caller opened for reading and writing (the
 * image dups it; the file is truncated first). name is used in messages and
 * to resolve a relative backing file (may be NULL). On failure the file is
 * left empty. The file is synced; its folder entry is the caller's to sync. */
gboolean vd_image_create_fd(int fd, const char *name, const char *format, guint64 size,
                            VdOptions *opts, GError **error);
/* Same, with the secrets that encryption options name; secrets may be NULL. */
gboolean vd_image_create_fd_with_secrets(int fd, const char *name, const char *format, guint64 size,
                                         VdOptions *opts, VdSecrets *secrets, GError **error);
/* Same, with the backing file the options name (and every file it names
 * in turn) opened as confine says (see VdConfinement): beneath its folder,
 * relative to the new image's folder there. name is the new image's name
 * relative to dirfd; messages name it as dir_path/name. */
gboolean vd_image_create_fd_confined(int fd, const char *name, const char *format, guint64 size,
                                     VdOptions *opts, VdSecrets *secrets,
                                     const VdConfinement *confine, GError **error);

const char *vd_image_format(VdImage *img);
const char *vd_image_filename(VdImage *img);
guint64 vd_image_size(VdImage *img);
/* The opened backing image (borrowed) or NULL. */
VdImage *vd_image_backing(VdImage *img);
/* Allocation granularity, e.g. the qcow2 cluster size; 0 when none. */
guint32 vd_image_cluster_size(VdImage *img);
gboolean vd_image_can_write_compressed(VdImage *img);
/* TRUE when a freshly created image reads as zeroes everywhere, so a copy
 * may leave zero ranges unwritten. */
gboolean vd_image_has_zero_init(VdImage *img);
/* TRUE when writes must come in ascending order (streamOptimized vmdk). */
gboolean vd_image_needs_sequential_writes(VdImage *img);

gboolean vd_image_read(VdImage *img, guint64 offset, void *buf, gsize len, GError **error);
gboolean vd_image_write(VdImage *img, guint64 offset, const void *buf, gsize len, GError **error);
/* Make a range read as zeroes; may_unmap lets the format free its storage. */
gboolean vd_image_write_zeroes(VdImage *img, guint64 offset, guint64 len, gboolean may_unmap,
                               GError **error);
/* Drop a range; afterwards it reads as zero or as the backing file. */
gboolean vd_image_discard(VdImage *img, guint64 offset, guint64 len, GError **error);
/* Drop everything img (open for writing) holds, so that it reads through
 * to its backing file, and flush (what qemu-img commit does to the
 * overlay afterwards). Where the format's way of doing it fails part-way
 * (qcow2 rebuilds its tables in place), the handle writes nothing more. */
gboolean vd_image_make_empty(VdImage *img, GError **error);
/* Write one whole cluster compressed (offset cluster aligned; len a cluster,
 * or less for the image's last cluster). Falls back to a plain write when
 * compression does not help. */
gboolean vd_image_write_compressed(VdImage *img, guint64 offset, const void *buf, gsize len,
                                   GError **error);
/* Compress one cluster the way this image stores it; thread safe. Returns
 * the compressed length, or 0 when the result would not be smaller. */
gsize vd_image_compress(VdImage *img, const void *in, gsize len, void *out, gsize out_len);
/* Store a cluster that vd_image_compress produced. */
gboolean vd_image_write_precompressed(VdImage *img, guint64 offset, const void *data, gsize len,
                                      GError **error);
/* Write cached metadata back and wait until the file is on stable storage. */
gboolean vd_image_flush(VdImage *img, GError **error);
/* Write cached metadata back to the file, without waiting for the disk. */
gboolean vd_image_write_back(VdImage *img, GError **error);

/* Status of [offset, offset+len). With through_chain, unallocated ranges of
 * this layer are answered by the backing chain (depth > 0). out->length > 0
 * on success. */
gboolean vd_image_block_status(VdImage *img, guint64 offset, guint64 len, gboolean through_chain,
                               VdBlockStatus *out, GError **error);

/* Whether img is raw by probing (VD_OPEN_PROBED_RAW), not by name. */
gboolean vd_image_format_probed(VdImage *img);

/* Describe the image. Returns a new VdImageInfo. */
VdImageInfo *vd_image_get_info(VdImage *img, GError **error);

/* Change the virtual size. Shrinking needs allow_shrink, and formats refuse
 * it with VD_ERROR_NO_SPACE when data would be lost... unless it is raw. */
gboolean vd_image_resize(VdImage *img, guint64 new_size, gboolean allow_shrink, GError **error);

/* How the range a resize adds is allocated (qemu-img resize
 * --preallocation): not at all, in the format's tables only (qcow2), in
 * the file system too, or written. */
typedef enum {
    VD_PREALLOC_OFF,
    VD_PREALLOC_METADATA,
    VD_PREALLOC_FALLOC,
    VD_PREALLOC_FULL,
} VdPreallocation;

/* vd_image_resize with the grown range preallocated as prealloc says.
 * Shrinking with a mode other than VD_PREALLOC_OFF is refused
 * (VD_ERROR_INVALID_ARGUMENT), and so is a mode the format cannot do
 * (VD_ERROR_NOT_SUPPORTED), before anything changes. */
gboolean vd_image_resize_preallocated(VdImage *img, guint64 new_size, gboolean allow_shrink,
                                      VdPreallocation prealloc, GError **error);

/* Change options of an existing image as qemu-img amend does: for qcow2
 * "compat", "lazy_refcounts", "refcount_bits", "data_file",
 * "data_file_raw" (off) and "size"; and the LUKS key slots of encrypted
 * qcow2 and luks images ("encrypt.keyslot", "encrypt.state",
 * "encrypt.new-secret", "encrypt.old-secret", "encrypt.iter-time";
 * without "encrypt." for luks). Options it cannot change are refused in
 * qemu-img's words, before anything changes. img must be open read-write
 * (with its key, for the key slots). */
gboolean vd_image_amend(VdImage *img, VdOptions *opts, VdSecrets *secrets, GError **error);

/* ----- consistency check ----- */
typedef enum {
    VD_CHECK_REPAIR_NONE = 0,
    VD_CHECK_REPAIR_LEAKS = 1 << 0,
    VD_CHECK_REPAIR_ERRORS = 1 << 1,
} VdCheckRepair;

typedef struct {
    guint64 corruptions;
    guint64 leaks;
    guint64 check_errors;
    guint64 corruptions_fixed;
    guint64 leaks_fixed;
    guint64 image_end_offset;
    guint64 total_clusters;
    guint64 allocated_clusters;
    guint64 fragmented_clusters;
    guint64 compressed_clusters;
    GPtrArray *messages; /* char*: one per problem found */
} VdCheckResult;

void vd_check_result_clear(VdCheckResult *res);
/* FALSE with VD_ERROR_NOT_SUPPORTED for formats without a check. */
gboolean vd_image_check(VdImage *img, VdCheckRepair repair, VdCheckResult *res, GError **error);

/* ----- internal snapshots ----- */
GPtrArray *vd_image_list_snapshots(VdImage *img, GError **error); /* of VdSnapshotInfo */
/* Names need not be unique: a name that exists gives a second snapshot of
 * that name, as in qemu. Apply and load take the snapshot of that id, else
 * the first of that name; delete the first of that name, else that id. */
gboolean vd_image_create_snapshot(VdImage *img, const char *name, GError **error);
gboolean vd_image_apply_snapshot(VdImage *img, const char *name_or_id, GError **error);
gboolean vd_image_delete_snapshot(VdImage *img, const char *name_or_id, GError **error);
/* Make img read-only and show the content of a snapshot from now on. */
gboolean vd_image_load_snapshot(VdImage *img, const char *name_or_id, GError **error);

/* ----- the copy engine ----- */
typedef void (*VdProgressFunc)(guint64 done, guint64 total, gpointer user_data);

/* vd_image_amend, telling progress (may be NULL) of the long amends (a
 * qcow2 downgrade, by L1 entries), from the calling thread. force is
 * qemu-img amend's --force: LUKS key slots may then be overwritten, and
 * the last one removed (the data is then lost for good). */
gboolean vd_image_amend_progress(VdImage *img, VdOptions *opts, VdSecrets *secrets, gboolean force,
                                 VdProgressFunc progress, gpointer progress_data, GError **error);

typedef struct {
    const char *target_format;
    VdOptions *create_options; /* may be NULL */
    gboolean compress;         /* -c */
    gboolean target_exists;    /* -n: write into an existing image */
    /* --target-is-zero: the existing target reads as zeroes already, so
     * zero runs need not be written. */
    gboolean target_is_zero;
    /* -B: keep this backing file for the target and copy only what the
     * source holds above it. */
    const char *backing_file;
    const char *backing_format;
    guint64 min_sparse;    /* -S: zero runs this long stay holes; 0 = never skip */
    guint threads;         /* workers; 0 = automatic */
    gboolean out_of_order; /* -W */
    VdProgressFunc progress;
    gpointer progress_data;
    GCancellable *cancellable;
    /* Secrets that the target's create options name (encrypt.key-secret);
     * may be NULL. */
    VdSecrets *secrets;
    /* How to open an existing target (-n with --target-image-opts); NULL
     * takes the key options of create_options. */
    VdOptions *target_open_options;
    /* Extra flags for opening the target (vd_convert_fd: e.g.
     * VD_OPEN_NO_RELATED_FILES for a descriptor from another user), and
     * its cache mode: by default the copy waits for stable storage at the
     * end; VD_OPEN_NO_FLUSH leaves it to the page cache, and
     * VD_OPEN_WRITETHROUGH flushes after every write as well. */
    VdOpenFlags target_open_flags;
    /* vd_convert_fd: where the target's backing file lies (see
     * VdConfinement); the name given is then the target's own name
     * beneath it. NULL: by name, relative to the target's name. */
    const VdConfinement *target_confine;
    /* Copy data runs that lie plainly in one file to another inside the
     * kernel (copy_file_range, shared extents where the file system has
     * them) unless set. */
    gboolean no_copy_offload;
    /* Sources copied after the first, in order: the target holds their
     * concatenation and is as large as all of them (qemu-img convert a b
     * out). Borrowed; n_more_sources of them. */
    VdImage **more_sources;
    guint n_more_sources;
    /* --salvage: what cannot be read is copied as zeroes instead of
     * failing, and salvaged (may be NULL; called from worker threads, with
     * progress_data) is told of each such range, in source offsets of the
     * whole concatenation. */
    gboolean salvage;
    void (*salvaged)(guint64 offset, guint64 len, const GError *error, gpointer user_data);
    /* --salvage: the block status of the sector at offset could not be
     * read (it is read as data then); may be NULL. As in qemu-img, a
     * first pass over the sources (qemu-img's count of what to copy)
     * reports these once, and the copy again. Under --salvage the copy
     * runs on one thread, so the reports come in order. */
    void (*status_salvaged)(guint64 offset, const GError *error, gpointer user_data);
    /* -r: copy at most this many bytes of data a second (holes and zero
     * runs cost nothing); 0: no limit. */
    guint64 rate_limit;
} VdConvertOptions;

void vd_convert_options_init(VdConvertOptions *opts);

/* Copy every guest byte of source into target_path, creating it (unless
 * target_exists). Returns once the target (and the folder entry of a new
 * one) is on stable storage, unless target_open_flags says otherwise. On
 * failure or cancellation a target the call created is removed. */
gboolean vd_convert(VdImage *source, const char *target_path, const VdConvertOptions *opts,
                    GError **error);
/* Same, into a descriptor open for reading and writing (name is used in
 * messages). On failure a target the call created is truncated to nothing,
 * so it never looks like a whole image. */
gboolean vd_convert_fd(VdImage *source, int fd, const char *name, const VdConvertOptions *opts,
                       GError **error);
/* Copy into an already opened target image of at least source's size. */
gboolean vd_copy_image(VdImage *source, VdImage *target, const VdConvertOptions *opts,
                       GError **error);

/* ----- rebase ----- */

/* Make img (open for writing, with its old backing chain) name backing
 * (NULL: none, the image then stands alone) of backing_format (may be NULL).
 * Unless unsafe, first copy into img every range it does not hold itself
 * where the old chain reads differently from new_backing (NULL: zeroes),
 * so the guest sees the same disk afterwards (qemu-img rebase; -u is
 * unsafe). progress and cancellable may be NULL. */
gboolean vd_image_rebase(VdImage *img, const char *backing, const char *backing_format,
                         VdImage *new_backing, gboolean unsafe, VdProgressFunc progress,
                         gpointer progress_data, GCancellable *cancellable, GError **error);

/* ----- commit ----- */

/* Write into base (the layer at base_depth of top's chain, opened for
 * writing by itself) everything the layers above it answer, growing base
 * to top's size first (qemu-img commit). top stays as it was. */
gboolean vd_image_commit(VdImage *top, VdImage *base, guint base_depth, VdProgressFunc progress,
                         gpointer progress_data, GCancellable *cancellable, GError **error);

/* ----- comparison ----- */
typedef struct {
    gboolean identical;
    guint64 first_difference; /* valid when !identical */
    /* VD_COMPARE_STRICT_STATUS: the images differ in how first_difference
     * is stored (allocated, data or zero), whatever it reads. */
    gboolean status_mismatch;
    /* When the comparison fails: whether reading (read_failed) or asking
     * block status (status_failed) failed, of which image (0: a, 1: b),
     * in the request at which offset; and whether the images were found
     * alike as far as both go before it (their sizes differ, and the
     * longer one's tail was being checked). */
    gboolean read_failed;
    gboolean status_failed;
    guint failed_image;
    guint64 failed_offset;
    gboolean tail_checked;
} VdCompareResult;

typedef enum {
    VD_COMPARE_STRICT_SIZE = 1 << 0, /* a size difference is a difference */
    /* qemu-img compare -s: a range allocated, stored as data or as zeroes
     * in one image and not alike in the other is a difference too. */
    VD_COMPARE_STRICT_STATUS = 1 << 1,
} VdCompareFlags;

/* Compare guest content; with strict, a size difference is a difference;
 * otherwise the longer image must read zero past the shorter one. */
gboolean vd_compare(VdImage *a, VdImage *b, gboolean strict, GCancellable *cancellable,
                    VdCompareResult *res, GError **error);
/* vd_compare with flags, reporting the bytes compared (of the larger size)
 * to progress (may be NULL; called from the calling thread). */
gboolean vd_compare_full(VdImage *a, VdImage *b, VdCompareFlags flags, VdProgressFunc progress,
                         gpointer progress_data, GCancellable *cancellable, VdCompareResult *res,
                         GError **error);

/* ----- persistent dirty bitmaps (qcow2) ----- */
typedef enum {
    VD_BITMAP_ADD,
    VD_BITMAP_REMOVE,
    VD_BITMAP_CLEAR,
    VD_BITMAP_ENABLE,
    VD_BITMAP_DISABLE,
    VD_BITMAP_MERGE,
} VdBitmapOp;

/* One qemu-img bitmap operation on the bitmap name of img (open for
 * writing): ADD makes an empty one of granularity bytes (0: the image's
 * cluster size, within 4 KiB and 64 KiB), enabled unless disabled; REMOVE, CLEAR,
 * ENABLE and DISABLE do what they say; MERGE sets in name every bit set in
 * the bitmap source_name of source (img itself when NULL). Fails with
 * VD_ERROR_NOT_SUPPORTED for formats without persistent bitmaps,
 * VD_ERROR_NOT_FOUND / VD_ERROR_EXISTS for a missing or taken name. */
gboolean vd_image_bitmap(VdImage *img, VdBitmapOp op, const char *name, guint32 granularity,
                         gboolean disabled, VdImage *source, const char *source_name,
                         GError **error);

/* ----- measure ----- */
typedef struct {
    guint64 required;        /* file size a copy (or an empty image) needs */
    guint64 fully_allocated; /* file size with every cluster allocated */
    gboolean has_bitmaps;    /* the source can carry bitmaps into the target */
    guint64 bitmaps;         /* bytes the source's bitmaps would add */
} VdMeasure;

/* What a new image of format with create options opts (may be NULL) would
 * need on disk, as qemu-img measure computes it: a copy of source, or
 * (source NULL) an empty image of size bytes. Only raw, qcow2 and luks
 * are measured (VD_ERROR_NOT_SUPPORTED for the others, as qemu-img); an
 * option the format does not take is VD_ERROR_INVALID_ARGUMENT. A LUKS
 * target's (luks, or qcow2 with encrypt.format=luks) key-secret must be
 * named, as qemu-img wants it, though no secret is read. */
gboolean vd_measure(VdImage *source, guint64 size, const char *format, VdOptions *opts,
                    VdMeasure *out, GError **error);

G_END_DECLS
