#!/bin/sh
# exe_wrapper of the `valgrind` test setup (meson test --setup valgrind).
# A compiled test runs under valgrind itself. A shell test runs as it is and
# puts valgrind in front of every vdisk it starts (VDISK_WRAPPER, read by
# tests/interop/lib.sh); there valgrind exits 99 on an error, so the exit
# codes vdisk check and compare give (1, 2, 3) keep their meaning.
vg=${VDISK_VALGRIND:-valgrind}
opts="--quiet --leak-check=full --errors-for-leak-kinds=definite --num-callers=30"
if [ -n "${VDISK_VALGRIND_SUPP:-}" ] && [ -r "$VDISK_VALGRIND_SUPP" ]; then
    opts="$opts --suppressions=$VDISK_VALGRIND_SUPP"
fi
if [ "$(head -c 2 "$1" 2>/dev/null)" = "#!" ]; then
    VDISK_WRAPPER="$vg $opts --error-exitcode=99"
    export VDISK_WRAPPER
    exec "$@"
fi
# shellcheck disable=SC2086 # opts is a list of words
exec "$vg" $opts --error-exitcode=1 "$@"
