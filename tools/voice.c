/* vdisk: the voice the tool speaks in (see voice.h). */
#include "voice.h"

#include <stdio.h>
#include <string.h>

static gboolean qemu_voice;

void voice_init(const char *argv0)
{
    g_autofree char *base = g_path_get_basename(argv0 != NULL ? argv0 : "vdisk");
    qemu_voice = g_str_equal(base, "qemu-img");
}

gboolean voice_is_qemu(void) { return qemu_voice; }

const char *voice_program(void) { return qemu_voice ? "qemu-img" : "vdisk"; }

/* vdisk's message (a pattern over the whole text) and qemu-img 7.2's
 * words for it. vdisk's own sentences keep qemu-img's key words; these
 * undo the rest: what vdisk adds (the formats it knows, why a header was
 * refused) and where vdisk says it another way. */
static const struct {
    const char *vdisk;
    const char *qemu;
} qemu_words[] = {
    /* qemu's file layer names the file a second time. */
    { "^Could not open '([^']*)': (No such file or directory|Permission denied|Is a directory)$",
      "Could not open '\\1': Could not open '\\1': \\2" },
    { "^Could not open '([^']*)': Unknown file format '([^']*)'.*$",
      "Could not open '\\1': Unknown driver '\\2'" },
    { "^(.*)Unknown file format '([^']*)'[;( ].*$", "\\1Unknown file format '\\2'" },
    { "(Image is not in [a-z0-9]+ format): .*$", "\\1" },
    { "^(?:.*: )?invalid size '[^']*': (Invalid image size specified\\. Must be .*)$", "\\1" },
    { "^(?:.*: )?invalid size '[^']*': use a number of bytes .*$",
      "Invalid image size specified. You may use k, M, G, T, P or E suffixes for\n"
      "qemu-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes." },
    { "^(.*: Image creation needs a size parameter): give one .*$", "\\1" },
    { "^(.*: Invalid parameter '[^']*'): .* has no such option .*$", "\\1" },
    { "^(?:unknown option|option) '(-[^']*)'( needs a value)?$", "unrecognized option '\\1'" },
    { "^[a-z-]+: missing file name$", "Expecting one image file name" },
    { "^[a-z-]+: missing operand$", "Not enough arguments" },
    { "^[a-z-]+: too many operands$", "Expecting one image file name" },
    { "^no command '([^']*)'.*$", "Command not found: \\1" },
    { "^the [a-z0-9]+ format has no option '([^']*)'$", "Invalid parameter '\\1'" },
    { "^(.+: Parameter 'size' expects a non-negative number below 2\\^64): .*$",
      "\\1\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
      "and exabytes, respectively." },
    { "^Could not open '[^']*': ([^ ]+): backing chain loops back to this file$",
      "Backing file '\\1' creates an infinite loop." },
    { "^Could not open '([^']*)': backing chain loops back to this file$",
      "Backing file '\\1' creates an infinite loop." },
    { "^Failed in parsing snapshot param '([^']*)': unknown key '([^']*)'; .*$",
      "Invalid parameter '\\2'\nqemu-img: Failed in parsing snapshot param '\\1'" },
    { "^--output must be 'human' or 'json', not '.*'$",
      "--output must be used with human or json as argument." },
    { "^Invalid image size specified '[^']*': use a byte count .*$",
      "Invalid image size specified. You may use k, M, G, T, P or E suffixes for\n"
      "qemu-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes." },
    { "^.*: (Preallocation can only be used for growing images)$", "\\1" },
    { "^shrinking '[^']*' from .* drops everything past the new end; pass --shrink .*$",
      "Use the --shrink option to perform a shrink operation.\n"
      "qemu-img: warning: Shrinking an image will delete all data beyond the shrunken image's end. "
      "Before performing such an operation, make sure there is no important data there." },
    /* create's errors as qemu's drivers word them */
    { "^(.+): Could not open '[^']*': not a vmdk descriptor\nCould not open backing image\\.$",
      "\\1: invalid VMDK image descriptor\nCould not open backing image." },
    { "^(.+): Could not open '[^']*': unknown image format '([^']*)' \\(known: [^)]*\\)\n"
      "Could not open backing image\\.$",
      "\\1: Unknown driver '\\2'\nCould not open backing image." },
    { "^(.+): could not open backing file '([^']*)': (?:\\2: )?(?:cannot open: )?(.*)$",
      "\\1: Could not open '\\2': \\3\nCould not open backing image." },
    { "^(.+): cluster_size must be a power of two from 512 bytes to 2 MiB$",
      "\\1: Cluster size must be a power of two between 512 and 2048k" },
    { "^(.+): lazy_refcounts need compat=1\\.1$",
      "\\1: Lazy refcounts only supported with compatibility level 1.1 and above (use "
      "version=v3 or greater)" },
    { "^(.+): option compat: '([^']*)' is not one of: .*$",
      "\\1: Parameter 'version' does not accept value '\\2'" },
    { "^(.+): option compression_type: '([^']*)' is not one of: .*$",
      "\\1: Parameter 'compression-type' does not accept value '\\2'" },
    { "^(.+): option ([a-z_.-]+): '([^']*)' is not one of: .*$",
      "\\1: Parameter '\\2' does not accept value '\\3'" },
    { "^(.+): option ([a-z_.-]+): '([^']*)' is not on or off$",
      "\\1: Parameter '\\2' expects 'on' or 'off'" },
    { "^(.+): refcount_bits must be a power of two from 1 to 64, not '[^']*'$",
      "\\1: Refcount width must be a power of two and may not exceed 64 bits" },
    { "^(.+): refcount_bits other than 16 need compat=1\\.1$",
      "\\1: Different refcount widths than 16 bits require compatibility level 1.1 or above (use "
      "version=v3 or greater)" },
    { "^(.+): extended_l2 needs a cluster_size of at least 16k$",
      "\\1: Extended L2 entries are only supported with cluster sizes of at least 16384 bytes" },
    { "^(.+): virtual size [0-9]+ is too large for [0-9]+-byte clusters$",
      "\\1: The image size is too large for file format 'qcow2' (try using a larger cluster "
      "size)" },
    { "^[^ ]+ has no backing file to commit into$", "Image does not have a backing file" },
    { "^(.+) is not in the backing chain of (.+)$",
      "Did not find '\\1' in the backing chain of '\\2'" },
    /* qcow2's incompatible features: qemu gives the unnamed ones as a mask */
    { "^(.*)uses (qcow2) features this version does not support: (.*)unknown incompatible "
      "feature bits? [0-9, ]+ \\(mask 0x([0-9a-f]+)\\)$",
      "\\1Unsupported \\2 feature(s): \\3Unknown incompatible feature: \\4" },
    { "^(.*)uses (qcow2) features this version does not support: (.*)$",
      "\\1Unsupported \\2 feature(s): \\3" },
    { "^(.*)(Image is too big): .*$", "\\1\\2" },
    { "^(.*)L1 table has [0-9]+ entries, too few for the virtual size [0-9]+$",
      "\\1L1 table is too small" },
    /* a snapshot whose L1 table is damaged, as qemu refuses it when used */
    { "^(Could not apply snapshot '[^']*': ).*: snapshot '[^']*' has an invalid L1 table: offset "
      ".*$",
      "Snapshot L1 table offset invalid\nqemu-img: \\1Failed to load snapshot: Invalid argument" },
    { "^(Could not apply snapshot '[^']*': ).*: snapshot '[^']*' has an invalid L1 table: [0-9]+ "
      "entries.*$",
      "Snapshot L1 table too large\nqemu-img: \\1Failed to load snapshot: File too large" },
    { "^(Could not delete snapshot '[^']*': ).*: snapshot '[^']*' has an invalid L1 table: offset "
      ".*$",
      "\\1Snapshot L1 table offset invalid" },
    { "^(Could not delete snapshot '[^']*': ).*: snapshot '[^']*' has an invalid L1 table: [0-9]+ "
      "entries.*$",
      "\\1Snapshot L1 table too large" },
    { "^(Failed to load snapshot) '[^']*': .*: snapshot '[^']*' has an invalid L1 table: offset "
      ".*$",
      "\\1: Snapshot L1 table offset invalid" },
    { "^(Failed to load snapshot) '[^']*': .*: snapshot '[^']*' has an invalid L1 table: [0-9]+ "
      "entries.*$",
      "\\1: Snapshot L1 table too large" },
    /* amend, as its downgrade words it */
    { "^[^:]*: snapshot '[^']*' has an invalid L1 table: offset .*$",
      "Snapshot L1 table offset invalid\nqemu-img: Failed to turn zero into data clusters: "
      "Invalid argument" },
    { "^[^:]*: snapshot '[^']*' has an invalid L1 table: [0-9]+ entries.*$",
      "Snapshot L1 table too large\nqemu-img: Failed to turn zero into data clusters: File too "
      "large" },
    /* qemu-img gives the errno of a failed snapshot create */
    { "^(Could not create snapshot '[^']*': ).*: refcount of cluster [0-9]+ would overflow .*$",
      "\\1-22 (Invalid argument)" },
    { "^(Could not create snapshot '[^']*': ).*: the refcount table would grow past the [0-9]+ "
      "MiB limit$",
      "\\1-27 (File too large)" },
    { "^(Could not create snapshot '[^']*': ).*: the snapshot table is full.*$",
      "\\1-27 (File too large)" },
    /* vmdk's refusals, without the detail vdisk adds */
    { "^(Could not open '[^']*': )not a vmdk descriptor$", "\\1invalid VMDK image descriptor" },
    { "^(.*)malformed extent line '(.*)'$", "\\1Invalid extent line: \\2" },
    { "^(.*)file truncated: it is [0-9]+ bytes, the header expects at least ([0-9]+) bytes$",
      "\\1File truncated, expecting at least \\2 bytes" },
    { "^(.*)L1 size too big: .*$", "\\1L1 size too big" },
    /* blkdebug's config files */
    { "^(Could not open '[^']*': )Could not read blkdebug config file .*: ([^:]*)$",
      "\\1Could not read blkdebug config file: \\2" },
    { "^(Could not open '[^']*': ).*:[0-9]+: Invalid event name \"(.*)\"$",
      "\\1invalid parameter value: \\2" },
    { "^(Could not open '[^']*': ).*:[0-9]+: unknown section \\[([^] ]*)[^]]*\\]: .*$",
      "\\1There is no option group '\\2'" },
    { "^(Could not open '[^']*': ).*:[0-9]+: (Missing event name for rule)$", "\\1\\2" },
    /* an I/O error (blkdebug injects them): qemu gives the errno's text */
    { "^(error while reading at byte [0-9]+: ).*: read failed: ([^:]*)$", "\\1\\2" },
    { "^(Block job failed: ).*: (?:read|write|sync|writing zeroes|discard|"
      "block status) failed: ([^:]*)$",
      "\\1\\2" },
    /* a write qemu's raw driver refuses in a raw image it probed */
    { "^(Block job failed: )?.*: (Operation not permitted): the format was probed .*$", "\\1\\2" },
    /* vdi's */
    { "^(.*)disk size [0-9]+ \\((0x[0-9a-f]+)\\) is too large: at most [0-9]+ \\((0x[0-9a-f]+)\\) "
      "bytes$",
      "\\1Unsupported VDI image size (size is \\2, max supported is \\3)" },
    { "^(.*)disk size ([0-9]+) does not fit in the [0-9]+ blocks of [0-9]+ bytes \\(([0-9]+) "
      "bytes\\) the block map describes$",
      "\\1unsupported VDI image (disk size \\2, image bitmap has room for \\3)" },
    { "^(.*)the block map has ([0-9]+) entries, more than the ([0-9]+) allowed$",
      "\\1unsupported VDI image (too many blocks \\2, max is \\3)" },
    /* qemu takes 1 MiB blocks only; vdisk any power of two VirtualBox takes */
    { "^(.*)block size ([0-9]+) is not a power of two between [0-9]+ and [0-9]+$",
      "\\1unsupported VDI image (block size \\2 is not 1048576)" },
    /* NBD exports, as qemu's nbd driver words it */
    { "^(Could not open '[^']*': )cannot connect to the NBD server at '([^']*)': (.*)$",
      "\\1Failed to connect to '\\2': \\3" },
    { "^(Could not open '[^']*': )the NBD server at '[^']*' has no export named '([^']*)'$",
      "\\1Requested export not available\nserver reported: export '\\2' not present" },
    { "^Could not open '(nbds[^:]*)(:[^']*)': NBD over TLS .*$",
      "Could not open '\\1\\2': Unknown protocol '\\1'" },
    { "^(Could not open 'nbd[^:]*://[^']*': )not a valid NBD address: .*$",
      "\\1No valid URL specified" },
    { "^(Could not open 'nbd:([^']*)': )not a valid NBD address: .*$",
      "\\1error parsing address '\\2'" },
    { "^(?:Could not open '[^']*': )?([^ ]+): the NBD export is read-only: .*$",
      "Could not open '\\1': Could not open image: Permission denied" },
    { "^(.+): the NBD export is [0-9]+ bytes, smaller than the [0-9]+ bytes asked for .*$",
      "\\1: Cannot grow NBD nodes" },
    { "^.*: target is smaller \\([0-9]+ bytes\\) than the source .* \\([0-9]+ bytes\\)$",
      "output file is smaller than input file" },
    /* a block device's size is its own */
    { "^.*: is a block device of [0-9]+ bytes and cannot be resized to .*$",
      "Cannot resize device files" },
    { "^(.+): is a block device of [0-9]+ bytes, which cannot grow to [0-9]+$",
      "\\1: Cannot grow device files" },
    /* amend of LUKS key slots: qemu names no file, nor what to do instead */
    { "^.*: (Can't add a keyslot - all keyslots are in use): .*$", "\\1" },
    { "^.*: (Refusing to overwrite active keyslot [0-9]+ - please erase it first) \\(.*\\)$",
      "\\1" },
    { "^.*: ((?:Attempt to erase the only|All the) active keyslots? .* - refusing operation) "
      "\\(--force does it\\)$",
      "\\1" },
    { "^.*: (No keyslots match given \\(old\\) password for erase operation) \\(.*\\)$", "\\1" },
    { "^.*: (Given keyslot [0-9]+ is already erased \\(inactive\\))$", "\\1 " },
    { "^.*: (Invalid keyslot [0-9]+ specified, must be between 0 and 7|Given keyslot [0-9]+ "
      "doesn't contain the given old password for erase operation|To erase keyslot\\(s\\), .* "
      "must be given|'new-secret' is required to activate a keyslot|Parameter 'state' is "
      "missing)(?: \\(.*\\))?$",
      "\\1" },
    { "^.*: (?:encrypt\\.)?(?:old|new)-secret names the secret '([^']*)', which was not given .*$",
      "No secret with id '\\1'" },
    /* the key of a new encrypted image (create, convert, measure) */
    { "^(.+: )?(?:encrypt\\.)?key-secret names the secret '([^']*)', which was not given .*$",
      "\\1No secret with id '\\2'" },
    { "^(.+): an encrypted image needs a passphrase: give ((?:encrypt\\.)?key-secret)=ID .*$",
      "\\1: Parameter '\\2' is required for cipher" },
};

char *voice_error_text(const char *message)
{
    if (!qemu_voice)
        return g_strdup(message);
    for (gsize i = 0; i < G_N_ELEMENTS(qemu_words); i++) {
        g_autoptr(GRegex) re = g_regex_new(qemu_words[i].vdisk, G_REGEX_DOTALL, 0, NULL);
        g_assert(re != NULL);
        if (g_regex_match(re, message, 0, NULL))
            return g_regex_replace(re, message, -1, 0, qemu_words[i].qemu, 0, NULL);
    }
    return g_strdup(message);
}

const char *voice_line_end(const char *text)
{
    /* qemu-img ends this error of create without a newline. */
    if (qemu_voice && strstr(text, "\nDetected format of ") != NULL && g_str_has_suffix(text, "."))
        return "";
    return "\n";
}

void voice_try_help(const char *command)
{
    if (qemu_voice)
        fprintf(stderr, "Try 'qemu-img --help' for more information\n");
    else if (command != NULL)
        fprintf(stderr, "Try 'vdisk %s --help' for more information.\n", command);
    else
        fprintf(stderr, "Try 'vdisk --help' for more information.\n");
}

void voice_warn_probed_raw(const char *path)
{
    /* qemu-img's first line, so people who know it recognise it; under
     * vdisk's name the next says what the danger is instead of a
     * restriction vdisk does not implement. */
    fprintf(stderr, "WARNING: Image format was not specified for '%s' and probing guessed raw.\n",
            path);
    if (qemu_voice)
        fprintf(stderr, "         Automatically detecting the format is dangerous for raw images, "
                        "write operations on block 0 will be restricted.\n"
                        "         Specify the 'raw' format explicitly to remove the "
                        "restrictions.\n");
    else
        fprintf(stderr,
                "         Automatically detecting the format is dangerous for raw images: data a "
                "guest\n"
                "         writes to block 0 can make later probes see another format.\n"
                "         Specify the 'raw' format explicitly (-f raw) to remove this warning.\n");
}
