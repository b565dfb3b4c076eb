#!/usr/bin/env bash
# Bring up a one-node Slurm cluster on this machine, if none answers yet, for
# `make test-slurm` (deploy/test-slurm.sh).  Debian/Ubuntu, as root:
#   - installs slurm-wlm and munge with apt-get when slurmctld is missing;
#   - creates the munge key if there is none and starts munged;
#   - writes /etc/slurm/slurm.conf for this host (only when there is none, or
#     when it is one this script wrote): no accounting, proctrack/linuxproc,
#     task/none, select/cons_tres, one partition "debug";
#   - starts slurmctld and slurmd as daemons (no systemd needed: containers,
#     CI runners) and waits until the node is idle.
# Idempotent: a second run finds the cluster up and does nothing.  Logs:
# /var/log/slurm/.  Stop it: scontrol shutdown; kill "$(cat /run/munge/munged.pid)".
set -euo pipefail

MARK="# Written by streamrun deploy/slurm-up.sh"
CONF=/etc/slurm/slurm.conf
log() { echo "slurm-up: $*" >&2; }

node_state() { sinfo -h -N -o '%T' 2>/dev/null | head -n1; }

if command -v sinfo >/dev/null && scontrol ping 2>/dev/null | grep -q 'is UP'; then
    case "$(node_state)" in
        idle|mixed|allocated|completing)
            log "a cluster is already up: $(sinfo -h -N -o '%N %T %c CPUs %m MB' | head -n1)"
            exit 0 ;;
    esac
fi

if [[ $(id -u) -ne 0 ]]; then
    log "no running Slurm cluster, and setting one up needs root (apt-get, /etc/slurm, daemons)"
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q slurm-wlm munge >/dev/null
fi

# --- munge ---------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    install -d -o munge -g munge -m 0700 /etc/munge
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
    munge -n | unmunge >/dev/null
fi

# --- slurm.conf ------------------------------------------------------------
host=$(hostname -s)
if [[ ! -f $CONF ]] || head -n1 "$CONF" | grep -qF "$MARK"; then
    # slurmd -C prints this node's CPUs, sockets, cores and RealMemory; --mem
    # requests are checked against RealMemory (CR_Core_Memory).
    hw=$(slurmd -C | grep '^NodeName=' | sed -e "s/^NodeName=[^ ]*/NodeName=$host/")
    log "writing $CONF for $host"
    install -d /etc/slurm
    cat >"$CONF" <<EOF
$MARK: a one-node cluster for make test-slurm.
ClusterName=streamrun
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$hw NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
else
    log "keeping the existing $CONF (not written by this script)"
fi
install -d -o slurm -g slurm /var/spool/slurmctld /var/log/slurm
install -d /var/spool/slurmd

# --- daemons ---------------------------------------------------------------
if ! scontrol ping 2>/dev/null | grep -q 'is UP'; then
    log "starting slurmctld"
    slurmctld
    for _ in $(seq 50); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.2; done
fi
if ! pgrep -x slurmd >/dev/null; then
    log "starting slurmd"
    slurmd
fi

state=""
for _ in $(seq 60); do
    state=$(node_state)
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|drained*|fail*)
            scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
case "$state" in
    idle|mixed|allocated|completing)
        log "up: $(sinfo -h -N -o '%N %T %c CPUs %m MB' | head -n1)" ;;
    *)
        log "the node did not come up (state: ${state:-none}); see /var/log/slurm/*.log"
        tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
        exit 1 ;;
esac
