#!/usr/bin/env bash
# A real SLURM cluster on this Debian machine, for the SLURM tests and for trying
# `hydra/launcher=slurm` locally: munged, mariadbd + slurmdbd (accounting, so submitit notices
# cancelled jobs), slurmctld and one slurmd per node, started by hand (no systemd), all on
# 127.0.0.1, all state under DIR. Needs root (apt-get, slurmd runs jobs as their user).
#
#   bash scripts/slurm_local.sh [DIR]        # default DIR: /tmp/reslab-slurm; idempotent
#   export SLURM_CONF=DIR/etc/slurm.conf     # every shell and process that submits needs it
#   bash scripts/slurm_local.sh stop [DIR]   # stops the daemons by their recorded PIDs
#
# SLURM_LOCAL_NODES=2 (default 1) makes a cluster of that many nodes, <host>-1 .. <host>-N, each
# its own slurmd (`slurmd -N <node>`, its own port) with all of this machine's CPUs, so one job
# can span nodes (`sbatch --nodes=2`). The nodes share this machine's address: a task prolog
# gives every task MASTER_ADDR=127.0.0.1 (on a real cluster the first node's name resolves).
# SLURM_LOCAL_PORT_BASE (default 6817) moves all ports, for two clusters side by side.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
log() { echo "[slurm_local] $*"; }
die() { echo "[slurm_local] error: $*" >&2; exit 1; }

ACTION=start
if [ "${1:-}" = stop ]; then ACTION=stop; shift; fi
DIR=${1:-/tmp/reslab-slurm}
PORT=${SLURM_LOCAL_PORT_BASE:-6817}   # slurmctld, slurmd +1, slurmdbd +2, mariadb +3, slurmd k>1 +2+k
NODES=${SLURM_LOCAL_NODES:-1}
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "SLURM_LOCAL_NODES=$NODES: use a node count, e.g. 2"
[ "$(id -u)" = 0 ] || die "run as root (apt-get, slurmd)"
mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd -P)

alive() {  # alive NAME: the PID recorded for NAME (slurmd-2: node 2's slurmd) is that daemon
  local f="$DIR/pids/$1.pid" exe daemon=${1%-[0-9]*}
  [ -s "$f" ] && exe=$(readlink "/proc/$(cat "$f")/exe" 2>/dev/null) || return 1
  exe=${exe##*/} && exe=${exe% (deleted)}
  [ "$exe" = "$daemon" ] || [ "$exe" = "$daemon-wlm" ]  # Debian: slurmd -> slurmd-wlm
}

if [ "$ACTION" = stop ]; then
  export SLURM_CONF=$DIR/etc/slurm.conf
  alive slurmctld && scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
  slurmds=$(cd "$DIR/pids" 2>/dev/null && ls slurmd*.pid 2>/dev/null | sed 's/\.pid$//' || true)
  for name in $slurmds slurmctld slurmdbd mariadbd munged; do
    if alive "$name"; then
      pid=$(cat "$DIR/pids/$name.pid")
      kill "$pid"
      for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
      log "stopped $name ($pid)"
    fi
    rm -f "$DIR/pids/$name.pid"
  done
  exit 0
fi

node_port() { if [ "$1" = 1 ]; then echo $((PORT + 1)); else echo $((PORT + 2 + $1)); fi; }

wait_for() {  # wait_for WHAT LOG CMD...: poll CMD for up to 60 s
  local what=$1 logf=$2; shift 2
  for _ in $(seq 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.3; done
  tail -n 20 "$logf" >&2 || true
  die "timed out waiting for $what (log: $logf)"
}

# Install: packages would start their own services through invoke-rc.d; forbid that.
PKGS=()
for pair in munged:munge slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client \
  slurmdbd:slurmdbd mariadbd:mariadb-server; do
  command -v "${pair%%:*}" >/dev/null || PKGS+=("${pair#*:}")
done
mkdir -p "$DIR"/{etc,run,log,pids,state,spool,munge,mysql}
# munged refuses a socket under a dir others cannot traverse (mktemp -d makes it 0700).
chmod 755 "$DIR" "$DIR/run"
chmod 700 "$DIR/munge" "$DIR/mysql"
if [ ${#PKGS[@]} -gt 0 ]; then
  log "installing ${PKGS[*]}"
  policy=/usr/sbin/policy-rc.d
  if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy; trap 'rm -f $policy' EXIT; fi
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -q --no-install-recommends "${PKGS[@]}" ||
    { apt-get update -q && apt-get install -y -q --no-install-recommends "${PKGS[@]}"; }; } \
    >"$DIR/log/apt.log" 2>&1 || { tail -n 20 "$DIR/log/apt.log" >&2; die "apt-get failed"; }
fi

# Config: each node is this machine as `slurmd -C` sees it, addressed as 127.0.0.1.
NODELINE=$(slurmd -C | grep '^NodeName=')
HOST=${NODELINE#NodeName=} && HOST=${HOST%% *}
HARDWARE=${NODELINE#NodeName=$HOST }
if [ "$NODES" = 1 ]; then
  NODENAMES=("$HOST")
  NODECONF="$NODELINE NodeAddr=127.0.0.1 State=UNKNOWN"
else
  NODENAMES=() && NODECONF=""
  for k in $(seq "$NODES"); do
    NODENAMES+=("$HOST-$k")
    NODECONF+="NodeName=$HOST-$k NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$(node_port "$k") $HARDWARE State=UNKNOWN"$'\n'
  done
fi
NODE=${NODENAMES[0]}
MUNGE=$DIR/run/munge.socket
[ -s "$DIR/munge/munge.key" ] || dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$DIR/munge/munge.key"
[ -s "$DIR/mysql/pass" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -dc A-Za-z0-9 >"$DIR/mysql/pass")
PASS=$(cat "$DIR/mysql/pass")
export SLURM_CONF=$DIR/etc/slurm.conf
cat >"$SLURM_CONF" <<CONF
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
AuthInfo=socket=$MUNGE
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
TaskProlog=$DIR/etc/task_prolog.sh
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
KillWait=5
MinJobAge=300
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
AccountingStoragePass=$MUNGE
${NODECONF%$'\n'}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
(umask 077; cat >"$DIR/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$MUNGE
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=slurm
StoragePass=$PASS
CONF
)
printf '#!/bin/sh\necho export MASTER_ADDR=127.0.0.1\n' >"$DIR/etc/task_prolog.sh"
chmod 755 "$DIR/etc/task_prolog.sh"
echo "export SLURM_CONF=$SLURM_CONF" >"$DIR/env.sh"

start() {  # start NAME PIDFILE CMD...: run a daemon unless it is up, record its PID
  local name=$1 pidfile=$2; shift 2
  if alive "$name"; then log "$name already running"; return 0; fi
  rm -f "$pidfile"
  "$@" </dev/null >>"$DIR/log/$name.stdout" 2>&1 || die "$name failed to start (see $DIR/log)"
  wait_for "$name" "$DIR/log/$name.stdout" test -s "$pidfile"
  cp "$pidfile" "$DIR/pids/$name.pid"
  log "$name started ($(cat "$pidfile"))"
}

start munged "$DIR/run/munged.pid" munged --socket="$MUNGE" --key-file="$DIR/munge/munge.key" \
  --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed"
[ -d "$DIR/mysql/data/mysql" ] || mariadb-install-db --no-defaults --datadir="$DIR/mysql/data" \
  --user=root --auth-root-authentication-method=socket --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1
start mariadbd "$DIR/run/mariadbd.pid" setsid -f mariadbd --no-defaults --datadir="$DIR/mysql/data" \
  --socket="$DIR/run/mysqld.sock" --port=$((PORT + 3)) --bind-address=127.0.0.1 --skip-name-resolve \
  --pid-file="$DIR/run/mariadbd.pid" --log-error="$DIR/log/mariadbd.log" --user=root \
  --innodb-log-file-size=16M
wait_for mariadbd "$DIR/log/mariadbd.log" mariadb-admin --no-defaults -S "$DIR/run/mysqld.sock" ping
mariadb --no-defaults -S "$DIR/run/mysqld.sock" -e "
  CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$PASS';
  ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$PASS';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
start slurmdbd "$DIR/run/slurmdbd.pid" slurmdbd
wait_for slurmdbd "$DIR/log/slurmdbd.log" sacctmgr -n show cluster
start slurmctld "$DIR/run/slurmctld.pid" slurmctld -f "$SLURM_CONF"
wait_for slurmctld "$DIR/log/slurmctld.log" scontrol ping
node_up() {
  case $(sinfo -h -n "$1" -o %T) in
    idle | mixed | allocated | completing) return 0 ;;
    *) scontrol update NodeName="$1" State=RESUME || true; return 1 ;;
  esac
}
for k in $(seq "$NODES"); do
  name=${NODENAMES[$((k - 1))]} && mkdir -p "$DIR/spool/$name"
  pidname=slurmd && [ "$NODES" = 1 ] || pidname=slurmd-$k
  start "$pidname" "$DIR/run/slurmd-$name.pid" slurmd -f "$SLURM_CONF" -N "$name"
done
for name in "${NODENAMES[@]}"; do wait_for "node $name" "$DIR/log/slurmd-$name.log" node_up "$name"; done
log "up: nodes ${NODENAMES[*]}, partition debug; export SLURM_CONF=$SLURM_CONF; stop: bash $0 stop $DIR"
