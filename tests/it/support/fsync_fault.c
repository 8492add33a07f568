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

int fdatasync(int fd) {
    static int (*real)(int);
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    }
    if (fails(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (real == NULL) {
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    }
    if (fails(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}
