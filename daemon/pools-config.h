/* Pools configured in /etc/vdisk/pools.d (every .conf file there). */
#pragma once

#include <glib.h>

#define VDD_DEFAULT_CONFIG_DIR "/etc/vdisk/pools.d"

typedef struct {
    char *name;
    char *type;        /* "dir" or "logical" */
    char *directory;   /* dir: the directory; NULL for the others */
    char *pool_source; /* logical: the volume group (Source=) */
    char *source;      /* the file it came from */
} VddPoolConfig;

void vdd_pool_config_free(VddPoolConfig *pc);

/* Parse one file: a key file with one or more [Pool] or [Pool NAME] groups
 * holding Type= (dir when absent), Directory= for a dir pool, Source= (the
 * volume group) for a logical one, and Name= for a bare [Pool]. Returns
 * VddPoolConfig* entries. */
GPtrArray *vdd_config_parse(const char *filename, const char *data, gsize len, GError **error);
/* Every *.conf in dir in name order; a bad file is skipped with a warning.
 * A missing dir gives an empty array. */
GPtrArray *vdd_config_load_pools(const char *dir, GError **error);
