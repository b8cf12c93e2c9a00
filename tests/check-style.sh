#!/usr/bin/env bash
# check-style.sh clang-format|xmllint|man SOURCE_ROOT: the `style` suite.
# Files are listed at test time, so new sources are checked without a meson
# change. Exit 77 (skipped) when there is nothing to check.
set -uo pipefail
mode=$1 root=$2
cd "$root" || exit 1
case $mode in
clang-format)
    mapfile -t files < <(find formats qemu-syntax vm nbd tools daemon plugin tests -name '*.[ch]' 2>/dev/null | sort)
    ((${#files[@]})) || exit 77
    bad=0
    for f in "${files[@]}"; do
        clang-format --dry-run --Werror "$f" >/dev/null 2>&1 && continue
        echo "not clang-formatted: $f (see: clang-format $f | diff $f -)"
        bad=$((bad + 1))
    done
    echo "${#files[@]} files checked, $bad not formatted"
    ((bad == 0))
    ;;
xmllint)
    mapfile -t files < <(find dbus polkit \( -name '*.xml' -o -name '*.policy' -o -name '*.policy.in' \
        -o -name '*.conf' \) 2>/dev/null | sort)
    ((${#files[@]})) || exit 77
    xmllint --noout "${files[@]}" && echo "${#files[@]} XML files are well formed"
    ;;
man)
    mapfile -t files < <(find man -name '*.[1-8]' 2>/dev/null | sort)
    ((${#files[@]})) || exit 77
    bad=0
    for f in "${files[@]}"; do
        # -ww: every warning; a page that groff complains about renders badly
        out=$(groff -man -ww -z "$f" 2>&1)
        [[ -z $out ]] && continue
        echo "$f:"; echo "$out"
        bad=$((bad + 1))
    done
    echo "${#files[@]} man pages checked, $bad with warnings"
    ((bad == 0))
    ;;
*)
    echo "usage: $0 clang-format|xmllint|man SOURCE_ROOT" >&2
    exit 2
    ;;
esac
