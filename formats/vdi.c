/* vdi: VirtualBox Disk Image, header version 1.1.
 *
 * Layout: a 512-byte header (pre-header text, signature, version, then the
 * v1.1 fields), a block map of little-endian 32-bit entries, then the data
 * area. Entry i says where guest block i lives: an index n means the data
 * area's n-th block, 0xFFFFFFFF "not stored here" (zero for a base image,
 * the parent's content for a differencing image) and 0xFFFFFFFE "reads as
 * zero". Blocks are appended in allocation order, so the header's
 * allocated count is also the index the next new block takes.
 *
 * Differencing images (what VirtualBox snapshots are made of) name their
 * parent only by its image UUID; the parent is found among the .vdi files
 * of the same folder.
 */
#include "vdisk-driver.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* ----- on-disk header: every field's offset, once ----- */
#define HDR_TEXT 0x000 /* 64 bytes of text for the eyes only */
#define HDR_TEXT_LEN 64
#define HDR_SIGNATURE 0x040
#define HDR_VERSION 0x044
#define HDR_HEADER_SIZE 0x048 /* of the part starting here */
#define HDR_TYPE 0x04c
#define HDR_FLAGS 0x050
#define HDR_COMMENT 0x054 /* 256 bytes */
#define HDR_BMAP_OFFSET 0x154
#define HDR_DATA_OFFSET 0x158
#define HDR_CYLINDERS 0x15c /* legacy geometry; qemu and we write zeroes */
#define HDR_HEADS 0x160
#define HDR_SECTORS 0x164
#define HDR_SECTOR_SIZE 0x168
#define HDR_UNUSED 0x16c
#define HDR_DISK_SIZE 0x170
#define HDR_BLOCK_SIZE 0x178
#define HDR_BLOCK_EXTRA 0x17c
#define HDR_BLOCKS 0x180
#define HDR_BLOCKS_ALLOCATED 0x184
#define HDR_UUID_IMAGE 0x188
#define HDR_UUID_MODIFY 0x198
#define HDR_UUID_LINK 0x1a8 /* differencing: the parent's image UUID */
#define HDR_UUID_PARENT_MODIFY 0x1b8
#define HDR_V11_END 0x1c8 /* the fields a v1.1 header must have */
#define HDR_BYTES 0x200   /* what we read and rewrite: one sector */

#define VDI_SIGNATURE 0xbeda107fu
#define VDI_VERSION_1_1 0x00010001u
#define VDI_V11_HEADER_SIZE 0x180 /* the size field's value for v1.1 */
#define VDI_TEXT "<<< Oracle VM VirtualBox Disk Image >>>\n"

enum { VDI_TYPE_DYNAMIC = 1, VDI_TYPE_STATIC = 2, VDI_TYPE_UNDO = 3, VDI_TYPE_DIFF = 4 };

#define BMAP_UNALLOCATED 0xffffffffu
#define BMAP_ZERO 0xfffffffeu
#define IS_STORED(e) ((e) < BMAP_ZERO)

#define SECTOR 512u
#define DEFAULT_BLOCK_SIZE (1u << 20)
#define MIN_BLOCK_SIZE SECTOR
#define MAX_BLOCK_SIZE (256u << 20) /* a block is buffered whole on partial writes */
/* qemu's bound: the map stays below 2 GiB. The largest disk is that many
 * 1 MiB blocks, a little under 512 TiB. */
#define MAX_BLOCKS 0x1fffff80u
#define MAX_DISK_SIZE ((guint64)MAX_BLOCKS * DEFAULT_BLOCK_SIZE)
#define UUID_LEN 16

/* The parent search reads at most this many names and headers, so a huge
 * folder cannot stall an open. */
#define MAX_DIR_ENTRIES 10000
#define MAX_CANDIDATES 1000

/* The fields of a header, in host order. */
typedef struct {
    guint32 version;
    guint32 header_size;
    guint32 type;
    guint32 bmap_offset;
    guint32 data_offset;
    guint32 sector_size;
    guint64 disk_size;
    guint32 block_size;
    guint32 block_extra;
    guint32 blocks;
    guint32 allocated;
    guint8 uuid_image[UUID_LEN];
    guint8 uuid_modify[UUID_LEN];
    guint8 uuid_link[UUID_LEN];
    guint8 uuid_parent_modify[UUID_LEN];
} VdiHeader;

typedef struct {
    VdiHeader h;
    guint8 raw[HDR_BYTES]; /* as read: rewritten with our changes, the rest kept */
    guint block_shift;
    guint32 *bmap; /* host order, held entries */
    /* Entries of the map in the file: h.blocks, or fewer where the map runs
     * past the end of a file opened read-only (qemu opens such a file; no
     * I/O reaches the entries that are not there). */
    guint32 held;
    guint32 next_block;  /* index the next new block takes */
    guint32 bad_entries; /* entries pointing nowhere: tolerated for check and in a map cut short */
    guint64 open_size;   /* file size at open, what bad entries were judged by */
    gboolean modified;   /* the modification UUID was renewed this session */
    guint8 *scratch;     /* one block, for partial-block writes */
    /* Map entries of new blocks not yet in the file: [pending_lo, pending_hi]
     * when pending_lo <= pending_hi (vdi_flush writes them). */
    guint32 pending_lo, pending_hi;
} Vdi;

/* In the order of qemu-img's "Formatting" line; qemu's vdi has no backing
 * file, vdisk makes differencing VDIs with these two. */
static const VdCreateOption vdi_create_options[] = {
    { "size", VD_OPTION_SIZE, NULL, "Virtual disk size" },
    { "static", VD_OPTION_BOOL, "off", "VDI static (pre-allocated) image" },
    { "backing_file", VD_OPTION_STRING, NULL, "File name of a base image" },
    { "backing_fmt", VD_OPTION_STRING, NULL, "Image format of the base image" },
    { NULL },
};

/* ----- header encoding ----- */

static void header_parse(const guint8 *b, VdiHeader *h)
{
    h->version = vd_le32(b + HDR_VERSION);
    h->header_size = vd_le32(b + HDR_HEADER_SIZE);
    h->type = vd_le32(b + HDR_TYPE);
    h->bmap_offset = vd_le32(b + HDR_BMAP_OFFSET);
    h->data_offset = vd_le32(b + HDR_DATA_OFFSET);
    h->sector_size = vd_le32(b + HDR_SECTOR_SIZE);
    h->disk_size = vd_le64(b + HDR_DISK_SIZE);
    h->block_size = vd_le32(b + HDR_BLOCK_SIZE);
    h->block_extra = vd_le32(b + HDR_BLOCK_EXTRA);
    h->blocks = vd_le32(b + HDR_BLOCKS);
    h->allocated = vd_le32(b + HDR_BLOCKS_ALLOCATED);
    memcpy(h->uuid_image, b + HDR_UUID_IMAGE, UUID_LEN);
    memcpy(h->uuid_modify, b + HDR_UUID_MODIFY, UUID_LEN);
    memcpy(h->uuid_link, b + HDR_UUID_LINK, UUID_LEN);
    memcpy(h->uuid_parent_modify, b + HDR_UUID_PARENT_MODIFY, UUID_LEN);
}

/* Store the fields we own into b; text, comment and geometry stay. */
static void header_store(const VdiHeader *h, guint8 *b)
{
    vd_put_le32(b + HDR_SIGNATURE, VDI_SIGNATURE);
    vd_put_le32(b + HDR_VERSION, h->version);
    vd_put_le32(b + HDR_HEADER_SIZE, h->header_size);
    vd_put_le32(b + HDR_TYPE, h->type);
    vd_put_le32(b + HDR_BMAP_OFFSET, h->bmap_offset);
    vd_put_le32(b + HDR_DATA_OFFSET, h->data_offset);
    vd_put_le32(b + HDR_SECTOR_SIZE, h->sector_size);
    vd_put_le64(b + HDR_DISK_SIZE, h->disk_size);
    vd_put_le32(b + HDR_BLOCK_SIZE, h->block_size);
    vd_put_le32(b + HDR_BLOCK_EXTRA, h->block_extra);
    vd_put_le32(b + HDR_BLOCKS, h->blocks);
    vd_put_le32(b + HDR_BLOCKS_ALLOCATED, h->allocated);
    memcpy(b + HDR_UUID_IMAGE, h->uuid_image, UUID_LEN);
    memcpy(b + HDR_UUID_MODIFY, h->uuid_modify, UUID_LEN);
    memcpy(b + HDR_UUID_LINK, h->uuid_link, UUID_LEN);
    memcpy(b + HDR_UUID_PARENT_MODIFY, h->uuid_parent_modify, UUID_LEN);
}

static gboolean uuid_is_null(const guint8 *u) { return vd_buffer_is_zero(u, UUID_LEN); }

/* A random (version 4) UUID in VirtualBox's byte order: the first three
 * fields are little-endian, so the version nibble is the high nibble of
 * byte 7, not byte 6 as in RFC 4122's big-endian form. */
static void uuid_generate_v4(guint8 *u)
{
    if (getrandom(u, UUID_LEN, 0) != UUID_LEN)
        for (int i = 0; i < UUID_LEN; i += 4)
            vd_put_le32(u + i, g_random_int());
    u[7] = (u[7] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
}

/* The text VirtualBox shows, e.g. in VBoxManage showmediuminfo. */
static char *uuid_to_string(const guint8 *u)
{
    return g_strdup_printf("%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", vd_le32(u),
                           vd_le16(u + 4), vd_le16(u + 6), u[8], u[9], u[10], u[11], u[12], u[13],
                           u[14], u[15]);
}

static gboolean is_power_of_two(guint32 v) { return v != 0 && (v & (v - 1)) == 0; }

static guint64 round_up(guint64 v, guint64 align) { return (v + align - 1) / align * align; }

/* ----- probing and header checks ----- */

static int vdi_probe(const guint8 *buf, gsize len, const char *filename)
{
    if (len < HDR_SIGNATURE + 4 || vd_le32(buf + HDR_SIGNATURE) != VDI_SIGNATURE)
        return 0;
    return 100;
}

/* Read the header sector of file into raw and h; a file too short for the
 * v1.1 fields, or without the signature, is an error naming the file. */
static gboolean header_read(VdFile *file, guint8 *raw, VdiHeader *h, guint64 *file_size,
                            GError **error)
{
    if (!vd_file_size(file, file_size, error))
        return FALSE;
    if (*file_size < HDR_V11_END) {
        vd_set_file_error(error, vd_file_name(file), VD_ERROR_CORRUPT,
                          "file is too short (%" G_GUINT64_FORMAT
                          " bytes) to hold a VDI header (%d bytes)",
                          *file_size, HDR_V11_END);
        return FALSE;
    }
    if (!vd_file_pread_zero_past_eof(file, 0, raw, HDR_BYTES, error))
        return FALSE;
    if (vd_le32(raw + HDR_SIGNATURE) != VDI_SIGNATURE) {
        vd_set_file_error(error, vd_file_name(file), VD_ERROR_UNSUPPORTED_FORMAT,
                          "not a VDI image (no signature 0x%08x at offset 0x%x)", VDI_SIGNATURE,
                          HDR_SIGNATURE);
        return FALSE;
    }
    header_parse(raw, h);
    return TRUE;
}

static gboolean check_version_and_type(VdImage *img, const VdiHeader *h, GError **error)
{
    if (h->version != VDI_VERSION_1_1) {
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT,
                     "VDI version %u.%u is not supported (only 1.1, used since VirtualBox 1.5)",
                     h->version >> 16, h->version & 0xffff);
        return FALSE;
    }
    if (h->header_size < VDI_V11_HEADER_SIZE) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "header size %u is smaller than a version 1.1 header (%u)", h->header_size,
                     VDI_V11_HEADER_SIZE);
        return FALSE;
    }
    if (h->type == VDI_TYPE_UNDO) {
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT,
                     "VDI undo images (type 3) are not supported");
        return FALSE;
    }
    if (h->type != VDI_TYPE_DYNAMIC && h->type != VDI_TYPE_STATIC && h->type != VDI_TYPE_DIFF) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "unknown VDI image type %u", h->type);
        return FALSE;
    }
    if (h->type == VDI_TYPE_DIFF && uuid_is_null(h->uuid_link)) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "differencing image without a parent UUID");
        return FALSE;
    }
    return TRUE;
}

static gboolean check_geometry(VdImage *img, const VdiHeader *h, GError **error)
{
    if (h->sector_size != SECTOR) {
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT,
                     "sector size %u is not supported (only %u)", h->sector_size, SECTOR);
        return FALSE;
    }
    if (!is_power_of_two(h->block_size) || h->block_size < MIN_BLOCK_SIZE ||
        h->block_size > MAX_BLOCK_SIZE) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "block size %u is not a power of two between %u and %u", h->block_size,
                     MIN_BLOCK_SIZE, MAX_BLOCK_SIZE);
        return FALSE;
    }
    if (h->block_extra != 0) {
        vd_set_error(error, img, VD_ERROR_UNSUPPORTED_FORMAT,
                     "blocks with %u bytes of extra data are not supported", h->block_extra);
        return FALSE;
    }
    if (h->blocks > MAX_BLOCKS) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "the block map has %u entries, more than the %u allowed", h->blocks,
                     MAX_BLOCKS);
        return FALSE;
    }
    if (h->disk_size > MAX_DISK_SIZE) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "disk size %" G_GUINT64_FORMAT " (0x%" G_GINT64_MODIFIER
                     "x) is too large: at most %" G_GUINT64_FORMAT " (0x%" G_GINT64_MODIFIER
                     "x) bytes",
                     h->disk_size, h->disk_size, MAX_DISK_SIZE, MAX_DISK_SIZE);
        return FALSE;
    }
    if (h->disk_size > (guint64)h->blocks * h->block_size) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "disk size %" G_GUINT64_FORMAT " does not fit in the %u blocks of %u bytes "
                     "(%" G_GUINT64_FORMAT " bytes) the block map describes",
                     h->disk_size, h->blocks, h->block_size, (guint64)h->blocks * h->block_size);
        return FALSE;
    }
    return TRUE;
}

/* Where the map and the data lie; *held: how many entries of the map the
 * file holds. A map that runs past the end of the file is damage: opened
 * read-only it is described (info, check) as qemu-img describes it, and
 * nothing is set aside for the entries that are not there. */
static gboolean check_layout(VdImage *img, const VdiHeader *h, guint64 file_size, guint32 *held,
                             GError **error)
{
    guint64 bmap_end = (guint64)h->bmap_offset + (guint64)h->blocks * 4;
    if (h->bmap_offset < HDR_V11_END) {
        vd_set_error(error, img, VD_ERROR_CORRUPT, "block map offset 0x%x lies inside the header",
                     h->bmap_offset);
        return FALSE;
    }
    *held = h->blocks;
    if (bmap_end > file_size && !img->read_write) {
        *held = h->bmap_offset >= file_size ? 0 : (guint32)((file_size - h->bmap_offset) / 4);
        return TRUE;
    }
    if (bmap_end > file_size) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "block map of %" G_GUINT64_FORMAT " bytes (%u entries at offset 0x%x) "
                     "extends past the end of the file (%" G_GUINT64_FORMAT " bytes)",
                     (guint64)h->blocks * 4, h->blocks, h->bmap_offset, file_size);
        return FALSE;
    }
    if (h->data_offset < bmap_end) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "data offset 0x%x overlaps the block map (which ends at 0x%" G_GINT64_MODIFIER
                     "x)",
                     h->data_offset, bmap_end);
        return FALSE;
    }
    return TRUE;
}

/* ----- the block map ----- */

/* Entry i of the map; one the file does not hold reads as unallocated
 * (entry_usable keeps I/O away from it). */
static guint32 bmap_entry(const Vdi *s, guint32 i)
{
    return i < s->held ? s->bmap[i] : BMAP_UNALLOCATED;
}

static guint64 block_host_offset(const Vdi *s, guint32 entry)
{
    return (guint64)s->h.data_offset + ((guint64)entry << s->block_shift);
}

static gboolean bmap_load(VdImage *img, Vdi *s, GError **error)
{
    gsize bytes = (gsize)s->held * 4;
    if (!vd_image_charge_metadata(img, bytes, "block map", error))
        return FALSE;
    s->bmap = g_try_malloc(MAX(bytes, 4));
    if (s->bmap == NULL) {
        vd_set_error(error, img, VD_ERROR_FAILED, "not enough memory for a block map of %u entries",
                     s->held);
        return FALSE;
    }
    if (!vd_file_pread(img->file, s->h.bmap_offset, s->bmap, bytes, error))
        return FALSE;
    for (guint32 i = 0; i < s->held; i++)
        s->bmap[i] = GUINT32_FROM_LE(s->bmap[i]);
    return TRUE;
}

/* Why an entry is unusable, or NULL. A stored block must lie inside the
 * block area the header sizes and start inside the file (a short last
 * block reads zeroes past the end, as a file shrunk by a crash would). */
static const char *entry_problem(const Vdi *s, guint32 entry, guint64 file_size)
{
    if (!IS_STORED(entry))
        return NULL;
    if (entry >= s->h.blocks || block_host_offset(s, entry) >= file_size)
        return "points past the end of the file";
    return NULL;
}

static void set_entry_error(GError **error, VdImage *img, guint32 i, guint32 e, const char *problem)
{
    vd_set_error(error, img, VD_ERROR_CORRUPT, "block map entry %u %s (block %u)", i, problem, e);
}

/* Check every entry once at open, so reads and writes can trust the map,
 * and find where the next new block goes. Opened for check, bad entries
 * are counted instead: check reports and repairs them, and any I/O that
 * meets one fails. */
static gboolean bmap_validate(VdImage *img, Vdi *s, guint64 file_size, GError **error)
{
    guint32 next = 0;
    s->open_size = file_size;
    for (guint32 i = 0; i < s->held; i++) {
        guint32 e = s->bmap[i];
        const char *problem = entry_problem(s, e, file_size);
        if (problem != NULL && ((img->flags & VD_OPEN_FOR_CHECK) || s->held < s->h.blocks)) {
            s->bad_entries++;
            continue;
        }
        if (problem != NULL) {
            set_entry_error(error, img, i, e, problem);
            return FALSE;
        }
        if (IS_STORED(e) && e >= next)
            next = e + 1;
    }
    /* New blocks go after every used one and after what the header counts
     * (a crash may have left a written block the map does not show yet).
     * A count past the image's blocks is wrong: check reports it. */
    next = MAX(next, MIN(s->h.allocated, s->h.blocks));
    s->next_block = next;
    return TRUE;
}

/* Write entries [first, first+count) of the map to the file. */
static gboolean bmap_store(VdImage *img, Vdi *s, guint32 first, guint32 count, GError **error)
{
    g_autofree guint32 *le = g_new(guint32, count);
    for (guint32 i = 0; i < count; i++)
        le[i] = GUINT32_TO_LE(s->bmap[first + i]);
    return vd_file_pwrite(img->file, (guint64)s->h.bmap_offset + (guint64)first * 4, le,
                          (gsize)count * 4, error);
}

static gboolean header_store_file(VdImage *img, Vdi *s, GError **error)
{
    header_store(&s->h, s->raw);
    return vd_file_pwrite(img->file, 0, s->raw, HDR_BYTES, error);
}

/* VirtualBox gives an image a new modification UUID when it is changed, so
 * a child can tell its parent was written after the child was made. Do it
 * once per session, before the first change reaches the file. */
static gboolean mark_modified(VdImage *img, Vdi *s, GError **error)
{
    if (s->held < s->h.blocks) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "the block map runs past the end of the file; the image cannot be written");
        return FALSE;
    }
    if (s->bad_entries > 0) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "%u block map entries point past the end of the file; repair the image "
                     "before writing to it",
                     s->bad_entries);
        return FALSE;
    }
    if (s->modified)
        return TRUE;
    uuid_generate_v4(s->h.uuid_modify);
    if (!header_store_file(img, s, error))
        return FALSE;
    s->modified = TRUE;
    return TRUE;
}

/* ----- finding the parent of a differencing image ----- */

static gboolean same_inode(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* Does the VDI name in img's folder carry image UUID uuid? Unreadable
 * files are just not the parent. The folder's files are opened without
 * blocking and must be regular files, so a FIFO named like an image cannot
 * stall the search. */
static gboolean candidate_matches(VdImage *img, const char *name, const guint8 *uuid,
                                  const struct stat *self)
{
    g_autoptr(VdFile) file = vd_image_peek_file(img, name, NULL);
    struct stat st;
    if (file == NULL || fstat(vd_file_fd(file), &st) < 0 || same_inode(&st, self))
        return FALSE;
    guint8 raw[HDR_BYTES];
    VdiHeader h;
    guint64 size;
    if (!header_read(file, raw, &h, &size, NULL))
        return FALSE;
    return memcmp(h.uuid_image, uuid, UUID_LEN) == 0;
}

/* The name (in the image's folder) of the .vdi whose image UUID is uuid,
 * or NULL. With several (copies of one parent), the first by name wins so
 * the answer does not depend on directory order. An image without a folder
 * (from a caller's descriptor) has nowhere to search: never the process's
 * working directory. */
static char *find_parent(VdImage *img, const guint8 *uuid)
{
    struct stat self;
    if (fstat(vd_file_fd(img->file), &self) < 0)
        return NULL;
    g_autoptr(GPtrArray) names = vd_image_list_folder(img, MAX_DIR_ENTRIES);
    if (names == NULL)
        return NULL;
    char *best = NULL;
    guint candidates = 0;
    for (guint i = 0; i < names->len && candidates < MAX_CANDIDATES; i++) {
        const char *name = names->pdata[i];
        g_autofree char *lower = g_ascii_strdown(name, -1);
        if (!g_str_has_suffix(lower, ".vdi"))
            continue;
        candidates++;
        if (best != NULL && strcmp(name, best) >= 0)
            continue;
        if (candidate_matches(img, name, uuid, &self)) {
            g_free(best);
            best = g_strdup(name);
        }
    }
    return best;
}

/* ----- is this the parent? ----- */

/* Is the VDI with header ph, at parent_name, the parent of s? A
 * differencing image records only its parent's image UUID, so that UUID
 * decides; any other VDI (a sibling, the grandparent, a copy of the disk
 * made before the snapshot) would show the wrong data where the child
 * stores nothing.
 *
 * Sizes: a new differencing image takes its parent's size, and resizing
 * only ever grows an image (VirtualBox cannot shrink a VDI). So a child
 * larger than its parent is a disk grown after the snapshot, and reads
 * zeroes past the parent's end. A parent larger than its child was not
 * the disk the child was made on, or was changed under it after the
 * snapshot: refused rather than guessed at. The modification UUIDs are not
 * compared: VirtualBox itself renews them in ways a reader cannot follow. */
static gboolean check_parent_header(VdImage *img, const Vdi *s, const char *parent_name,
                                    const VdiHeader *ph, GError **error)
{
    if (memcmp(ph->uuid_image, s->h.uuid_link, UUID_LEN) != 0) {
        g_autofree char *want = uuid_to_string(s->h.uuid_link);
        g_autofree char *have = uuid_to_string(ph->uuid_image);
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "its parent is {%s}, but %s is {%s}: not the image this one was made on", want,
                     parent_name, have);
        return FALSE;
    }
    if (round_up(ph->disk_size, SECTOR) > img->size) {
        g_autofree char *uuid = uuid_to_string(ph->uuid_image);
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "its parent %s {%s} is larger (%" G_GUINT64_FORMAT
                     " bytes) than this differencing image (%" G_GUINT64_FORMAT
                     " bytes); VirtualBox never makes such a chain",
                     parent_name, uuid, round_up(ph->disk_size, SECTOR), img->size);
        return FALSE;
    }
    return TRUE;
}

/* The chain is open: a differencing VDI sits on a VDI, the one it names. */
static gboolean vdi_check_backing(VdImage *img, GError **error)
{
    Vdi *s = img->priv;
    VdImage *parent = img->backing;
    if (parent->drv != &vd_driver_vdi) {
        g_autofree char *want = uuid_to_string(s->h.uuid_link);
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "its parent is the VDI image {%s}, but %s is a %s image", want,
                     parent->filename, parent->drv->name);
        return FALSE;
    }
    const Vdi *ps = parent->priv;
    return check_parent_header(img, s, parent->filename, &ps->h, error);
}

/* Opened without its chain (info), a parent the caller named is still
 * checked, from its header, so no wrong parent is ever shown as this
 * image's. */
static gboolean check_named_parent(VdImage *img, const Vdi *s, GError **error)
{
    g_autoptr(VdFile) file = vd_image_peek_file(img, img->backing_name, error);
    guint8 raw[HDR_BYTES];
    VdiHeader ph;
    guint64 size;
    if (file == NULL || !header_read(file, raw, &ph, &size, error)) {
        g_autofree char *want = uuid_to_string(s->h.uuid_link);
        g_prefix_error(error, "%s: its parent is the VDI image {%s}, but: ", img->filename, want);
        return FALSE;
    }
    return check_parent_header(img, s, vd_file_name(file), &ph, error);
}

static gboolean resolve_parent(VdImage *img, Vdi *s, GError **error)
{
    if (img->backing_name != NULL && (img->flags & VD_OPEN_NO_BACKING) &&
        !(img->flags & VD_OPEN_NO_RELATED_FILES) && !check_named_parent(img, s, error))
        return FALSE;
    if (img->backing_name == NULL) {
        /* Unless the caller named the parent already, look for it. */
        img->backing_name = find_parent(img, s->h.uuid_link);
    }
    if (img->backing_name == NULL) {
        if (img->flags & VD_OPEN_NO_BACKING)
            return TRUE; /* info and check can work on this layer alone */
        g_autofree char *uuid = uuid_to_string(s->h.uuid_link);
        if (img->no_folder || (img->flags & VD_OPEN_NO_RELATED_FILES)) {
            vd_set_error(error, img, VD_ERROR_NOT_FOUND,
                         "the parent of this differencing image, {%s}, is not searched for: "
                         "the image was opened without its folder",
                         uuid);
            return FALSE;
        }
        g_autofree char *dirname = g_path_get_dirname(img->filename);
        vd_set_error(error, img, VD_ERROR_NOT_FOUND,
                     "the parent of this differencing image, {%s}, is not among the .vdi "
                     "files in %s",
                     uuid, dirname);
        return FALSE;
    }
    if (img->backing_format == NULL)
        img->backing_format = g_strdup("vdi");
    return TRUE;
}

/* ----- open and close ----- */

static gboolean vdi_open(VdImage *img, GError **error)
{
    Vdi *s = g_new0(Vdi, 1);
    img->priv = s;
    s->pending_lo = G_MAXUINT32;
    guint64 file_size;
    if (!header_read(img->file, s->raw, &s->h, &file_size, error) ||
        !check_version_and_type(img, &s->h, error) || !check_geometry(img, &s->h, error) ||
        !check_layout(img, &s->h, file_size, &s->held, error))
        return FALSE;
    s->block_shift = (guint)g_bit_nth_lsf(s->h.block_size, -1);
    if (!bmap_load(img, s, error) || !bmap_validate(img, s, file_size, error))
        return FALSE;
    /* VBoxManage convertfromraw can store a size that is no multiple of a
     * sector; the guest sees whole sectors (qemu rounds up the same way). */
    img->size = round_up(s->h.disk_size, SECTOR);
    if (s->h.type != VDI_TYPE_DIFF && img->backing_name != NULL) {
        vd_set_error(error, img, VD_ERROR_INVALID_ARGUMENT,
                     "not a differencing image: it has no parent, so %s cannot be one",
                     img->backing_name);
        return FALSE;
    }
    if (s->h.type == VDI_TYPE_DIFF && !resolve_parent(img, s, error))
        return FALSE;
    return TRUE;
}

static gboolean vdi_flush(VdImage *img, GError **error);

static void vdi_close(VdImage *img)
{
    Vdi *s = img->priv;
    if (s == NULL)
        return;
    g_autoptr(GError) local = NULL;
    if (s->bmap != NULL && !vdi_flush(img, &local))
        g_warning("%s: %s", img->filename, local->message);
    g_free(s->bmap);
    g_free(s->scratch);
    g_free(s);
    img->priv = NULL;
}

/* ----- create ----- */

/* Is parent, just opened for a new image, in the folder the new image
 * goes into? Beneath a confinement the names tell (no component is a
 * link there); by path, the folders' identities. */
static gboolean same_folder(const VdCreateParams *params, VdImage *parent)
{
    if (params->confine != NULL) {
        g_autofree char *a = g_path_get_dirname(params->name_beneath);
        g_autofree char *b = g_path_get_dirname(parent->name_beneath);
        return g_str_equal(a, b);
    }
    g_autofree char *parent_dir = g_path_get_dirname(parent->filename);
    g_autofree char *child_dir = g_path_get_dirname(params->path);
    struct stat a, b;
    return stat(parent_dir, &a) == 0 && stat(child_dir, &b) == 0 && same_inode(&a, &b);
}

/* The image and modification UUIDs of the parent a new differencing image
 * links to. VDI stores no parent name, only these; so the parent must sit
 * in the child's folder, where opening the child will look for it. */
static gboolean read_parent_ids(const VdCreateParams *params, VdiHeader *child, GError **error)
{
    if (params->backing_format != NULL && !g_str_equal(params->backing_format, "vdi")) {
        vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT,
                          "a differencing VDI image can only sit on a VDI parent, and %s is %s",
                          params->backing_file, params->backing_format);
        return FALSE;
    }
    g_autoptr(VdImage) parent_img =
        vd_create_open_backing(params, "vdi", VD_OPEN_NO_BACKING | VD_OPEN_FORCE_SHARE, error);
    if (parent_img == NULL) {
        g_prefix_error(error, "%s: a differencing VDI image needs its VDI parent: ", params->path);
        return FALSE;
    }
    const VdiHeader parent = ((const Vdi *)parent_img->priv)->h;
    /* What opening the child would refuse (see check_parent_header). */
    if (round_up(parent.disk_size, SECTOR) > child->disk_size) {
        vd_set_file_error(
            error, params->path, VD_ERROR_INVALID_ARGUMENT,
            "a differencing image cannot be smaller than its parent %s (%" G_GUINT64_FORMAT
            " bytes)",
            params->backing_file, round_up(parent.disk_size, SECTOR));
        return FALSE;
    }
    if (!same_folder(params, parent_img)) {
        vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT,
                          "the parent %s must be in the same folder: a VDI image records only "
                          "its parent's UUID, and the parent is looked for next to it",
                          params->backing_file);
        return FALSE;
    }
    memcpy(child->uuid_link, parent.uuid_image, UUID_LEN);
    memcpy(child->uuid_parent_modify, parent.uuid_modify, UUID_LEN);
    return TRUE;
}

/* Write the map of a new image: every block in order for a static image,
 * none for a dynamic one. In pieces, since it can be large. */
static gboolean create_bmap(VdFile *file, const VdiHeader *h, GError **error)
{
    enum { CHUNK = 64 * 1024 };
    g_autofree guint8 *buf = g_malloc(CHUNK * 4);
    for (guint32 first = 0; first < h->blocks; first += CHUNK) {
        guint32 n = MIN(CHUNK, h->blocks - first);
        for (guint32 i = 0; i < n; i++)
            vd_put_le32(buf + i * 4, h->type == VDI_TYPE_STATIC ? first + i : BMAP_UNALLOCATED);
        if (!vd_file_pwrite(file, (guint64)h->bmap_offset + (guint64)first * 4, buf, (gsize)n * 4,
                            error))
            return FALSE;
    }
    return TRUE;
}

static gboolean vdi_create(VdFile *file, const VdCreateParams *params, GError **error)
{
    gboolean is_static;
    if (!vd_option_bool(params->options, "static", FALSE, &is_static, error))
        return FALSE;
    guint64 size = round_up(params->size, SECTOR);
    if (size > MAX_DISK_SIZE) {
        vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT,
                          "disk size %" G_GUINT64_FORMAT
                          " is too large for VDI (at most %" G_GUINT64_FORMAT " bytes)",
                          size, MAX_DISK_SIZE);
        return FALSE;
    }
    VdiHeader h = {
        .version = VDI_VERSION_1_1,
        .header_size = VDI_V11_HEADER_SIZE,
        .type = is_static ? VDI_TYPE_STATIC : VDI_TYPE_DYNAMIC,
        .bmap_offset = HDR_BYTES,
        .sector_size = SECTOR,
        .disk_size = size,
        .block_size = DEFAULT_BLOCK_SIZE,
        .blocks = (guint32)((size + DEFAULT_BLOCK_SIZE - 1) / DEFAULT_BLOCK_SIZE),
    };
    if (params->backing_file != NULL) {
        if (is_static) {
            vd_set_file_error(error, params->path, VD_ERROR_INVALID_ARGUMENT,
                              "a differencing VDI image cannot be static");
            return FALSE;
        }
        h.type = VDI_TYPE_DIFF;
        if (!read_parent_ids(params, &h, error))
            return FALSE;
    }
    /* qemu's layout: the map right after the header sector, data after the
     * map on the next sector boundary. */
    h.data_offset = (guint32)round_up((guint64)h.bmap_offset + (guint64)h.blocks * 4, SECTOR);
    if (is_static)
        h.allocated = h.blocks;
    uuid_generate_v4(h.uuid_image);
    uuid_generate_v4(h.uuid_modify);

    guint8 raw[HDR_BYTES] = { 0 };
    memcpy(raw + HDR_TEXT, VDI_TEXT, strlen(VDI_TEXT));
    header_store(&h, raw);
    if (!vd_file_pwrite(file, 0, raw, sizeof raw, error) || !create_bmap(file, &h, error))
        return FALSE;
    if (!is_static)
        return vd_file_truncate(file, h.data_offset, error);
    /* A static image owns all its blocks from the start; reserve them where
     * the file system can, else at least give the file its full length. */
    guint64 end = (guint64)h.data_offset + (guint64)h.blocks * h.block_size;
    g_autoptr(GError) local = NULL;
    if (vd_file_allocate(file, h.data_offset, end - h.data_offset, &local))
        return TRUE;
    if (g_error_matches(local, VD_ERROR, VD_ERROR_NO_SPACE)) {
        g_propagate_error(error, g_steal_pointer(&local));
        return FALSE;
    }
    return vd_file_truncate(file, end, error);
}

/* ----- block status and reading ----- */

static VdExtentKind entry_kind(const Vdi *s, guint32 entry)
{
    if (IS_STORED(entry))
        return VD_EXTENT_DATA;
    /* An unstored block of a base image reads zero and no layer below can
     * answer instead: report it as this layer's zero (as qemu does), so a
     * copy onto a new backing file does not let that file show through. */
    if (entry == BMAP_UNALLOCATED && s->h.type == VDI_TYPE_DIFF)
        return VD_EXTENT_UNALLOCATED;
    return VD_EXTENT_ZERO;
}

/* Does block i+1 continue the run block i started? Data runs must also be
 * contiguous in the file so one read covers them. */
static gboolean continues_run(const Vdi *s, guint32 i)
{
    guint32 a = bmap_entry(s, i), b = bmap_entry(s, i + 1);
    VdExtentKind kind = entry_kind(s, a);
    if (kind != entry_kind(s, b))
        return FALSE;
    return kind != VD_EXTENT_DATA || b == a + 1;
}

/* Only an image opened for check can hold bad entries; reading through
 * one is an error, as it would have been at open. */
static gboolean entry_usable(VdImage *img, const Vdi *s, guint32 i, GError **error)
{
    if (i >= s->held) {
        vd_set_error(error, img, VD_ERROR_CORRUPT,
                     "block map entry %u lies past the end of the file", i);
        return FALSE;
    }
    const char *problem;
    if (s->bad_entries == 0 || (problem = entry_problem(s, s->bmap[i], s->open_size)) == NULL)
        return TRUE;
    set_entry_error(error, img, i, s->bmap[i], problem);
    return FALSE;
}

static gboolean vdi_block_status(VdImage *img, guint64 offset, guint64 len, VdExtent *out,
                                 GError **error)
{
    Vdi *s = img->priv;
    guint64 end = offset + len;
    guint32 first = (guint32)(offset >> s->block_shift);
    guint32 last = (guint32)((end - 1) >> s->block_shift);
    if (!entry_usable(img, s, first, error))
        return FALSE;
    guint32 i = first;
    while (i < last && continues_run(s, i) &&
           ((s->bad_entries == 0 && s->held == s->h.blocks) || entry_usable(img, s, i + 1, NULL)))
        i++;
    guint64 run_end = MIN(end, (guint64)(i + 1) << s->block_shift);
    out->kind = entry_kind(s, s->bmap[first]);
    out->length = run_end - offset;
    if (out->kind == VD_EXTENT_DATA) {
        out->offset_valid = TRUE;
        out->host_offset = block_host_offset(s, s->bmap[first]) + (offset & (s->h.block_size - 1));
        out->plain_file = img->file;
    }
    return TRUE;
}

/* Read a range the map stores, one pread per run of blocks that lie one
 * after another in the file. */
static gboolean vdi_read(VdImage *img, guint64 offset, void *buf, gsize len, GError **error)
{
    Vdi *s = img->priv;
    guint8 *out = buf;
    while (len > 0) {
        guint32 block = (guint32)(offset >> s->block_shift);
        guint64 host = block_host_offset(s, s->bmap[block]) + (offset & (s->h.block_size - 1));
        guint64 run = ((guint64)(block + 1) << s->block_shift) - offset;
        while (run < len && IS_STORED(bmap_entry(s, block + 1)) &&
               bmap_entry(s, block + 1) == s->bmap[block] + 1) {
            block++;
            run += s->h.block_size;
        }
        gsize n = (gsize)MIN(run, len);
        if (!vd_file_pread_zero_past_eof(img->file, host, out, n, error))
            return FALSE;
        offset += n;
        out += n;
        len -= n;
    }
    return TRUE;
}

/* ----- writing ----- */

/* Take the next count blocks of the data area for map entries
 * [first, first+count), whose data the caller has just written there. The
 * map entries go to the file after the data and before the header's
 * count, so a crash leaves at worst an unreferenced block or a count that
 * check repairs, never an entry pointing at garbage. */
static gboolean commit_blocks(VdImage *img, Vdi *s, guint32 first, guint32 count, guint32 index,
                              GError **error)
{
    for (guint32 i = 0; i < count; i++)
        s->bmap[first + i] = index + i;
    s->next_block = index + count;
    s->h.allocated = s->next_block;
    if (s->pending_lo > s->pending_hi) {
        s->pending_lo = first;
        s->pending_hi = first + count - 1;
    } else {
        s->pending_lo = MIN(s->pending_lo, first);
        s->pending_hi = MAX(s->pending_hi, first + count - 1);
    }
    return TRUE;
}

/* New blocks reach the map on a flush, as QEMU's qcow2 metadata cache
 * does: their data and the header's raised count are on stable storage
 * before any entry points at them, so a power cut leaves at worst blocks
 * nobody uses (a count above the map, which check -r repairs), never an
 * entry pointing at data that is not there, nor a count below the map
 * that would hand a used block out again. */
static gboolean vdi_flush(VdImage *img, GError **error)
{
    Vdi *s = img->priv;
    if (s->pending_lo > s->pending_hi)
        return TRUE;
    if (!header_store_file(img, s, error) || !vd_file_sync(img->file, error) ||
        !bmap_store(img, s, s->pending_lo, s->pending_hi - s->pending_lo + 1, error))
        return FALSE;
    s->pending_lo = G_MAXUINT32;
    s->pending_hi = 0;
    return TRUE;
}

static gboolean check_room(VdImage *img, Vdi *s, guint32 count, GError **error)
{
    if ((guint64)s->next_block + count > s->h.blocks) {
        /* Only unused blocks in the data area (leaks) can get us here. */
        vd_set_error(error, img, VD_ERROR_NO_SPACE,
                     "the data area has no room for another block (%u of %u taken); "
                     "repairing leaks compacts it",
                     s->next_block, s->h.blocks);
        return FALSE;
    }
    return TRUE;
}

/* Write whole new blocks [block, block+count) straight from buf. */
static gboolean allocate_whole(VdImage *img, Vdi *s, guint32 block, guint32 count,
                               const guint8 *buf, GError **error)
{
    if (!check_room(img, s, count, error))
        return FALSE;
    guint32 index = s->next_block;
    if (!vd_file_pwrite(img->file, block_host_offset(s, index), buf, (gsize)count << s->block_shift,
                        error))
        return FALSE;
    return commit_blocks(img, s, block, count, index, error);
}

/* Allocate one block for a write covering only [in_block, in_block+len) of
 * it: the rest keeps what the guest read there before, the parent's data
 * for an unstored block of a differencing image, else zeroes. */
static gboolean allocate_partial(VdImage *img, Vdi *s, guint32 block, gsize in_block,
                                 const guint8 *buf, gsize len, GError **error)
{
    if (!check_room(img, s, 1, error))
        return FALSE;
    if (s->scratch == NULL)
        s->scratch = g_malloc(s->h.block_size);
    guint64 start = (guint64)block << s->block_shift;
    if (entry_kind(s, s->bmap[block]) == VD_EXTENT_UNALLOCATED) {
        if (img->backing == NULL) {
            /* Zeroes in place of the parent's data would corrupt the block. */
            vd_set_error(error, img, VD_ERROR_NOT_SUPPORTED,
                         "cannot write part of block %u: the parent image is not open", block);
            return FALSE;
        }
        /* The backing read needs no bounds of its own: past the parent's
         * end it gives zeroes. The block may run past the disk's end. */
        guint64 inside = MIN((guint64)s->h.block_size, img->size - MIN(start, img->size));
        if (!vd_image_read_backing(img, start, s->scratch, (gsize)inside, error))
            return FALSE;
        memset(s->scratch + inside, 0, s->h.block_size - inside);
    } else {
        memset(s->scratch, 0, s->h.block_size);
    }
    memcpy(s->scratch + in_block, buf, len);
    guint32 index = s->next_block;
    if (!vd_file_pwrite(img->file, block_host_offset(s, index), s->scratch, s->h.block_size, error))
        return FALSE;
    return commit_blocks(img, s, block, 1, index, error);
}

/* Overwrite stored blocks in place, one pwrite per run contiguous in the
 * file. Returns the bytes consumed in *done. */
static gboolean write_stored(VdImage *img, Vdi *s, guint64 offset, const guint8 *buf, gsize len,
                             gsize *done, GError **error)
{
    guint32 block = (guint32)(offset >> s->block_shift);
    guint64 host = block_host_offset(s, s->bmap[block]) + (offset & (s->h.block_size - 1));
    guint64 run = ((guint64)(block + 1) << s->block_shift) - offset;
    while (run < len && IS_STORED(s->bmap[block + 1]) && s->bmap[block + 1] == s->bmap[block] + 1) {
        block++;
        run += s->h.block_size;
    }
    *done = (gsize)MIN(run, len);
    return vd_file_pwrite(img->file, host, buf, *done, error);
}

static gboolean vdi_write(VdImage *img, guint64 offset, const void *buf, gsize len, GError **error)
{
    Vdi *s = img->priv;
    const guint8 *in = buf;
    if (!mark_modified(img, s, error))
        return FALSE;
    while (len > 0) {
        guint32 block = (guint32)(offset >> s->block_shift);
        gsize in_block = (gsize)(offset & (s->h.block_size - 1));
        gsize n;
        if (IS_STORED(s->bmap[block])) {
            if (!write_stored(img, s, offset, in, len, &n, error))
                return FALSE;
        } else if (in_block == 0 && len >= s->h.block_size) {
            /* A run of unstored blocks written whole: one data write. */
            guint32 count = 1;
            while ((gsize)(count + 1) << s->block_shift <= len &&
                   !IS_STORED(s->bmap[block + count]))
                count++;
            n = (gsize)count << s->block_shift;
            if (!allocate_whole(img, s, block, count, in, error))
                return FALSE;
        } else {
            n = MIN(len, s->h.block_size - in_block);
            if (!allocate_partial(img, s, block, in_block, in, n, error))
                return FALSE;
        }
        offset += n;
        in += n;
        len -= n;
    }
    return TRUE;
}

/* What a zeroing call may do with the storage of the blocks it covers. */
typedef enum {
    ZERO_KEEP,  /* write_zeroes without may_unmap: blocks stay allocated */
    ZERO_UNMAP, /* write_zeroes with may_unmap: whole blocks become zero entries */
    DISCARD,    /* whole blocks are dropped: zero, or the parent's content */
} ZeroMode;

/* Make one block's part [in_block, in_block+n) read zero (or, for DISCARD,
 * zero or the parent). Sets *freed when a stored block lost its entry. */
static gboolean zero_in_block(VdImage *img, Vdi *s, guint32 block, guint64 in_block, guint64 n,
                              ZeroMode mode, gboolean *freed, GError **error)
{
    guint64 start = (guint64)block << s->block_shift;
    /* The whole block, or all of it the guest can see. */
    gboolean whole = in_block == 0 && (n == s->h.block_size || start + n >= img->size);
    guint32 e = s->bmap[block];
    if (IS_STORED(e)) {
        if (!whole || mode == ZERO_KEEP || s->h.type == VDI_TYPE_STATIC)
            return vd_file_write_zeroes(img->file, block_host_offset(s, e) + in_block, n,
                                        mode != ZERO_KEEP && s->h.type != VDI_TYPE_STATIC, error);
        s->bmap[block] = mode == DISCARD ? BMAP_UNALLOCATED : BMAP_ZERO;
        *freed = TRUE;
        return bmap_store(img, s, block, 1, error);
    }
    if (mode == DISCARD || entry_kind(s, e) != VD_EXTENT_UNALLOCATED)
        return TRUE; /* reads zero already, or may keep showing the parent */
    if (whole) {
        s->bmap[block] = BMAP_ZERO;
        return bmap_store(img, s, block, 1, error);
    }
    /* Part of a block that shows the parent: it needs a block of its own. */
    g_autofree guint8 *zeroes = g_malloc0((gsize)n);
    return allocate_partial(img, s, block, (gsize)in_block, zeroes, (gsize)n, error);
}

static gboolean compact(VdImage *img, Vdi *s, guint32 highest, GError **error);

/* Zero or discard [offset, offset+len). Whole stored blocks that give up
 * their entry leave holes in the data area; VDI has no free list (the
 * header's allocated count is also where the next block goes, and qemu-img
 * check compares it with the map), so the last blocks are moved into the
 * holes afterwards, as VirtualBox does when it discards. */
static gboolean zero_range(VdImage *img, Vdi *s, guint64 offset, guint64 len, ZeroMode mode,
                           GError **error)
{
    if (!mark_modified(img, s, error) || !vdi_flush(img, error))
        return FALSE;
    gboolean freed = FALSE;
    while (len > 0) {
        guint32 block = (guint32)(offset >> s->block_shift);
        guint64 in_block = offset & (s->h.block_size - 1);
        guint64 n = MIN(len, s->h.block_size - in_block);
        if (!zero_in_block(img, s, block, in_block, n, mode, &freed, error))
            return FALSE;
        offset += n;
        len -= n;
    }
    return !freed || compact(img, s, s->next_block, error);
}

static gboolean vdi_write_zeroes(VdImage *img, guint64 offset, guint64 len, gboolean may_unmap,
                                 GError **error)
{
    return zero_range(img, img->priv, offset, len, may_unmap ? ZERO_UNMAP : ZERO_KEEP, error);
}

/* A static image keeps its blocks, as its user asked for. */
static gboolean vdi_discard(VdImage *img, guint64 offset, guint64 len, GError **error)
{
    Vdi *s = img->priv;
    if (s->h.type == VDI_TYPE_STATIC)
        return TRUE;
    return zero_range(img, s, offset, len, DISCARD, error);
}

/* ----- check ----- */

static void add_problem(VdCheckResult *res, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void add_problem(VdCheckResult *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_ptr_array_add(res->messages, g_strdup_vprintf(fmt, ap));
    va_end(ap);
}

/* Repair an entry whose data is lost: it reads zero from now on (for a
 * differencing image too, rather than showing the parent's old data). */
static gboolean drop_entry(VdImage *img, Vdi *s, guint32 i, VdCheckResult *res, GError **error)
{
    s->bmap[i] = s->h.type == VDI_TYPE_DIFF ? BMAP_ZERO : BMAP_UNALLOCATED;
    if (!bmap_store(img, s, i, 1, error))
        return FALSE;
    res->corruptions_fixed++;
    return TRUE;
}

/* Close the holes in the data area [0, highest): move the last used block
 * into the first unused one until none is left below a used one, the way
 * VirtualBox compacts. Each move copies the data before the entry points
 * at it, so a crash leaves at worst an extra copy. Then the header counts
 * exactly the used blocks and the file ends after them. */
static gboolean compact(VdImage *img, Vdi *s, guint32 highest, GError **error)
{
    g_autofree guint32 *owner = g_try_new(guint32, MAX(highest, 1));
    if (owner == NULL) {
        vd_set_error(error, img, VD_ERROR_FAILED, "not enough memory to compact the image");
        return FALSE;
    }
    for (guint32 b = 0; b < highest; b++)
        owner[b] = BMAP_UNALLOCATED;
    for (guint32 i = 0; i < s->h.blocks; i++)
        if (IS_STORED(s->bmap[i]) && s->bmap[i] < highest)
            owner[s->bmap[i]] = i;
    g_autofree guint8 *buf = g_malloc(s->h.block_size);
    g_autoptr(GArray) moved = g_array_new(FALSE, FALSE, sizeof(guint32));
    /* The entries that gave up their blocks are on stable storage before
     * those blocks are written over. */
    if (!vd_file_sync(img->file, error))
        return FALSE;
    guint32 lo = 0, hi = highest;
    for (;;) {
        while (lo < hi && owner[lo] != BMAP_UNALLOCATED)
            lo++;
        while (hi > lo && owner[hi - 1] == BMAP_UNALLOCATED)
            hi--;
        if (lo + 1 >= hi)
            break;
        guint32 from = hi - 1, entry = owner[from];
        if (!vd_file_pread_zero_past_eof(img->file, block_host_offset(s, from), buf,
                                         s->h.block_size, error) ||
            !vd_file_pwrite(img->file, block_host_offset(s, lo), buf, s->h.block_size, error))
            return FALSE;
        s->bmap[entry] = lo;
        g_array_append_val(moved, entry);
        owner[lo] = entry;
        owner[from] = BMAP_UNALLOCATED;
    }
    /* The moved data is durable before the entries point at it, and the
     * entries before the blocks they left are cut off. */
    if (moved->len > 0 && !vd_file_sync(img->file, error))
        return FALSE;
    for (guint i = 0; i < moved->len; i++)
        if (!bmap_store(img, s, g_array_index(moved, guint32, i), 1, error))
            return FALSE;
    if (moved->len > 0 && !vd_file_sync(img->file, error))
        return FALSE;
    /* Now [0, lo) is all used and nothing above. */
    s->h.allocated = lo;
    s->next_block = lo;
    return header_store_file(img, s, error) &&
           vd_file_truncate(img->file, block_host_offset(s, lo), error);
}

/* Walk the map: entries out of range, two entries sharing a block, blocks
 * nobody uses, and the header's allocated count against the map. */
static gboolean vdi_check(VdImage *img, VdCheckRepair repair, VdCheckResult *res, GError **error)
{
    Vdi *s = img->priv;
    guint64 file_size;
    if (!vd_file_size(img->file, &file_size, error))
        return FALSE;
    g_autofree guint8 *used = g_try_malloc0(s->h.blocks / 8 + 1);
    if (used == NULL) {
        vd_set_error(error, img, VD_ERROR_FAILED, "not enough memory to check the block map");
        return FALSE;
    }
    guint32 counted = 0, highest = 0;
    if (s->held < s->h.blocks) {
        res->corruptions++;
        add_problem(res, "the block map of %u entries runs past the end of the file (it holds %u)",
                    s->h.blocks, s->held);
    }
    for (guint32 i = 0; i < s->held; i++) {
        guint32 e = s->bmap[i];
        if (!IS_STORED(e))
            continue;
        const char *problem = entry_problem(s, e, file_size);
        if (problem != NULL) {
            res->corruptions++;
            add_problem(res, "block map entry %u %s (block %u)", i, problem, e);
        } else if (used[e / 8] & (1u << (e % 8))) {
            res->corruptions++;
            add_problem(res, "block map entry %u points at block %u, which another entry uses", i,
                        e);
        }
        if (problem != NULL || (used[e / 8] & (1u << (e % 8)))) {
            if ((repair & VD_CHECK_REPAIR_ERRORS) && !drop_entry(img, s, i, res, error))
                return FALSE;
            continue;
        }
        used[e / 8] |= (guint8)(1u << (e % 8));
        counted++;
        highest = MAX(highest, e + 1);
    }
    if (repair & VD_CHECK_REPAIR_ERRORS)
        s->bad_entries = 0; /* all dropped above */
    /* No cluster counts, no end offset: qemu-img's check of a VDI has
     * none, and scripts compare the keys and lines it prints. */
    guint32 header_count = s->h.allocated;
    if (highest > counted) {
        /* Blocks inside the data area no entry uses: space lost. */
        res->leaks += highest - counted;
        add_problem(res, "%u of the %u blocks in the data area are used by no block map entry",
                    highest - counted, highest);
        if (repair & VD_CHECK_REPAIR_LEAKS) {
            if (!compact(img, s, highest, error))
                return FALSE;
            res->leaks_fixed += highest - counted;
            highest = counted;
        }
    }
    if (header_count != counted) {
        res->corruptions++;
        add_problem(res, "the header counts %u allocated blocks, the block map uses %u",
                    header_count, counted);
        if (s->h.allocated == counted) /* compacting set it right */
            res->corruptions_fixed++;
        /* With unused blocks below the last used one the count must stay
         * above them, or VirtualBox would allocate over a used block. */
        else if ((repair & VD_CHECK_REPAIR_ERRORS) && highest == counted) {
            s->h.allocated = counted;
            s->next_block = counted;
            if (!header_store_file(img, s, error))
                return FALSE;
            res->corruptions_fixed++;
        }
    }
    return TRUE;
}

/* ----- info ----- */

/* The UUIDs that tie a chain together, as VBoxManage showmediuminfo shows
 * them; the parent's file is the info's backing file. */
static void vdi_get_info(VdImage *img, VdImageInfo *info)
{
    Vdi *s = img->priv;
    info->cluster_size = s->h.block_size;
    GVariantBuilder b;
    g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
    g_autofree char *uuid = uuid_to_string(s->h.uuid_image);
    g_variant_builder_add(&b, "{sv}", "image-uuid", g_variant_new_string(uuid));
    if (s->h.type == VDI_TYPE_DIFF) {
        g_autofree char *parent = uuid_to_string(s->h.uuid_link);
        g_variant_builder_add(&b, "{sv}", "parent-uuid", g_variant_new_string(parent));
    }
    info->format_specific = g_variant_builder_end(&b);
}

static guint32 vdi_cluster_size(VdImage *img)
{
    Vdi *s = img->priv;
    return s->h.block_size;
}

static gboolean vdi_has_zero_init(VdImage *img)
{
    Vdi *s = img->priv;
    return s->h.type != VDI_TYPE_DIFF;
}

const VdDriver vd_driver_vdi = {
    .name = "vdi",
    .create_options = vdi_create_options,
    .probe = vdi_probe,
    .open = vdi_open,
    .close = vdi_close,
    .flush = vdi_flush,
    .create = vdi_create,
    .block_status = vdi_block_status,
    .read = vdi_read,
    .write = vdi_write,
    .write_zeroes = vdi_write_zeroes,
    .discard = vdi_discard,
    .get_info = vdi_get_info,
    .check = vdi_check,
    .has_zero_init = vdi_has_zero_init,
    .cluster_size = vdi_cluster_size,
    .check_backing = vdi_check_backing,
};
