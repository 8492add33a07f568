# shellcheck shell=bash
# A throwaway Debian 12 machine with a real systemd as PID 1, for tests/e2e/run.sh.
#
# container_rootfs ROOT   builds the root file system with mmdebstrap from this machine's apt
#                         sources (E2E_ROOTFS_CACHE=file.tar.zst: reuse it, or save it there)
# container_boot ROOT     boots /lib/systemd/systemd in fresh pid/mount/uts/ipc/net/cgroup
#                         namespaces and waits until the system is running; sets
#                         CONTAINER_PID1 and CONTAINER_STATE (is-system-running)
# container_teardown      powers it off, kills what is left, removes its cgroup
# in_c CMD... / c_sh TEXT run a command (or a shell text) inside it, as root
#
# The host is never touched: no host device node is bound in (a fresh tmpfs /dev with its own
# nodes), /proc/sys and /sys are read-only, the container has its own network namespace with only
# `lo`, and its cgroup is a sub-cgroup of ours, removed once empty. Its journal is persistent, in
# ROOT/var/log/journal, so it can be read from outside after the fact.
# `mount --make-rshared /` before systemd starts: systemd leaves propagation alone in a container,
# and without shared propagation the credentials it mounts for a service (LoadCredential=) never
# become visible to the service.
# Sourced, not run; it knows nothing about gradata.

CONTAINER_PID1=""
CONTAINER_STATE=""
_container_unshare=""
_container_cgroup=""

container_rootfs() {
    local root=$1
    mkdir -p "$root"
    if [ -n "${E2E_ROOTFS_CACHE:-}" ] && [ -f "$E2E_ROOTFS_CACHE" ]; then
        tar --zstd -xpf "$E2E_ROOTFS_CACHE" -C "$root" --numeric-owner
        return
    fi
    if ! command -v mmdebstrap >/dev/null || ! command -v zstd >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq </dev/null
        apt-get install -y -qq --no-install-recommends mmdebstrap zstd </dev/null >/dev/null
    fi
    # procps for /bin/kill (a dependency of the package, which dpkg -i does not fetch);
    # libpam-systemd, without which user@.service gets no XDG_RUNTIME_DIR and a user's manager
    # exits at once (the per-user units are tested under a real one); python3
    # runs the fake ingest server and the clients; sqlite3 fills and reads the queue; rpm for the
    # RPM's scriptlets.
    # A second try if the mirror hiccups: a download error is not what this suite tests.
    local attempt
    for attempt in 1 2; do
        mmdebstrap --quiet --variant=minbase \
            --include=systemd,systemd-sysv,dbus,libpam-systemd,procps,curl,sqlite3,python3,rpm \
            --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            bookworm "$root" </dev/null && break
        [ "$attempt" = 1 ] || return 1
        echo "mmdebstrap failed; trying once more"
        rm -rf "$root" && mkdir -p "$root"
    done
    if [ -n "${E2E_ROOTFS_CACHE:-}" ]; then
        tar --zstd -cpf "$E2E_ROOTFS_CACHE" -C "$root" --numeric-owner .
    fi
}

container_boot() {
    local root=$1 cgroot=/sys/fs/cgroup/unified state=""
    echo e2e-container >"$root/etc/hostname"
    : >"$root/etc/machine-id"
    # minbase has no /etc/hosts; real systems do (resolving "localhost" needs it).
    printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
    mkdir -p "$root/var/log/journal"
    ln -sf /dev/null "$root/etc/systemd/system/console-getty.service"

    [ -d "$cgroot" ] || cgroot=/sys/fs/cgroup
    _container_cgroup=$cgroot/gradata-e2e.$$
    mkdir "$_container_cgroup"
    (
        echo $BASHPID >"$_container_cgroup/cgroup.procs"
        exec unshare --pid --fork --kill-child --mount --uts --ipc --net --cgroup --propagation private \
            env -i container=other TERM=dumb PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            /bin/sh -euc '
            R=$0
            mount --bind "$R" "$R"
            mount -t tmpfs -o mode=755,size=16m,nosuid tmpfs "$R/dev"
            for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
                n=${d%%:*}; mm=${d#*:}; mknod -m 666 "$R/dev/$n" c ${mm%:*} ${mm#*:}
            done
            mknod -m 600 "$R/dev/console" c 1 3
            mkdir -m 755 "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
            mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$R/dev/pts"
            ln -s pts/ptmx "$R/dev/ptmx"; ln -s /proc/self/fd "$R/dev/fd"
            ln -s /proc/self/fd/0 "$R/dev/stdin"; ln -s /proc/self/fd/1 "$R/dev/stdout"
            ln -s /proc/self/fd/2 "$R/dev/stderr"
            mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
            mount --bind "$R/proc/sys" "$R/proc/sys"; mount -o remount,bind,ro "$R/proc/sys"
            mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
            mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
            cd "$R"; mkdir -p .oldroot; pivot_root . .oldroot
            exec /bin/sh -c "umount -l /.oldroot && rmdir /.oldroot && mount --make-rshared / && exec /lib/systemd/systemd"
        ' "$root"
    ) </dev/null >"$root.boot.log" 2>&1 &
    _container_unshare=$!
    for _ in $(seq 200); do
        CONTAINER_PID1=$(ps -o pid= --ppid "$_container_unshare" | tr -d ' ' || true)
        [ -n "$CONTAINER_PID1" ] && [ "$(cat "/proc/$CONTAINER_PID1/comm" 2>/dev/null)" = systemd ] && break
        sleep 0.05
    done
    # systemctl fails until systemd has created its private socket: retry until it prints a state.
    for _ in $(seq 300); do
        state=$(timeout 60 nsenter -t "$CONTAINER_PID1" -m -u -i -n -p -C \
            systemctl is-system-running --wait 2>/dev/null || true)
        case "$state" in running | degraded | maintenance | stopping) break ;; esac
        sleep 0.1
    done
    CONTAINER_STATE=$state
}

container_teardown() {
    local bp=$_container_unshare cg=$_container_cgroup
    if [ -n "$bp" ] && kill -0 "$bp" 2>/dev/null; then
        [ -n "$CONTAINER_PID1" ] && kill -s RTMIN+4 "$CONTAINER_PID1" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$bp" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$bp" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$bp" 2>/dev/null || break; sleep 0.1; done
    fi
    if [ -n "$cg" ] && [ -d "$cg" ]; then
        for _ in $(seq 100); do grep -q 'populated 0' "$cg/cgroup.events" && break; sleep 0.1; done
        find "$cg" -depth -type d -exec rmdir {} \; || true
    fi
    _container_unshare=""
    _container_cgroup=""
}

in_c() { nsenter -t "$CONTAINER_PID1" -m -u -i -n -p -C "$@"; }
c_sh() { in_c sh -c "$1"; }
