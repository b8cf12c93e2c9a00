/* Names in folders: making a file's name durable, and naming a file
 * without replacing another. Kept apart from the image code so that
 * vdiskctl, which uses them, links these alone. */
#include "vdisk-driver.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h> /* renameat2 */
#include <unistd.h>

gboolean vd_sync_parent_dir(const char *path, GError **error)
{
    g_autofree char *dir = g_path_get_dirname(path);
    int fd = open(dir, O_RDONLY | O_CLOEXEC | O_DIRECTORY);
    if (fd < 0) {
        int err = errno;
        vd_set_file_error(error, dir, err == ENOENT ? VD_ERROR_NOT_FOUND : VD_ERROR_IO,
                          "cannot open the folder to sync it: %s", g_strerror(err));
        return FALSE;
    }
    /* Some file systems cannot sync a directory (EINVAL): their entries
     * are as durable as they get. */
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc < 0 && err != EINVAL) {
        vd_set_file_error(error, dir, VD_ERROR_IO, "sync failed: %s", g_strerror(err));
        return FALSE;
    }
    return TRUE;
}

int vd_rename_noreplace(int olddirfd, const char *oldname, int newdirfd, const char *newname)
{
    int rc = renameat2(olddirfd, oldname, newdirfd, newname, RENAME_NOREPLACE);
    if (rc < 0 && errno == EINVAL) {
        rc = linkat(olddirfd, oldname, newdirfd, newname, 0);
        if (rc == 0)
            unlinkat(olddirfd, oldname, 0);
    }
    return rc;
}
