#!/usr/bin/env bash
# A real Slurm cluster on this one host, on loopback only, for the Slurm tests.
#
#   tests/slurm/cluster.sh start    install (Debian packages) if missing, then start
#   tests/slurm/cluster.sh stop     cancel its jobs, stop the daemons it started (pid files)
#   tests/slurm/cluster.sh status   exit 0 when it is up and both nodes answer
#   tests/slurm/cluster.sh env      print `export SLURM_CONF=...` for a shell
#
# Everything lives in $VLAUNCH_SLURM_STATE (default /tmp/vlaunch-slurm): slurm.conf,
# cgroup.conf, a private munge key and socket, spool dirs, logs and pid files; nothing is
# written to /etc. Clients find the cluster through SLURM_CONF=$STATE/slurm.conf.
#
# Layout: munged, slurmctld on 127.0.0.1, and $NODES slurmd (`slurmd -N nodeK`) on this host,
# node K at NodeAddr 127.0.0.(10+K) (the whole 127/8 is loopback on Linux, so no alias is needed)
# with its own port. Distinct node addresses let the job script give each "node" its own IP,
# as on a real cluster (the Ray head and workers then register distinct node IPs).
# Needs root (slurmd runs jobs as their user; the tests submit as root).
set -euo pipefail

STATE=${VLAUNCH_SLURM_STATE:-/tmp/vlaunch-slurm}
NODES=${VLAUNCH_SLURM_NODES:-2}
CPUS=${VLAUNCH_SLURM_CPUS:-8}           # declared per node (over-declaring is fine here)
CTLD_PORT=${VLAUNCH_SLURM_PORT:-16817}   # slurmd K listens on CTLD_PORT + 100 + K
PARTITION=debug
CONF=$STATE/slurm.conf
SBIN_PATH=/usr/sbin:/usr/bin:/sbin:/bin

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  command -v munged >/dev/null || missing+=(munge)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  log "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d keeps the packages' own services from starting (we start private daemons).
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1; then
    apt-get update -q >>"$STATE/apt.log" 2>&1
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1 \
      || { [ $created_policy -eq 1 ] && rm -f "$policy"; die "apt-get failed, see $STATE/apt.log"; }
  fi
  [ $created_policy -eq 1 ] && rm -f "$policy"
  return 0
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_config() {
  mkdir -p "$STATE"/{ctld,log,munge,spool}
  chmod 700 "$STATE/munge"
  [ -s "$STATE/munge/munge.key" ] || {
    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
    chmod 600 "$STATE/munge/munge.key"
  }
  local host
  host=$(hostname -s)
  {
    echo "# written by tests/slurm/cluster.sh"
    echo "ClusterName=vlaunch-test"
    echo "SlurmctldHost=$host(127.0.0.1)"
    echo "SlurmctldPort=$CTLD_PORT"
    echo "SlurmdPort=$((CTLD_PORT + 100))"
    echo "AuthType=auth/munge"
    echo "CredType=cred/munge"
    # cred_expire also bounds how long a requeued job waits before it may start again.
    echo "AuthInfo=socket=$STATE/munge/munge.socket,cred_expire=10"
    echo "SlurmUser=root"
    echo "SlurmdUser=root"
    echo "StateSaveLocation=$STATE/ctld"
    echo "SlurmdSpoolDir=$STATE/spool/%n"
    echo "SlurmctldPidFile=$STATE/slurmctld.pid"
    echo "SlurmdPidFile=$STATE/slurmd-%n.pid"
    echo "SlurmctldLogFile=$STATE/log/slurmctld.log"
    echo "SlurmdLogFile=$STATE/log/slurmd-%n.log"
    echo "ProctrackType=proctrack/cgroup"
    echo "TaskPlugin=task/none"
    echo "MailProg=/bin/true"
    echo "SchedulerType=sched/backfill"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_Core"
    echo "SlurmdParameters=config_overrides"
    echo "ReturnToService=2"
    echo "AccountingStorageType=accounting_storage/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "JobCompType=jobcomp/none"
    echo "JobRequeue=0"
    echo "KillWait=5"
    echo "MinJobAge=600"
    echo "InactiveLimit=0"
    echo "SlurmdTimeout=60"
    echo "MessageTimeout=10"
    echo "SchedulerParameters=sched_interval=2"
    for k in $(seq 1 "$NODES"); do
      echo "NodeName=node$k NodeHostname=$host NodeAddr=127.0.0.$((10 + k)) Port=$((CTLD_PORT + 100 + k)) CPUs=$CPUS State=UNKNOWN"
    done
    echo "PartitionName=$PARTITION Nodes=node[1-$NODES] Default=YES MaxTime=INFINITE State=UP"
  } >"$CONF"
  {
    echo "# written by tests/slurm/cluster.sh"
    echo "CgroupAutomount=no"
    echo "ConstrainCores=no"
    echo "ConstrainRAMSpace=no"
    echo "ConstrainDevices=no"
  } >"$STATE/cgroup.conf"
}

nodes_up() {
  # Every node answers and is idle/allocated/mixed (not down, not still unknown).
  local states
  states=$(SLURM_CONF=$CONF sinfo -h -N -o '%N %T' 2>/dev/null) || return 1
  [ "$(echo "$states" | grep -cE ' (idle|allocated|mixed|completing)$')" -eq "$NODES" ]
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
  log "$what: up"
}

start() {
  mkdir -p "$STATE"
  if [ -e "$CONF" ] && alive "$STATE/slurmctld.pid" && nodes_up; then
    log "already running (SLURM_CONF=$CONF)"
    return 0
  fi
  install_packages
  stop_daemons quiet
  write_config
  local began=$SECONDS
  PATH=$SBIN_PATH:$PATH
  munged --force --key-file="$STATE/munge/munge.key" --socket="$STATE/munge/munge.socket" \
    --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
    --seed-file="$STATE/munge/munged.seed"
  wait_for 20 munged test -S "$STATE/munge/munge.socket" || die "munged did not start, see $STATE/munge/munged.log"
  # -c: start from a clean state (no jobs left over from an earlier session).
  slurmctld -c -f "$CONF" || die "slurmctld failed, see $STATE/log/slurmctld.log"
  for k in $(seq 1 "$NODES"); do
    mkdir -p "$STATE/spool/node$k"
    slurmd -f "$CONF" -N "node$k" || die "slurmd node$k failed, see $STATE/log/slurmd-node$k.log"
  done
  if ! wait_for 60 "$NODES nodes" nodes_up; then
    SLURM_CONF=$CONF sinfo -N >&2 || true
    die "the nodes did not come up; logs in $STATE/log"
  fi
  log "started in $((SECONDS - began)) s; export SLURM_CONF=$CONF"
}

stop_pidfile() {  # stop_pidfile FILE: TERM the pid it names, wait, then KILL
  local f=$1 pid i
  alive "$f" || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  rm -f "$f"
}

stop_daemons() {
  local f
  for f in "$STATE"/slurmd-*.pid; do [ -e "$f" ] && stop_pidfile "$f"; done
  stop_pidfile "$STATE/slurmctld.pid"
  stop_pidfile "$STATE/munge/munged.pid"
  [ "${1:-}" = quiet ] || log "stopped"
}

stop() {
  if [ -e "$CONF" ] && alive "$STATE/slurmctld.pid"; then
    # Cancel this cluster's jobs first, so that no job step outlives its slurmd.
    SLURM_CONF=$CONF scancel --full --state=RUNNING,PENDING,SUSPENDED -u "$(id -un)" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while [ -n "$(SLURM_CONF=$CONF squeue -h -o %i 2>/dev/null)" ] && [ $SECONDS -lt $deadline ]; do
      sleep 0.5
    done
  fi
  stop_daemons
}

status() {
  if [ -e "$CONF" ] && alive "$STATE/slurmctld.pid" && nodes_up; then
    echo "up: SLURM_CONF=$CONF"
    SLURM_CONF=$CONF sinfo -N -o '%N %P %T %C'
  else
    echo "down"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
