#!/usr/bin/env bash
# A real single-node SLURM cluster on this Debian machine, for the SLURM tests and for trying
# `hydra/launcher=slurm` locally: munged, mariadbd + slurmdbd (accounting, so submitit notices
# cancelled jobs), slurmctld and slurmd, started by hand (no systemd), all on 127.0.0.1, all
# state under DIR. Needs root (apt-get, slurmd runs jobs as their user).
#
#   bash scripts/slurm_local.sh [DIR]        # default DIR: /tmp/reslab-slurm; idempotent
#   export SLURM_CONF=DIR/etc/slurm.conf     # every shell and process that submits needs it
#   bash scripts/slurm_local.sh stop [DIR]   # stops the daemons by their recorded PIDs
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
log() { echo "[slurm_local] $*"; }
die() { echo "[slurm_local] error: $*" >&2; exit 1; }

ACTION=start
if [ "${1:-}" = stop ]; then ACTION=stop; shift; fi
DIR=${1:-/tmp/reslab-slurm}
PORT=${SLURM_LOCAL_PORT_BASE:-6817}   # slurmctld, slurmd +1, slurmdbd +2, mariadb +3
[ "$(id -u)" = 0 ] || die "run as root (apt-get, slurmd)"
mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd -P)

alive() {  # alive NAME: the PID recorded for NAME is that daemon
  local f="$DIR/pids/$1.pid" exe
  [ -s "$f" ] && exe=$(readlink "/proc/$(cat "$f")/exe" 2>/dev/null) || return 1
  exe=${exe##*/}
  [ "${exe% (deleted)}" = "$1" ]
}

if [ "$ACTION" = stop ]; then
  export SLURM_CONF=$DIR/etc/slurm.conf
  alive slurmctld && scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
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

# Config: the node is this machine as `slurmd -C` sees it, addressed as 127.0.0.1.
NODELINE=$(slurmd -C | grep '^NodeName=')
NODE=${NODELINE#NodeName=} && NODE=${NODE%% *}
MUNGE=$DIR/run/munge.socket
[ -s "$DIR/munge/munge.key" ] || dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$DIR/munge/munge.key"
[ -s "$DIR/mysql/pass" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -dc A-Za-z0-9 >"$DIR/mysql/pass")
PASS=$(cat "$DIR/mysql/pass")
export SLURM_CONF=$DIR/etc/slurm.conf
cat >"$SLURM_CONF" <<CONF
ClusterName=local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
AuthInfo=socket=$MUNGE
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
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
$NODELINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
(umask 077; cat >"$DIR/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$MUNGE
DbdHost=$NODE
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
start slurmd "$DIR/run/slurmd.pid" slurmd -f "$SLURM_CONF"
node_up() {
  case $(sinfo -h -n "$NODE" -o %T) in
    idle | mixed | allocated | completing) return 0 ;;
    *) scontrol update NodeName="$NODE" State=RESUME || true; return 1 ;;
  esac
}
wait_for "node $NODE" "$DIR/log/slurmd.log" node_up
log "up: node $NODE, partition debug; export SLURM_CONF=$SLURM_CONF; stop: bash $0 stop $DIR"
