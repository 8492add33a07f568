/*
 * A failing disk, for one process: preloaded (LD_PRELOAD) into gradata, it makes fsync() and
 * fdatasync() of the outbox's WAL fail with EIO while the file named by $FSYNC_FAULT_MARKER
 * exists. Everything else, and those calls while the file is absent, go to the C library.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fails(int fd) {
    const char *marker = getenv("FSYNC_FAULT_MARKER");
    if (marker == NULL || access(marker, F_OK) != 0) {
        return 0;
    }
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 4) {
        return 0;
    }
    path[n] = '\0';
    return strcmp(path + n - 4, "-wal") == 0;
}

/* Calls the C library's `name` on `fd`, found once into `real`, unless the fault applies. */
static int sync_unless_failing(const char *name, int (**real)(int), int fd) {
    if (*real == NULL) {
        *real = (int (*)(int))dlsym(RTLD_NEXT, name);
    }
    if (fails(fd)) {
        errno = EIO;
        return -1;
    }
    return (*real)(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    return sync_unless_failing("fdatasync", &real, fd);
}

int fsync(int fd) {
    static int (*real)(int);
    return sync_unless_failing("fsync", &real, fd);
}
