# Sourced by run.sh (and usable by hand): start the real services vdiskd
# needs, the way DESIGN.md says tests start them, and stop them by pid.
#   vdisk_services_start WORKDIR   private system bus, polkitd, vdiskd
#   vdisk_services_stop            stop all of them, remove installed policy
#   vdisk_on_exit 'COMMANDS'       run COMMANDS (the stop, a removal) when the
#                                  script exits, keeping its exit status
# Needs root: polkitd and the policy files are system-wide. Programs come
# from $BUILD (default: build/ under the current folder); after the start
# VDISK_DAEMON_PID is vdiskd's pid.
VDISK_SERVICE_PIDS=()
VDISK_DAEMON_PID=
VDISK_INSTALLED_POLKIT=()

vdisk_start_bus() {
  local dir=$1 pid
  cat >"$dir/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$dir/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
  <includedir>${REPO:-$PWD}/dbus</includedir>
  <includedir>${BUILD:-build}/dbus</includedir>
</busconfig>
CONF
  export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$dir/system_bus_socket
  pid=$(dbus-daemon --config-file="$dir/bus.conf" --fork --print-pid) || return 1
  VDISK_SERVICE_PIDS+=("$pid")
}

# The build's policy and rules go where polkitd reads them; a copy already
# there (an installed vdisk) is kept aside and put back at the stop.
VDISK_POLKIT_BACKUP=
vdisk_install_polkit() {
  local dir=$1 f dest
  VDISK_POLKIT_BACKUP=$dir/polkit-backup
  mkdir -p /usr/share/polkit-1/actions /etc/polkit-1/rules.d "$VDISK_POLKIT_BACKUP"
  for f in "${BUILD:-build}"/polkit/*.policy "${BUILD:-build}"/polkit/*.rules; do
    case $f in
      *.policy) dest=/usr/share/polkit-1/actions/$(basename "$f") ;;
      *) dest=/etc/polkit-1/rules.d/$(basename "$f") ;;
    esac
    [[ -e $dest ]] && cp -p "$dest" "$VDISK_POLKIT_BACKUP/$(basename "$f")"
    install -m 644 "$f" "$dest" && VDISK_INSTALLED_POLKIT+=("$dest")
  done
}

# wait_for_name NAME: until NAME is owned on the system bus (5 s at most).
vdisk_wait_for_name() {
  local i
  for ((i = 0; i < 50; i++)); do
    gdbus call --system --dest org.freedesktop.DBus --object-path /org/freedesktop/DBus \
      --method org.freedesktop.DBus.NameHasOwner "$1" 2>/dev/null | grep -q true && return 0
    sleep 0.1
  done
  echo "$1 did not appear on the bus" >&2
  return 1
}

vdisk_services_start() {
  local dir=$1
  vdisk_start_bus "$dir" || { echo "dbus-daemon did not start" >&2; return 1; }
  vdisk_install_polkit "$dir"
  # VDISK_POLKITD_DEBUG=" " keeps polkitd's debug log in $dir/polkitd.log.
  /usr/lib/polkit-1/polkitd ${VDISK_POLKITD_DEBUG:---no-debug} >"$dir/polkitd.log" 2>&1 &
  VDISK_SERVICE_PIDS+=("$!")
  vdisk_wait_for_name org.freedesktop.PolicyKit1 || { cat "$dir/polkitd.log" >&2; return 1; }
  mkdir -p "$dir/pools.d" "$dir/state"
  # Its recorded volume formats stay with the run, as systemd's
  # StateDirectory= would keep them in /var/lib/vdisk.
  STATE_DIRECTORY=$dir/state "${BUILD:-build}"/daemon/vdiskd --idle-timeout=0 \
    --config-dir="$dir/pools.d" >"$dir/vdiskd.log" 2>&1 &
  VDISK_DAEMON_PID=$!
  VDISK_SERVICE_PIDS+=("$VDISK_DAEMON_PID")
  vdisk_wait_for_name org.vdisk.VDisk1 || { cat "$dir/vdiskd.log" >&2; return 1; }
}

# vdisk_on_exit 'COMMANDS': an EXIT trap that runs COMMANDS without errexit
# and then exits with the status the script had. A cleanup that stumbles (a
# service that left already, a file that cannot be put back) must neither
# turn a job that succeeded into a failure (under set -e a failing command
# in an EXIT trap becomes the script's status) nor a failed one into a
# success.
vdisk_on_exit() {
  VDISK_ON_EXIT=$1
  trap 'vdisk_exit_status=$?; set +e; eval "$VDISK_ON_EXIT"; exit "$vdisk_exit_status"' EXIT
}

vdisk_services_stop() {
  local i
  for ((i = ${#VDISK_SERVICE_PIDS[@]} - 1; i >= 0; i--)); do
    kill "${VDISK_SERVICE_PIDS[i]}" 2>/dev/null || true
  done
  sleep 0.3
  for ((i = ${#VDISK_SERVICE_PIDS[@]} - 1; i >= 0; i--)); do
    kill -9 "${VDISK_SERVICE_PIDS[i]}" 2>/dev/null || true # gone already: fine
  done
  VDISK_SERVICE_PIDS=()
  local f
  for f in "${VDISK_INSTALLED_POLKIT[@]}"; do
    if [[ -e $VDISK_POLKIT_BACKUP/$(basename "$f") ]]; then
      cp -p "$VDISK_POLKIT_BACKUP/$(basename "$f")" "$f"
    else
      rm -f "$f"
    fi
  done
  VDISK_INSTALLED_POLKIT=()
  return 0
}
