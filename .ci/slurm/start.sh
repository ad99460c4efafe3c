#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for CI (tests/test_slurm.py runs the workflow through it).
#
#   .ci/slurm/start.sh            # install if missing, configure, start, wait until the node is idle
#
# Root only (it installs packages and writes /etc/slurm). Safe to re-run: packages are installed
# only when missing, daemons are left alone when they already run with the same configuration and
# restarted (by their pid files) when it changed. Containers are fine: no systemd, no cgroups, no
# accounting database. The node advertises FAKE gpu GRES (device files are symlinks to /dev/null)
# so that jobs asking for --gpus are scheduled.
#
# Environment (all optional):
#   ARELBO_SLURM_GPUS       fake GPUs on the node (default: as many as CPUs, so that CPUs, not the
#                           fake GPUs, limit how many jobs run at once)
#   ARELBO_SLURM_PARTITION  partition name (default ci, which profiles/slurm-ci and
#                           tests/test_slurm.py expect); a second one, <name>-gpu, on the same node
#   ARELBO_SLURM_FORCE=1    overwrite a slurm.conf that this script did not write
#   ARELBO_SLURM_TIMEOUT    seconds to wait for the node to become idle (default 90)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
PARTITION=${ARELBO_SLURM_PARTITION:-ci}
TIMEOUT=${ARELBO_SLURM_TIMEOUT:-90}
CONF_DIR=/etc/slurm
STATE=/var/lib/slurm
LOG=/var/log/slurm
RUN=/run/slurm
MARKER="Written by .ci/slurm/start.sh"

say() { echo "slurm-ci: $*"; }
die() { echo "slurm-ci: error: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, writes $CONF_DIR, starts daemons)"

# --- 1. packages (Debian: slurmctld slurmd slurm-client munge) --------------------------------
missing=()
command -v slurmctld >/dev/null || missing+=(slurmctld)
command -v slurmd >/dev/null || missing+=(slurmd)
command -v sbatch >/dev/null || missing+=(slurm-client)
command -v munged >/dev/null || missing+=(munge)
if ((${#missing[@]})); then
    say "installing ${missing[*]} (apt-get)"
    # Keep the packages' init scripts from starting daemons with their default configuration.
    own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/slurm-ci-apt.log 2>&1 ||
        { apt-get update -qq >>/tmp/slurm-ci-apt.log 2>&1 &&
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >>/tmp/slurm-ci-apt.log 2>&1; }; } ||
        { ((own_policy)) && rm -f /usr/sbin/policy-rc.d; tail -20 /tmp/slurm-ci-apt.log >&2; die "apt-get failed"; }
    ((own_policy)) && rm -f /usr/sbin/policy-rc.d
fi

# --- 2. munge ---------------------------------------------------------------------------------
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
    install -d -o munge -g munge -m 0711 /var/lib/munge
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1 ||
                dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    # A stale pid/socket from a dead munged makes the new one refuse to start.
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munge does not answer"
fi

# --- 3. configuration -------------------------------------------------------------------------
host=$(hostname -s)
# "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=..."
node_hw=$(slurmd -C | head -1 | cut -d' ' -f2-)
[[ $node_hw == *CPUs=*RealMemory=* ]] || die "could not read the node's hardware from 'slurmd -C': $node_hw"
cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node_hw")
GPUS=${ARELBO_SLURM_GPUS:-$cpus}

render() {
    sed -e "s|@HOST@|$host|g" -e "s|@NODE_HW@|$node_hw|g" -e "s|@GPUS@|$GPUS|g" \
        -e "s|@GPU_FILES@|$gpu_files|g" \
        -e "s|@PARTITION@|$PARTITION|g" -e "s|@STATE@|$STATE|g" -e "s|@LOG@|$LOG|g" \
        -e "s|@RUN@|$RUN|g" "$1"
}

install -d "$CONF_DIR" "$STATE/slurmctld" "$STATE/slurmd" "$LOG" "$RUN"
[[ $GPUS =~ ^[1-9][0-9]*$ ]] || die "ARELBO_SLURM_GPUS must be a positive integer, got '$GPUS'"
for ((i = 0; i < GPUS; i++)); do ln -sfn /dev/null "$RUN/fake-gpu$i"; done
if ((GPUS == 1)); then gpu_files=$RUN/fake-gpu0; else gpu_files="$RUN/fake-gpu[0-$((GPUS - 1))]"; fi
if [[ -e $CONF_DIR/slurm.conf ]] && ! grep -q "$MARKER" "$CONF_DIR/slurm.conf" && [[ ${ARELBO_SLURM_FORCE:-0} != 1 ]]; then
    die "$CONF_DIR/slurm.conf exists and was not written by this script (set ARELBO_SLURM_FORCE=1 to replace it)"
fi
changed=0
for name in slurm.conf gres.conf; do
    new=$(render "$here/$name.in")
    if [[ ! -e $CONF_DIR/$name ]] || [[ $(cat "$CONF_DIR/$name") != "$new" ]]; then
        printf '%s\n' "$new" >"$CONF_DIR/$name"
        changed=1
    fi
done

# --- 4. daemons -------------------------------------------------------------------------------
running() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() { # by pid file only: never by name
    local pidfile=$1 pid
    running "$pidfile" || return 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

if ((changed)); then
    stop "$RUN/slurmd.pid"
    stop "$RUN/slurmctld.pid"
fi
if ! running "$RUN/slurmctld.pid"; then
    slurmctld || die "slurmctld did not start (see $LOG/slurmctld.log)"
fi
if ! running "$RUN/slurmd.pid"; then
    slurmd || die "slurmd did not start (see $LOG/slurmd.log)"
fi

# --- 5. wait for the node -----------------------------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
resumed=0
while :; do
    state=$(sinfo -h -n "$host" -o %t 2>/dev/null | head -1 || true)
    case $state in
        idle | mix | alloc) break ;;
        drain* | down | drng | fail*)
            # e.g. left drained by a previous configuration: we own this node, bring it back.
            if ((!resumed)); then
                scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
                resumed=1
            fi
            ;;
    esac
    if ((SECONDS >= deadline)); then
        sinfo -N -l >&2 || true
        tail -n 20 "$LOG/slurmctld.log" "$LOG/slurmd.log" >&2 || true
        die "node $host not idle after ${TIMEOUT}s (state: ${state:-none})"
    fi
    sleep 0.5
done
say "node $host $state ($node_hw, gpu:$GPUS, partitions $PARTITION, $PARTITION-gpu); config $CONF_DIR/slurm.conf, logs $LOG"
