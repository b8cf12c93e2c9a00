# shellcheck shell=bash
# A real one-node Ceph cluster for tests, in a directory of the test's own:
# one monitor and one BlueStore OSD on a sparse file, on 127.0.0.1 only,
# with cephx keys, pid files, sockets and logs all in that directory. No
# systemd and nothing under /etc/ceph or /var/lib/ceph: the host's
# system files are never touched.
#
#   source tests/ceph-cluster.sh
#   ceph_cluster_start DIR || exit $?   # 77 (with the reason) when it cannot
#   trap ceph_cluster_stop EXIT         # by pid: SIGTERM, then SIGKILL
#   ceph_pool_create NAME               # a pool for RBD images
#
# After ceph_cluster_start: CEPH_CONF (the cluster's ceph.conf, which names
# the client.admin keyring), CEPH_KEYRING, CEPH_MON_PORT (the msgr v1 port,
# as libvirt wants it), CEPH_MON_PORT_V2, CEPH_DIR. The ceph and rbd
# commands find the cluster through CEPH_CONF, which is exported.
#
# Environment: CEPH_START_TIMEOUT (seconds for the cluster to come up and
# take a write, default 90), CEPH_OSD_SIZE (the OSD's sparse file, default
# 20G).

CEPH_DIR=
CEPH_PIDS=()

# _ceph_skip MESSAGE: say why there is no cluster; the caller exits 77.
_ceph_skip() {
    echo "no Ceph cluster: $*"
    if [[ -n $CEPH_DIR ]]; then
        local log
        for log in "$CEPH_DIR"/log/*.log; do
            [[ -s $log ]] || continue
            echo "--- last lines of $log"
            tail -n 5 "$log"
        done
    fi
    ceph_cluster_stop
    return 77
}

# _ceph_free_port: a TCP port on 127.0.0.1 that nothing listens on now.
_ceph_free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# _ceph_wait SECONDS CMD...: run CMD every half second until it succeeds.
_ceph_wait() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

# _ceph_daemon_pid NAME: the pid a daemon wrote, once it is there.
_ceph_daemon_pid() {
    local f=$CEPH_DIR/run/$1.pid
    [[ -s $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

ceph_cluster_start() {
    local dir=$1 p
    for p in ceph-mon ceph-osd ceph ceph-authtool monmaptool rbd rados; do
        command -v "$p" >/dev/null ||
            { _ceph_skip "$p is missing (packages ceph-mon, ceph-osd, ceph-common)"; return; }
    done
    local timeout=${CEPH_START_TIMEOUT:-90} start=$SECONDS
    # Everything goes below the directory: never anywhere else.
    if [[ -z $dir ]] || ! mkdir -p "$dir" || ! CEPH_DIR=$(cd "$dir" && pwd) ||
        [[ -z $CEPH_DIR || $CEPH_DIR == / ]]; then
        CEPH_DIR=
        _ceph_skip "no directory of its own for the cluster ('$dir')"
        return
    fi
    mkdir -p "$CEPH_DIR"/{run,log,mon,osd,crash}
    local fsid osd_uuid v1 v2
    fsid=$(cat /proc/sys/kernel/random/uuid)
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    v1=$(_ceph_free_port)
    v2=$(_ceph_free_port)
    while [[ $v2 == "$v1" ]]; do v2=$(_ceph_free_port); done
    CEPH_MON_PORT=$v1
    CEPH_MON_PORT_V2=$v2
    CEPH_CONF=$CEPH_DIR/ceph.conf
    CEPH_KEYRING=$CEPH_DIR/client.admin.keyring
    export CEPH_CONF
    # Daemons keep pid files, sockets and logs in the directory; clients
    # (ceph, rbd, qemu-img, vdisk) make no socket and write no log.
    cat >"$CEPH_CONF" <<EOF
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = $CEPH_KEYRING
run_dir = $CEPH_DIR/run
crash_dir = $CEPH_DIR/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_crit = 1
mon_data_avail_warn = 2
ms_bind_ipv4 = true
ms_bind_ipv6 = false
log_to_stderr = false
err_to_stderr = false
log_file =
admin_socket =

[mon]
mon_data = $CEPH_DIR/mon/\$cluster-\$id
keyring = \$mon_data/keyring
pid_file = $CEPH_DIR/run/\$name.pid
admin_socket = $CEPH_DIR/run/\$name.asok
log_file = $CEPH_DIR/log/\$name.log
err_to_stderr = false

[osd]
osd_data = $CEPH_DIR/osd/\$cluster-\$id
keyring = \$osd_data/keyring
osd_objectstore = bluestore
bluestore_block_path = $CEPH_DIR/osd-block.\$id
bluestore_block_create = true
bluestore_block_size = ${CEPH_OSD_SIZE:-20G}
bluestore_block_db_create = false
bluestore_block_wal_create = false
bluestore_fsck_on_mkfs = false
bluestore_fsck_on_mount = false
bluestore_cache_size = 128M
osd_memory_target = 939524096
osd_op_num_shards = 1
osd_op_num_threads_per_shard = 2
pid_file = $CEPH_DIR/run/\$name.pid
admin_socket = $CEPH_DIR/run/\$name.asok
log_file = $CEPH_DIR/log/\$name.log
err_to_stderr = false
EOF
    local mk=$CEPH_DIR/mkfs.log
    if ! {
        ceph-authtool --create-keyring "$CEPH_DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' &&
            ceph-authtool --create-keyring "$CEPH_KEYRING" --gen-key -n client.admin \
                --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' &&
            ceph-authtool "$CEPH_DIR/mon.keyring" --import-keyring "$CEPH_KEYRING" &&
            monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]" \
                "$CEPH_DIR/monmap" &&
            ceph-mon -c "$CEPH_CONF" --mkfs -i a --monmap "$CEPH_DIR/monmap" \
                --keyring "$CEPH_DIR/mon.keyring"
    } >"$mk" 2>&1; then
        cat "$mk"
        _ceph_skip "the monitor could not be made"
        return
    fi
    # ceph-mon forks, its child writes the pid file.
    if ! ceph-mon -c "$CEPH_CONF" -i a >>"$mk" 2>&1 || ! _ceph_wait 10 _ceph_daemon_pid mon.a; then
        cat "$mk"
        _ceph_skip "the monitor did not start"
        return
    fi
    CEPH_PIDS+=("$(cat "$CEPH_DIR/run/mon.a.pid")")
    if ! _ceph_wait $((timeout - (SECONDS - start))) timeout 10 ceph --connect-timeout 5 mon stat; then
        _ceph_skip "the monitor does not answer within ${timeout}s"
        return
    fi
    # One OSD: its key made here, registered with the monitor, its store
    # made on a sparse file outside its data directory.
    local secret id osd_dir
    secret=$(ceph-authtool --gen-print-key)
    echo "{\"cephx_secret\": \"$secret\"}" >"$CEPH_DIR/osd-secret.json"
    if ! id=$(timeout 30 ceph osd new "$osd_uuid" -i "$CEPH_DIR/osd-secret.json" 2>>"$mk"); then
        cat "$mk"
        _ceph_skip "the monitor did not take an OSD"
        return
    fi
    osd_dir=$CEPH_DIR/osd/ceph-$id
    mkdir -p "$osd_dir"
    if ! {
        ceph-authtool --create-keyring "$osd_dir/keyring" --name "osd.$id" --add-key "$secret" &&
            ceph-osd -c "$CEPH_CONF" -i "$id" --mkfs --osd-uuid "$osd_uuid"
    } >>"$mk" 2>&1; then
        cat "$mk"
        _ceph_skip "the OSD's store could not be made"
        return
    fi
    if ! ceph-osd -c "$CEPH_CONF" -i "$id" >>"$mk" 2>&1 || ! _ceph_wait 20 _ceph_daemon_pid "osd.$id"; then
        cat "$mk"
        _ceph_skip "the OSD did not start"
        return
    fi
    CEPH_PIDS+=("$(cat "$CEPH_DIR/run/osd.$id.pid")")
    if ! _ceph_wait $((timeout - (SECONDS - start))) _ceph_osd_up; then
        _ceph_skip "the OSD is not up within ${timeout}s"
        return
    fi
    echo "Ceph cluster up in $((SECONDS - start))s (monitor on 127.0.0.1:$v1 and :$v2, $CEPH_DIR)"
}

_ceph_osd_up() {
    timeout 10 ceph --connect-timeout 5 osd dump 2>/dev/null | grep -q '^osd\.[0-9]* up *in'
}

# ceph_pool_create NAME: a replicated pool of one copy, initialised for
# RBD, that takes writes. 77 (with the reason) when it does not in time.
ceph_pool_create() {
    local pool=$1 timeout=${CEPH_START_TIMEOUT:-90}
    if ! timeout 30 ceph osd pool create "$pool" 8 8 >/dev/null 2>&1 ||
        ! timeout 30 rbd pool init "$pool" >/dev/null 2>&1; then
        _ceph_skip "pool $pool could not be made"
        return
    fi
    # The placement groups become active shortly after: a small object
    # written and removed says so.
    if ! _ceph_wait "$timeout" timeout 10 rados -p "$pool" --rados-osd-op-timeout 5 \
        put .vdisk-probe "$CEPH_CONF"; then
        _ceph_skip "pool $pool takes no write within ${timeout}s"
        return
    fi
    rados -p "$pool" rm .vdisk-probe >/dev/null 2>&1 || true
}

# ceph_cluster_stop: stop the daemons this shell started, by pid: SIGTERM,
# then SIGKILL for one still there after 10 s.
ceph_cluster_stop() {
    local pid left i
    [[ ${#CEPH_PIDS[@]} -gt 0 ]] || return 0
    for pid in "${CEPH_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for i in $(seq 100); do
        left=0
        for pid in "${CEPH_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
        ((left)) || break
        sleep 0.1
    done
    for pid in "${CEPH_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    CEPH_PIDS=()
}
