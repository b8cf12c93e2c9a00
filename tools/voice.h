/* vdisk: the voice the tool speaks in.
 *
 * Under its own name vdisk says what went wrong and what to do about it.
 * Run as "qemu-img" (a symlink, a drop-in on PATH) it speaks as qemu-img
 * 7.2 does, because scripts and the qemu-iotests compare its words: the
 * "qemu-img:" prefix, qemu-img's wording of the errors they look at, no
 * hints or notes of vdisk's own. Every message to the user passes through
 * here, so the two voices live in one file.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Choose the voice from argv[0]'s base name (main calls it first). */
void voice_init(const char *argv0);
/* TRUE when vdisk runs as qemu-img. */
gboolean voice_is_qemu(void);
/* "vdisk" or "qemu-img": the prefix of every message. */
const char *voice_program(void);
/* message as the voice says it: unchanged under vdisk's name, in
 * qemu-img's words where vdisk's differ under qemu-img's. Free with
 * g_free. */
char *voice_error_text(const char *message);
/* What ends the line of text: a newline, or nothing where qemu-img
 * prints none. */
const char *voice_line_end(const char *text);
/* The hint line after "Try '... --help'": "vdisk COMMAND --help" or
 * qemu-img's "qemu-img --help" (without a full stop, as qemu-img). */
void voice_try_help(const char *command);
/* The warning when probing guessed raw for an image that is written. */
void voice_warn_probed_raw(const char *path);

G_END_DECLS
