#!/usr/bin/env bash
# The bare rolling switch that bench/fleet_rollout.py compares opsgate with: a shell loop.
#
#   fleet_rollout_baseline.sh VERSION ROOT UNIT APP_PORT BATCH IDENTITY KNOWN_HOSTS CONTROL_DIR \
#                             ADDRESS:SSH_PORT...
#
# Batch by batch (BATCH hosts, in the order given), in parallel per host: one ssh command that
# points ROOT/current at releases/VERSION atomically (ln -sfn to a temporary link, then mv -T
# over `current`, as services/releases/layout.py does) and runs `systemctl restart UNIT`; then
# curl http://ADDRESS:APP_PORT/health every 10 ms until the first 200. The next batch starts
# once every host of this one answered. ssh gets the options opsgate's SshHost gives a host of
# the ops file (BatchMode, ConnectTimeout=10, LogLevel=ERROR, ServerAlive*, accept-new with the
# fleet's known_hosts, the fleet key) and the same multiplexing (ControlMaster=auto,
# ControlPersist=60s), with sockets in CONTROL_DIR: the caller keeps them apart from opsgate's.
# Prints "elapsed START END" (epoch seconds, measured here, so bash's own start is not counted); exits 1 when a
# host fails or gives no 200 within GIVE_UP_S.
set -u -o pipefail

if [ "$#" -lt 9 ]; then
    echo "usage: $0 VERSION ROOT UNIT APP_PORT BATCH IDENTITY KNOWN_HOSTS CONTROL_DIR ADDRESS:SSH_PORT..." >&2
    exit 2
fi
version=$1 root=$2 unit=$3 app_port=$4 batch=$5 identity=$6 known_hosts=$7 control_dir=$8
shift 8
hosts=("$@")
GIVE_UP_S=30

ssh_opts=(
    -o BatchMode=yes -o ConnectTimeout=10 -o LogLevel=ERROR
    -o ServerAliveInterval=15 -o ServerAliveCountMax=3
    -o StrictHostKeyChecking=accept-new -o "UserKnownHostsFile=$known_hosts"
    -o ControlMaster=auto -o "ControlPath=$control_dir/%C" -o ControlPersist=60s
    -i "$identity"
)

one_host() {
    local address=${1%:*} port=${1##*:}
    local temporary="$root/.current-bench-$$-$address"
    ssh "${ssh_opts[@]}" -p "$port" -- "root@$address" \
        "ln -sfn releases/$version $temporary && mv -T $temporary $root/current && systemctl restart $unit" \
        || { echo "$address: switch or restart failed" >&2; return 1; }
    local deadline=$((SECONDS + GIVE_UP_S))
    until curl -fsS -o /dev/null --max-time 2 "http://$address:$app_port/health" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "$address: no 200 from /health within ${GIVE_UP_S}s" >&2
            return 1
        fi
        sleep 0.01
    done
}

started=$EPOCHREALTIME
status=0
for ((i = 0; i < ${#hosts[@]}; i += batch)); do
    pids=()
    for host in "${hosts[@]:i:batch}"; do
        one_host "$host" &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || status=1
    done
    [ "$status" -eq 0 ] || break  # a failed batch stops the rollout, as opsgate's does
done
finished=$EPOCHREALTIME
echo "elapsed $started $finished"  # epoch seconds; the caller subtracts
exit "$status"
