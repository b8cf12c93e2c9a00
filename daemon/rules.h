/* The rules: for every D-Bus method of vdiskd, the polkit action it needs,
 * the details polkit rules read (how they are made from the call is said
 * by the method's row), and whether it also reads another volume, which is
 * checked again with read-volume. Nothing else decides who may call what;
 * a method missing from the table is denied. */
#pragma once

#include <glib.h>

typedef struct _VddVolume VddVolume;

/* The details a call may give rules, each from the call's VddCallSubject. */
typedef enum {
    VDD_DETAIL_POOL = 1 << 0,     /* "pool": the pool named or called */
    VDD_DETAIL_VOLUME = 1 << 1,   /* "volume": the volume made or changed */
    VDD_DETAIL_FORMAT = 1 << 2,   /* "format": the format written */
    VDD_DETAIL_SNAPSHOT = 1 << 3, /* "snapshot": the snapshot's name */
    VDD_DETAIL_PATH = 1 << 4,     /* "path": the file asked about */
    VDD_DETAIL_SOURCE = 1 << 5,   /* "source-pool", "source-volume": the volume read */
} VddDetails;

typedef struct {
    const char *interface;
    const char *method;
    /* A polkit action id; "" for methods anyone may call. */
    const char *action;
    /* The "operation" detail; NULL: none. */
    const char *operation;
    VddDetails details;
    /* The source volume (details VDD_DETAIL_SOURCE) is checked again
     * with read-volume: its pool, its name and the method as operation. */
    gboolean reads_source;
} VddRule;

/* What a call names, made from its parameters and the object called
 * (strings borrowed from the call). NULL values give no detail. */
typedef struct {
    const char *pool;
    const char *volume;
    const char *format;
    const char *snapshot;
    const char *path;
    VddVolume *source;
} VddCallSubject;

/* The rule for interface.method, or NULL (deny). */
const VddRule *vdd_rule_lookup(const char *interface, const char *method);
/* Every rule, for the tests: *n_rules of them. */
const VddRule *vdd_rules(gsize *n_rules);
/* The details rules see for a call of rule's method with subject: a new
 * table of string to string (owned keys and values). */
GHashTable *vdd_rule_details(const VddRule *rule, const VddCallSubject *subject);
/* The details of the second check, read-volume on source. */
GHashTable *vdd_rule_read_details(const VddRule *rule, VddVolume *source);
