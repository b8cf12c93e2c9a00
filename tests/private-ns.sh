#!/bin/bash
# private-ns.sh [--private DIR]... [--] COMMAND [ARG]...
#
# Run COMMAND in a mount namespace of its own, where /etc, polkit's actions
# folder and every --private DIR are private copies: the test users it adds,
# the polkit policy and rules it installs and the service state it writes
# (libvirt's /run and /var/lib folders) never reach the host's files, and two
# test runs on one machine never meet. The copies go with the namespace when
# COMMAND ends. Needs root; exits 77 (skip) with the reason when the kernel
# or the container refuses a mount namespace. Inside a namespace made by
# this script it only runs COMMAND (after making the --private DIRs).
set -u

private=(/usr/share/polkit-1/actions)
while (($#)); do
    case $1 in
        --private) private+=("$2"); shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
(($#)) || { echo "usage: private-ns.sh [--private DIR]... [--] COMMAND [ARG]..." >&2; exit 2; }

if [[ -z ${VDISK_PRIVATE_NS:-} ]]; then
    [[ $(id -u) == 0 ]] || { echo "1..0 # SKIP a private mount namespace needs root"; exit 77; }
    if ! unshare --mount --propagation private true 2>/dev/null; then
        echo "1..0 # SKIP cannot make a private mount namespace (unshare --mount refused)"
        exit 77
    fi
    args=()
    for d in "${private[@]}"; do args+=(--private "$d"); done
    exec unshare --mount --propagation private -- \
        env VDISK_PRIVATE_NS=setup "$0" "${args[@]}" -- "$@"
fi

copies=${VDISK_PRIVATE_COPIES:-}
if [[ $VDISK_PRIVATE_NS == setup ]]; then
    copies=$(mktemp -d /tmp/vdisk-private-ns.XXXXXX)
    # /etc whole: useradd and groupadd replace /etc/passwd by renaming, which
    # a bind mount of the single file would not survive.
    cp -a /etc "$copies/etc" && mount --bind "$copies/etc" /etc ||
        { echo "cannot make a private /etc" >&2; rm -rf "$copies"; exit 1; }
fi
# Every other private folder starts empty (a service's state: libvirt's
# /run and /var/lib folders), but for polkit's actions, which polkitd needs
# as they are.
n=$(ls "$copies" | wc -l)
mounted=()
for d in "${private[@]}"; do
    if [[ ! -d $d ]]; then
        # Made on the host it would outlive the test: the service that
        # needs it is not installed, and its test skips.
        echo "private-ns: $d does not exist here; not made" >&2
        continue
    fi
    n=$((n + 1))
    mkdir "$copies/dir$n" || exit 1
    [[ $d == /usr/share/polkit-1/actions ]] && cp -a "$d/." "$copies/dir$n/"
    mount --bind "$copies/dir$n" "$d" || { echo "cannot make $d private" >&2; exit 1; }
    mounted+=("$d")
done

if [[ $VDISK_PRIVATE_NS == ready ]]; then
    exec "$@"
fi
export VDISK_PRIVATE_NS=ready VDISK_PRIVATE_COPIES=$copies
"$@"
rc=$?
for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}"; done
umount -l /etc
rm -rf "$copies"
exit $rc
