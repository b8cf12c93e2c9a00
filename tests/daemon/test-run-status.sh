#!/usr/bin/env bash
# The exit status of run.sh and of every script that starts vdiskd's
# services with scripts/services.sh: 0 exactly when the job succeeded. A
# cleanup that stumbles (a service that left already, a file that cannot be
# put back) must not turn success into failure, as `kill -9` on a vdiskd
# that had already left once made ./run.sh end with 1 after doing its whole
# job; a failed job must not end as success. The cases with the real
# services need root, dbus-daemon and polkitd (skipped without them); the
# others run anywhere.
set -uo pipefail

REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${BUILD:-$REPO/build}
T=$(mktemp -d /tmp/vdisk-run-status.XXXXXX)
trap 'rm -rf "$T"' EXIT
chmod 755 "$T"
passed=0 failed=0

check() { # NAME EXPECTED ACTUAL
  if [[ $2 == "$3" ]]; then
    echo "ok - $1"
    passed=$((passed + 1))
  else
    echo "not ok - $1: expected $2, got $3"
    failed=$((failed + 1))
  fi
}

# job CLEANUP BODY: a script as run.sh is (errexit, nounset, pipefail,
# services.sh sourced, cleanup by vdisk_on_exit); prints its exit status.
job() {
  (
    cd "$REPO" || exit 99
    BUILD=$BUILD bash -c "set -euo pipefail; source scripts/services.sh; vdisk_on_exit '$1'; $2" \
      >>"$T/job.log" 2>&1
    echo $?
  )
}

# ----- the exit trap alone -----
check "success stays success when the cleanup fails" 0 \
  "$(job 'false; kill -9 2147483646; touch '"$T"'/cleaned' 'true')"
check "the cleanup runs whole after a failing step" yes "$([[ -e $T/cleaned ]] && echo yes || echo no)"
check "a failing command (set -e) is the status" 1 "$(job 'true' 'echo job; false; echo not reached')"
check "an exit status is kept through a failing cleanup" 3 "$(job 'false' 'exit 3')"
check "a failing pipeline (pipefail) is the status" 1 "$(job 'true' 'false | cat')"
# The helper replaces an earlier trap of its own, so the last one counts.
check "a second vdisk_on_exit replaces the first" 0 \
  "$(job 'true' "vdisk_on_exit 'touch $T/second'; true")"
check "the second cleanup ran" yes "$([[ -e $T/second ]] && echo yes || echo no)"

# ----- the real services, as run.sh starts and stops them -----
# A process that has ended but is not reaped yet (a daemonized dbus-daemon
# left to an init that reaps slowly) is no longer running.
alive() {
  local stat
  stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $stat != Z* ]]
}

services_case() {
  local why=
  (($(id -u) == 0)) || why="needs root (polkitd and its policy files)"
  for p in dbus-daemon gdbus /usr/lib/polkit-1/polkitd "$BUILD/daemon/vdiskd"; do
    [[ -n $why ]] || command -v "$p" >/dev/null || why="$p is missing"
  done
  [[ -z $why && ${VDISK_PRIVATE_NS:-} != ready ]] && why="not in a private mount namespace"
  if [[ -n $why ]]; then
    echo "ok - services: $1 # SKIP $why"
    return 1
  fi
}

if services_case "vdiskd and polkitd that left before the stop"; then
  mkdir -p "$T/s1"
  # Every service gone before the EXIT trap's stop sends its signals.
  rc=$(job 'vdisk_services_stop; echo stopped >'"$T"'/s1/stopped' \
    'vdisk_services_start '"$T"'/s1
     for p in "${VDISK_SERVICE_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
     while kill -0 "$VDISK_DAEMON_PID" 2>/dev/null; do sleep 0.1; done')
  check "services: the job's success is the status though every service had left" 0 "$rc"
  check "services: the stop ran" stopped "$(cat "$T/s1/stopped" 2>/dev/null)"
  # The stop itself, called under errexit outside any trap (as the test
  # scripts call it), returns 0 when the services had left.
  mkdir -p "$T/s2"
  rc=$(job 'true' 'vdisk_services_start '"$T"'/s2
     for p in "${VDISK_SERVICE_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; sleep 0.3
     vdisk_services_stop; echo after-stop')
  check "services: vdisk_services_stop under set -e, services gone" 0 "$rc"
  check "services: the script went on after the stop" yes \
    "$(grep -q after-stop "$T/job.log" && echo yes || echo no)"
fi

if services_case "a job that fails after the services started"; then
  mkdir -p "$T/s3"
  rc=$(job 'vdisk_services_stop' 'vdisk_services_start '"$T"'/s3
     echo "${VDISK_SERVICE_PIDS[*]}" >'"$T"'/s3/pids
     false')
  check "services: a failed job is a failure" 1 "$rc"
  left=0
  for p in $(cat "$T/s3/pids"); do
    alive "$p" && { left=$((left + 1)); ps -o pid,stat,cmd -p "$p" | tail -n +2; }
  done
  check "services: none is left running" 0 "$left"
fi

if ((failed > 0)); then
  echo "--- the jobs' output"
  cat "$T/job.log"
fi
echo "$passed passed, $failed failed"
((failed == 0))
