#!/usr/bin/env bash
# Bring up a one-node SLURM cluster (munged + slurmctld + slurmd) on this machine, for the
# cluster tests (`.ci/run` starts it, runs the tests with REQUIRE_SLURM=1, and stops it with
# slurm-down.sh).
# Debian 12 (slurm 22.05). Needs root. No systemd needed: the daemons are started directly and
# their PIDs recorded in $STATE/pids, which slurm-down.sh uses to stop exactly these processes.
#
#   ./slurm-up.sh            # install if missing, configure, start, wait until the node is idle
#   SLURM_SMOKE=1 ./slurm-up.sh   # also run the array + dependency smoke test
set -euo pipefail

STATE=${STATE:-/var/lib/slurm-ci}          # pids, logs
CONF=/etc/slurm/slurm.conf
NODE=$(hostname -s)
T0=$EPOCHREALTIME
log() { printf '[slurm-up %6.1fs] %s\n' "$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN{print b-a}')" "$*"; }

if [ "$(id -u)" != 0 ]; then echo "run as root" >&2; exit 1; fi

# 1. Packages (idempotent).
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  log "installing slurmctld slurmd slurm-client munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

if [ -s "$STATE/pids" ]; then
  for p in $(cat "$STATE/pids"); do
    if kill -0 "$p" 2>/dev/null; then echo "already running (pid $p); run slurm-down.sh first" >&2; exit 1; fi
  done
fi
mkdir -p "$STATE"
: > "$STATE/pids"

# 2. munge: key (the package's postinst creates one), runtime dir, daemon as user munge.
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /etc/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
rm -f /run/munge/munged.pid
runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
cat /run/munge/munged.pid >> "$STATE/pids"; echo >> "$STATE/pids"
munge -n | unmunge >/dev/null
log "munged up (pid $(cat /run/munge/munged.pid)), credential round trip ok"

# 3. slurm.conf for one node: this host, its real CPUs and memory (from slurmd -C).
NODELINE=$(slurmd -C | head -1)           # NodeName=... CPUs=... RealMemory=...
install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
cat > "$CONF" <<EOF
# Written by slurm-up.sh: a one-node CI cluster.
ClusterName=ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
$NODELINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
log "wrote $CONF ($NODELINE)"

# 4. Daemons (they fork into the background and write their pid files).
rm -f /run/slurm/slurmctld.pid /run/slurm/slurmd.pid
slurmctld -i                # -i: start even if the state files (/var/spool/slurmctld) are missing or bad
for _ in $(seq 100); do [ -s /run/slurm/slurmctld.pid ] && break; sleep 0.1; done
cat /run/slurm/slurmctld.pid >> "$STATE/pids"; echo >> "$STATE/pids"
slurmd
for _ in $(seq 100); do [ -s /run/slurm/slurmd.pid ] && break; sleep 0.1; done
cat /run/slurm/slurmd.pid >> "$STATE/pids"; echo >> "$STATE/pids"
log "slurmctld pid $(cat /run/slurm/slurmctld.pid), slurmd pid $(cat /run/slurm/slurmd.pid)"

# 5. Wait until the node is schedulable.
for i in $(seq 120); do
  st=$(sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
  case "$st" in idle|mix|alloc) break;; esac
  sleep 0.5
done
sinfo
case "$st" in idle|mix|alloc) log "node $NODE is $st";; *) log "node never became idle ($st)"; tail -20 /var/log/slurm/*.log; exit 1;; esac

# 6. Optional smoke test: a 4-task array, and a job that depends on the whole array.
if [ "${SLURM_SMOKE:-0}" = 1 ]; then
  out=$(mktemp -d /tmp/slurm-smoke.XXXX); chmod 777 "$out"
  A=$(sbatch --parsable --array=0-3 -c 1 -o "$out/a_%A_%a.out" --wrap 'echo task $SLURM_ARRAY_TASK_ID on $(hostname)')
  B=$(sbatch --parsable --dependency=afterok:$A -o "$out/b_%j.out" --wrap "cat $out/a_${A}_*.out | wc -l")
  log "submitted array $A and dependent job $B"
  for i in $(seq 240); do
    [ -z "$(squeue -h -j "$A,$B" 2>/dev/null)" ] && break; sleep 0.5
  done
  cat "$out"/a_*.out
  n=$(cat "$out/b_$B.out")
  log "dependent job $B saw $n array outputs"
  scontrol show job "$B" 2>/dev/null | grep -o 'JobState=[A-Z]*' || true
  [ "$n" = 4 ] || { log "smoke test FAILED"; exit 1; }
  # srun (job steps), as executors such as Snakemake's slurm plugin use inside their sbatch jobs.
  s=$(srun -N1 -n2 -c1 hostname | sort | uniq -c | awk '{print $1}')
  [ "$s" = 2 ] || { log "srun -n2 FAILED ($s)"; exit 1; }
  log "srun -n2 ok"
  rm -rf "$out"
  log "smoke test ok"
fi
log "up"
