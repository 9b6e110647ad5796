#!/usr/bin/env bash
# End-to-end check of the shipped cluster.yaml with a real `ray up`, on THIS machine.
#
#   sudo bash scripts/cluster-up-check.sh        # from anywhere; about 3 min, 10+ min the first time
#   .venv/bin/pytest -m rayup                    # the same, as a test (tests/orchestrator/test_ray_up.py)
#
# Must run as root (it installs Debian packages, adds a user and a mount). What it does:
#   1. Prepares what `ray up` needs, as an AWS Deep Learning AMI would have it: openssh-server
#      (sshd on 127.0.0.1:22 only, key auth only), rsync, sudo, nfs-common, python3-venv; the
#      node user of cluster.yaml's auth.ssh_user (ubuntu) with passwordless sudo and root's ssh
#      key authorized; /mnt/seld as a bind mount of /var/lib/seld-cluster-up-check/efs (so the
#      shipped `mountpoint -q /mnt/seld || sudo mount -t nfs4 ...` line finds a mount and never
#      tries EFS); ~ubuntu/seld-venv with torch==2.13.0 (this machine's local CPU wheel; the
#      check refuses to go on if pip would download any other torch); root's ~/.ray/auth_token.
#   2. Writes a derived config into a temp dir: cluster.yaml with only `provider` replaced by
#      {type: local, head_ip: 127.0.0.1, worker_ips: []} and available_node_types /
#      head_node_type dropped (the local provider refuses them). Everything else is verbatim.
#   3. `ray up -y` of it from the repository root, as root (the launcher): file mounts, setup,
#      head setup and head start commands run over ssh as ubuntu, unchanged.
#   4. Checks token auth, `ray exec ... 'cat ~/.ray/auth_token'`, the node's Ray version, the
#      MLflow server's /health; joins one GPU worker by hand (it stands in for the autoscaled
#      gpu_worker, which the local provider cannot declare); submits a tiny `seld-orch cv --gpu`
#      through a forwarded dashboard and checks the job, the node of its fold jobs and the run
#      in the head's MLflow server; reruns `ray up -y` (MLflow must be replaced by a new server);
#      `ray down -y`; and checks that none of ubuntu's Ray or MLflow processes are left.
#   5. Prints one PASS/FAIL line per check and the wall time; exits 1 on any failure.
#
# One machine plays both parts, so a few things differ from AWS (each is said where it happens):
#   - the launcher keeps its local-provider state in its own RAY_TMPDIR (the head, as ubuntu,
#     uses /tmp/ray, as it would on its own machine);
#   - the head's dashboard (8265) and MLflow (5000) hold those ports on 127.0.0.1 of this very
#     machine, so `ray dashboard` and `ray attach -p 5000` cannot bind the same local ports
#     (Ray's ssh uses ExitOnForwardFailure=yes): the forwards use local ports 18265 and 15000
#     (`ray dashboard -p 18265` and `ray dashboard -p 15000 --remote-port 5000`);
#   - the hand-joined GPU worker leaves out the shipped --object-manager-port=8076 (the head
#     holds it here) and advertises one GPU that torch cannot use (there is none).
#
# Idempotent: a second run works. It never stops processes it did not start: ubuntu's Ray is
# stopped with `ray stop` run AS ubuntu (which touches only ubuntu's processes), everything else
# by PID. What it leaves: the packages, the ubuntu user and its venv (like an AMI), root's ssh
# key and token, /var/lib/seld-cluster-up-check (the "EFS" content and the synthesized dataset),
# the logs in /tmp/seld-cuc.*; it stops the sshd and unmounts /mnt/seld if it
# started/mounted them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${SELD_VENV:-$ROOT/.venv}
CLUSTER_YAML=$ROOT/cluster.yaml
STATE_DIR=/var/lib/seld-cluster-up-check
SHARED=/mnt/seld
TORCH_SPEC=torch==2.13.0
RAY_VERSION=$("$VENV/bin/python" -c "import ray; print(ray.__version__)")  # the launcher's Ray
DASH_FWD=18265    # local end of the dashboard forward (the head's own dashboard holds 8265 here)
MLFLOW_FWD=15000  # local end of the MLflow forward (the head's own server holds 5000 here)
HEAD_PORTS=(6379 8265 5000 8076 "$DASH_FWD" "$MLFLOW_FWD")

T0=$SECONDS
RESULTS=()
FAILED=0
STEP="start"
FORWARD_PIDS=()
STARTED_SSHD=0
MOUNTED=0
FINISHED=0

log() { printf '[%s +%4ds] %s\n' "$(date +%T)" "$((SECONDS - T0))" "$*"; }
step() { STEP=$1; log "== $1"; }
pass() { RESULTS+=("PASS  $1  $2"); log "PASS $1: $2"; }
fail() { RESULTS+=("FAIL  $1  $2"); FAILED=1; log "FAIL $1: $2"; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || { echo "run as root: sudo bash $0" >&2; exit 2; }
[[ $(uname -s) == Linux ]] && command -v apt-get >/dev/null || { echo "needs Debian/Ubuntu (apt-get)" >&2; exit 2; }
[[ -x $VENV/bin/ray && -x $VENV/bin/seld-orch ]] || { echo "no launcher venv at $VENV (bash scripts/setup-venv.sh)" >&2; exit 2; }

mkdir -p "$STATE_DIR"
exec 9>"$STATE_DIR/lock"
flock -n 9 || { echo "another cluster-up-check is running" >&2; exit 2; }

# one temp dir per run (logs, derived config, the launcher's Ray state); older ones are pruned
find /tmp -maxdepth 1 -name 'seld-cuc.*' -user root -mmin +1 -exec rm -rf {} + 2>/dev/null || true
WORK=$(mktemp -d /tmp/seld-cuc.XXXXXX)
LAUNCH_TMP=$WORK/t  # RAY_TMPDIR of the launcher: its local-provider state (short: socket paths)
mkdir -p "$LAUNCH_TMP"
DERIVED=$WORK/cluster-local.yaml
log "repository $ROOT; logs and derived config in $WORK"

# the launcher's ray CLI, run from the repository root (file_mounts name "." = the project)
lray() { (cd "$ROOT" && RAY_TMPDIR=$LAUNCH_TMP "$VENV/bin/ray" "$@"); }

# --- what the node user is, from cluster.yaml -------------------------------------------------
NODE_USER=$("$VENV/bin/python" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["auth"]["ssh_user"])' "$CLUSTER_YAML")
[[ $NODE_USER =~ ^[a-z_][a-z0-9_-]*$ && $NODE_USER != root ]] || die "auth.ssh_user '$NODE_USER' is not a plain unprivileged user name"
NODE_HOME=/home/$NODE_USER
NODE_VENV=$NODE_HOME/seld-venv
GPU_WORKER_TMP=/tmp/seld-cluster-up-check-gpu-worker
as_node() { sudo -u "$NODE_USER" -H "$@"; }
SSH_OPTS=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 -o LogLevel=ERROR)
node_ssh() { ssh "${SSH_OPTS[@]}" "$NODE_USER@127.0.0.1" "$@"; }

# the node user's processes (pid and command line); every one of them was started by this check
node_processes() { ps -u "$NODE_USER" -o pid=,args= 2>/dev/null | grep -v -E '^\s*[0-9]+ (sshd|-?bash|ps)\b' || true; }
node_ray_or_mlflow() { node_processes | grep -E 'ray|raylet|gcs_server|mlflow|uvicorn|dashboard' || true; }

stop_node_everything() {
  # ubuntu's Ray (the head and the hand-joined worker): `ray stop` as ubuntu only touches
  # ubuntu's processes. Then the MLflow server by its pid file and its children by parent pid.
  if [[ -x $NODE_VENV/bin/ray ]]; then
    as_node "$NODE_VENV/bin/ray" stop --force >/dev/null 2>&1 || true
  fi
  if [[ -f $NODE_HOME/mlflow.pid ]]; then
    local pid
    pid=$(cat "$NODE_HOME/mlflow.pid" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ ]] && [[ $(stat -c %U "/proc/$pid" 2>/dev/null) == "$NODE_USER" ]]; then
      local kids
      kids=$(ps --ppid "$pid" -o pid= | tr -d ' ' || true)
      as_node kill "$pid" $kids 2>/dev/null || true
      sleep 3
    fi
  fi
  # whatever of ubuntu's Ray/MLflow is still there (a crashed earlier run): by pid
  local left
  left=$(node_ray_or_mlflow | awk '{print $1}')
  if [[ -n $left ]]; then
    log "stopping leftover $NODE_USER processes: $(echo $left)"
    # shellcheck disable=SC2086
    as_node kill $left 2>/dev/null || true
    sleep 2
    left=$(node_ray_or_mlflow | awk '{print $1}')
    # shellcheck disable=SC2086
    [[ -z $left ]] || as_node kill -9 $left 2>/dev/null || true
  fi
}

stop_forwards() {
  local pid
  for pid in "${FORWARD_PIDS[@]}"; do
    # each forward was started with setsid: its pid is its process group (ray CLI + its ssh)
    kill -- "-$pid" 2>/dev/null || true
  done
  FORWARD_PIDS=()
  # Ray's ssh multiplexes over a ControlMaster of root for this cluster name; close ours
  local dir sock
  dir=$("$VENV/bin/python" -c '
import getpass, hashlib, sys, yaml
name = yaml.safe_load(open(sys.argv[1]))["cluster_name"]
h = lambda s: hashlib.sha256(s.encode()).hexdigest()[:10]
print(f"/tmp/ray_ssh_{h(getpass.getuser())}/{h(name)}")' "$CLUSTER_YAML")
  if [[ -d $dir ]]; then
    for sock in "$dir"/*; do
      [[ -S $sock ]] && ssh -o ControlPath="$sock" -O exit dummy >/dev/null 2>&1 || true
    done
  fi
}

cleanup() {
  local rc=$?
  set +e
  if [[ $FINISHED -eq 0 ]]; then
    [[ $rc -ne 0 ]] && fail "aborted" "during: $STEP (exit $rc; logs in $WORK)"
    log "cleaning up after an aborted run"
    stop_forwards
    lray down -y "$DERIVED" >>"$WORK/ray-down-cleanup.log" 2>&1 || true
    stop_node_everything
    rm -rf "$GPU_WORKER_TMP"
  fi
  if [[ $STARTED_SSHD -eq 1 && -f /run/sshd.pid ]]; then
    kill "$(cat /run/sshd.pid)" 2>/dev/null && log "stopped the sshd this run started"
  fi
  if [[ $MOUNTED -eq 1 ]]; then
    umount "$SHARED" 2>/dev/null && log "unmounted $SHARED"
  fi
  echo
  echo "================ cluster-up-check summary ================"
  printf '%s\n' "${RESULTS[@]}"
  local verdict=PASS
  [[ $FAILED -eq 0 && $rc -eq 0 ]] || verdict=FAIL
  echo "RESULT: $verdict  (${#RESULTS[@]} checks, wall time $((SECONDS - T0)) s; logs in $WORK)"
  [[ $verdict == PASS ]] && exit 0 || exit 1
}
trap cleanup EXIT

wait_for() {  # wait_for SECONDS CMD...: until CMD succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [[ $SECONDS -lt $deadline ]] || return 1
    sleep 2
  done
}
http_code() {  # http_code URL [curl args]
  local url=$1; shift
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$url" || true
}
health_ok() { [[ $(curl -s --max-time 5 "$1/health" || true) == OK ]]; }
forward() {  # forward LOG LOCAL_PORT [ray dashboard options]: a port forward kept in the background
  # Ray's ssh runs as a client of the ControlMaster that `ray up` left (ControlPersist=10s); one
  # that attaches while that master expires ends at once, so a forward that ends is started again
  local logfile=$1 port=$2 attempt pid i; shift 2
  for attempt in 1 2 3; do
    (cd "$ROOT" && RAY_TMPDIR=$LAUNCH_TMP exec setsid "$VENV/bin/ray" dashboard -p "$port" "$@" "$DERIVED") \
      >>"$logfile" 2>&1 </dev/null &
    pid=$!  # setsid: also its process group, with the ssh it runs
    for i in $(seq 1 45); do
      kill -0 "$pid" 2>/dev/null || break
      if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/" || true) != 000 ]]; then
        FORWARD_PIDS+=("$pid")
        return 0
      fi
      sleep 1
    done
    kill -- "-$pid" 2>/dev/null || true
    log "the forward to local port $port ended or does not answer (attempt $attempt); starting it again"
    sleep 2
  done
  return 1
}

# Ray's dashboard agent of a node listens on 52365 by default (the shipped head line keeps the
# default). Other Ray instances on this shared machine (tests) may hold it for a while; the head's
# agent then runs without its HTTP server and the Jobs API has no agent to submit to. So: wait
# for the port to be free before the head starts, and restart the head if its agent lost anyway.
AGENT_PORT=52365
port_users() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | xargs -r ps -o user= -p 2>/dev/null | sort -u | xargs; }
port_free() { ! ss -ltnH "sport = :$1" | grep -q .; }
port_free_or_ours() { port_free "$1" || [[ $(port_users "$1") == "$NODE_USER" ]]; }
head_agent_up() { [[ $(port_users "$AGENT_PORT") == "$NODE_USER" ]]; }
show_ray_up() {  # the launcher's and updater's progress lines of `ray up`, without colours
  sed -u 's/\x1b\[[0-9;]*m//g' | { grep --line-buffered -P '\t(INFO|SUCC|WARN|ERROR) (commands|updater)\.py' || true; } \
    | sed -u 's/^[0-9-]* [0-9:,]*\t/    | /'
}
ray_up() {  # ray_up LOG [args]: `ray up -y` of the derived config; restarts the head while its agent lost the port
  local logfile=$1 attempt; shift
  for attempt in 1 2 3; do
    wait_for 120 port_free_or_ours "$AGENT_PORT" || log "port $AGENT_PORT still held by: $(port_users "$AGENT_PORT")"
    lray up -y "$@" "$DERIVED" 2>&1 | tee -a "$logfile" | show_ray_up || return 1
    if wait_for 60 head_agent_up; then return 0; fi
    log "the head's dashboard agent could not bind $AGENT_PORT (held by: $(port_users "$AGENT_PORT")); restarting the head (attempt $attempt)"
    set -- --restart-only
  done
  return 1
}

# ==============================================================================================
step "packages (Debian): openssh-server rsync sudo nfs-common python3-venv curl"
# sshd's drop-in first, so that an sshd the package may start already listens on 127.0.0.1 only
mkdir -p /etc/ssh/sshd_config.d
cat >/etc/ssh/sshd_config.d/seld-cluster-up-check.conf <<'EOF'
# written by seld-orchestrator's scripts/cluster-up-check.sh: `ray up` over ssh on this machine
ListenAddress 127.0.0.1
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PubkeyAuthentication yes
EOF
SSHD_WAS_RUNNING=0
if [[ -f /run/sshd.pid ]] && kill -0 "$(cat /run/sshd.pid)" 2>/dev/null; then SSHD_WAS_RUNNING=1; fi
missing=()
for pkg in openssh-server rsync sudo nfs-common python3-venv curl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  log "installing ${missing[*]}"
  apt-get update -qq >"$WORK/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$WORK/apt.log" 2>&1
fi
pass packages "openssh-server rsync sudo nfs-common python3-venv curl installed"

step "sshd on 127.0.0.1:22, key auth only"
ssh-keygen -A >/dev/null
mkdir -p /run/sshd
/usr/sbin/sshd -t
if [[ -f /run/sshd.pid ]] && kill -0 "$(cat /run/sshd.pid)" 2>/dev/null; then
  kill -HUP "$(cat /run/sshd.pid)"  # re-read the config
  [[ $SSHD_WAS_RUNNING -eq 1 ]] || STARTED_SSHD=1  # the package's postinst started it
else
  /usr/sbin/sshd
  STARTED_SSHD=1
fi
wait_for 10 bash -c "ss -ltnH 'sport = :22' | grep -q '127.0.0.1:22'"
if ss -ltnH 'sport = :22' | grep -v -q '127.0.0.1:22'; then
  fail sshd "port 22 is also open on another address: $(ss -ltnH 'sport = :22' | awk '{print $4}' | xargs)"
else
  pass sshd "listening on 127.0.0.1:22 only"
fi

step "node user $NODE_USER: passwordless sudo, root's key authorized"
if ! id "$NODE_USER" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$NODE_USER"
fi
usermod -p '*' "$NODE_USER"  # no password, but not a locked account (sshd refuses locked ones)
echo "$NODE_USER ALL=(ALL) NOPASSWD:ALL" >/etc/sudoers.d/90-seld-cluster-up-check
chmod 440 /etc/sudoers.d/90-seld-cluster-up-check
visudo -cqf /etc/sudoers.d/90-seld-cluster-up-check
KEY=
for k in id_ed25519 id_ecdsa id_rsa; do
  if [[ -f /root/.ssh/$k && -f /root/.ssh/$k.pub ]]; then KEY=/root/.ssh/$k; break; fi
done
if [[ -z $KEY ]]; then  # Ray's ssh (IdentitiesOnly=yes, no -i) takes root's default key
  mkdir -p -m 700 /root/.ssh
  ssh-keygen -q -t ed25519 -N '' -C "root@$(hostname) cluster-up-check" -f /root/.ssh/id_ed25519
  KEY=/root/.ssh/id_ed25519
fi
install -d -m 700 -o "$NODE_USER" -g "$NODE_USER" "$NODE_HOME/.ssh"
touch "$NODE_HOME/.ssh/authorized_keys"
grep -qxF "$(cat "$KEY.pub")" "$NODE_HOME/.ssh/authorized_keys" || cat "$KEY.pub" >>"$NODE_HOME/.ssh/authorized_keys"
chown "$NODE_USER:$NODE_USER" "$NODE_HOME/.ssh/authorized_keys"
chmod 600 "$NODE_HOME/.ssh/authorized_keys"
if [[ $(node_ssh 'sudo -n true && echo "SSH""_SUDO_OK"' 2>&1) == *SSH_SUDO_OK* ]]; then
  pass node-user "ssh $NODE_USER@127.0.0.1 with $KEY, passwordless sudo"
else
  fail node-user "ssh $NODE_USER@127.0.0.1 with $KEY or sudo -n failed"
  exit 1
fi

step "leftovers of an earlier run"
stop_node_everything
rm -rf "$GPU_WORKER_TMP"
busy=()
for port in "${HEAD_PORTS[@]}"; do
  if ss -ltnH "sport = :$port" | grep -q .; then busy+=("$port"); fi
done
[[ ${#busy[@]} -eq 0 ]] || die "ports in use by something else: ${busy[*]} (this check needs them)"
# the head's session folders of earlier runs (only $NODE_USER's; this run's stay for their logs)
find /tmp/ray -maxdepth 1 -name 'session_2*' -user "$NODE_USER" -exec rm -rf {} + 2>/dev/null || true
# the head (as $NODE_USER) makes its sessions under /tmp/ray; a root-made /tmp/ray would stop it
if [[ -d /tmp/ray ]] && ! as_node test -w /tmp/ray; then
  log "/tmp/ray exists and $NODE_USER cannot write it: chmod 1777 (world-writable, sticky, like /tmp)"
  chmod 1777 /tmp/ray
fi

step "shared file system: $SHARED (a bind mount of $STATE_DIR/efs stands in for EFS)"
mkdir -p "$STATE_DIR/efs" "$SHARED"
if ! mountpoint -q "$SHARED"; then
  mount --bind "$STATE_DIR/efs" "$SHARED"
  MOUNTED=1
fi
# a fresh workspace and MLflow store each run (the dataset is kept: rsync only sends what changed)
rm -rf "$SHARED/workspace" "$SHARED/mlflow"
mountpoint "$SHARED" >/dev/null && pass shared-mount "$SHARED is a mount point (bind of $STATE_DIR/efs)"

step "$NODE_VENV with $TORCH_SPEC (what the Deep Learning AMI would carry)"
NODE_PYTHON=$(as_node bash -lc 'command -v python3')
log "$NODE_USER's python3: $NODE_PYTHON ($(as_node "$NODE_PYTHON" --version 2>&1))"
[[ -x $NODE_VENV/bin/python ]] || as_node "$NODE_PYTHON" -m venv "$NODE_VENV"
if ! as_node "$NODE_VENV/bin/python" -c 'import torch' 2>/dev/null; then
  # refuse anything but the local CPU wheel: any other torch is a multi-GB CUDA download
  as_node "$NODE_VENV/bin/python" -m pip install --dry-run --quiet --report - \
    --find-links /opt/wheels "$TORCH_SPEC" >"$WORK/torch-plan.json"
  "$VENV/bin/python" - "$WORK/torch-plan.json" <<'PY'
import json, sys
plan = json.load(open(sys.argv[1]))["install"]
names = {item["metadata"]["name"].lower(): item["download_info"]["url"] for item in plan}
bad = [n for n in names if n.startswith("nvidia-") or n == "triton"]
url = names.get("torch", "")
if not url.startswith("file://") or bad:
    sys.exit(f"pip would fetch torch from {url!r} (with {bad}): refusing a CUDA download")
print(f"torch from {url}")
PY
  as_node "$NODE_VENV/bin/python" -m pip install --quiet --find-links /opt/wheels "$TORCH_SPEC"
fi
TORCH_VERSION=$(as_node "$NODE_VENV/bin/python" -c 'import torch; print(torch.__version__)')
if [[ $TORCH_VERSION == 2.13.0+cpu ]]; then
  pass node-venv-torch "$NODE_VENV has torch $TORCH_VERSION"
else
  fail node-venv-torch "$NODE_VENV has torch $TORCH_VERSION, expected 2.13.0+cpu"
fi

step "the launcher's cluster token"
if [[ ! -s /root/.ray/auth_token ]]; then
  "$VENV/bin/ray" get-auth-token --generate >/dev/null
fi
[[ -s /root/.ray/auth_token ]] || die "no /root/.ray/auth_token after ray get-auth-token --generate"
TOKEN=$(tr -d '[:space:]' </root/.ray/auth_token)
pass token-file "/root/.ray/auth_token present (${#TOKEN} characters)"

step "derived config: cluster.yaml with the provider swapped to local"
"$VENV/bin/python" - "$CLUSTER_YAML" "$DERIVED" "$WORK" "$GPU_WORKER_TMP" <<'PY'
import re, socket, sys
from pathlib import Path
import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


src, out, work, worker_tmp = sys.argv[1:5]
shipped = yaml.safe_load(Path(src).read_text())
local = {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
refused = ("available_node_types", "head_node_type")  # "not supported for on-premise clusters"
derived = {k: (local if k == "provider" else v) for k, v in shipped.items() if k not in refused}
Path(out).write_text(
    "# derived by scripts/cluster-up-check.sh from cluster.yaml: provider swapped, node types dropped\n"
    + yaml.safe_dump(derived, sort_keys=False, width=10_000)
)
back = yaml.safe_load(Path(out).read_text())
for key, value in shipped.items():
    if key not in refused and key != "provider":
        assert back[key] == value, f"{key} changed"
assert back["provider"] == local and not set(refused) & set(back)

# the hand-joined GPU worker: the shipped worker start line (its `ray stop` line is never run:
# it would stop the head too), without the object manager port the head holds on this machine,
# and with a dashboard agent port of its own (the head's agent holds the default here)
start = [c for c in shipped["worker_start_ray_commands"] if "ray start" in c]
assert len(start) == 1, shipped["worker_start_ray_commands"]
line = re.sub(r"\s+--object-manager-port=\S+", "", start[0])
Path(work, "gpu-worker-start.sh").write_text(
    "export RAY_HEAD_IP=127.0.0.1\n"
    f"{line} --num-gpus=1 --num-cpus=2 --temp-dir={worker_tmp}"
    f" --dashboard-agent-listen-port={free_port()}\n"
)
# the MLflow stop line of the head, to stop the server before `ray down` (see the end)
stop = [c for c in shipped["head_start_ray_commands"] if "mlflow.pid" in c and "kill" in c]
assert len(stop) == 1, "one MLflow stop line expected in head_start_ray_commands"
Path(work, "mlflow-stop.sh").write_text(stop[0] + "\n")
PY
pass derived-config "$DERIVED (provider local 127.0.0.1; node types dropped; all else verbatim)"

step "tiny dataset (1 recording per split, 5 s, mic), synthesized on the launcher"
# the same settings as tests/conftest.py's tiny_data; rerunning skips finished recordings
RAY_TMPDIR=$LAUNCH_TMP "$VENV/bin/seld-orch" synth --out "$STATE_DIR/dataset" --per-split 1 \
  --seconds 5 --formats mic --seed 5 --num-cpus 2 >"$WORK/synth.log" 2>&1
log "$(tail -n 1 "$WORK/synth.log")"

# ==============================================================================================
step "ray up -y (first: setup commands; the first time pip installs the project for $NODE_USER)"
UP1_T=$SECONDS
if ray_up "$WORK/ray-up-1.log"; then
  pass ray-up "ray up -y of the derived config in $((SECONDS - UP1_T)) s"
else
  fail ray-up "ray up failed after $((SECONDS - UP1_T)) s (see $WORK/ray-up-1.log)"
  exit 1
fi

step "forwards: dashboard to 127.0.0.1:$DASH_FWD, MLflow to 127.0.0.1:$MLFLOW_FWD"
# `ray dashboard` as the README has it; its default local port (8265) is the head's own port on
# this machine, and `ray attach -p 5000` would bind 5000, where the head's MLflow listens.
DASH=http://127.0.0.1:$DASH_FWD
MLF=http://127.0.0.1:$MLFLOW_FWD
forward "$WORK/forward-dashboard.log" "$DASH_FWD" || die "no dashboard forward (see $WORK/forward-dashboard.log)"
forward "$WORK/forward-mlflow.log" "$MLFLOW_FWD" --remote-port 5000 || die "no MLflow forward (see $WORK/forward-mlflow.log)"
log "forwards up: $DASH -> head:8265, $MLF -> head:5000 (process groups ${FORWARD_PIDS[*]})"

step "token authentication"
NOAUTH=$(http_code "$DASH/api/jobs/")
WITHAUTH=$(http_code "$DASH/api/jobs/" -H "Authorization: Bearer $TOKEN")
mkdir -p "$WORK/no-token-home"
set +e
HOME=$WORK/no-token-home RAY_AUTH_TOKEN='' RAY_AUTH_TOKEN_PATH='' \
  "$VENV/bin/seld-orch" status --address "$DASH" >"$WORK/status-no-token.log" 2>&1
NOTOKEN_RC=$?
"$VENV/bin/seld-orch" status --address "$DASH" >"$WORK/status-token.log" 2>&1
TOKEN_RC=$?
set -e
if [[ $NOAUTH =~ ^40[13]$ && $NOTOKEN_RC -ne 0 ]]; then
  pass token-auth-refused "Jobs API without a token: HTTP $NOAUTH; seld-orch status exit $NOTOKEN_RC: $(head -c 150 "$WORK/status-no-token.log" | tr '\n' ' ')"
else
  fail token-auth-refused "Jobs API without a token: HTTP $NOAUTH, seld-orch status exit $NOTOKEN_RC"
fi
if [[ $WITHAUTH == 200 && $TOKEN_RC -eq 0 ]]; then
  pass token-auth-accepted "Jobs API with root's ~/.ray/auth_token: HTTP 200; seld-orch status exit 0"
else
  fail token-auth-accepted "Jobs API with the token: HTTP $WITHAUTH, seld-orch status exit $TOKEN_RC"
fi

step "ray exec: the head's token and Ray version"
lray exec "$DERIVED" 'cat ~/.ray/auth_token' >"$WORK/exec-token.log" 2>&1 || true
chmod 600 "$WORK/exec-token.log"
if grep -qF "$TOKEN" "$WORK/exec-token.log"; then
  pass ray-exec-token "ray exec '... cat ~/.ray/auth_token' prints the launcher's token"
else
  fail ray-exec-token "the head's ~/.ray/auth_token differs from the launcher's (see $WORK/exec-token.log)"
fi
lray exec "$DERIVED" 'echo "NODE_RAY=$(ray --version)"; echo "PY_RAY=$(python -c "import ray; print(ray.__version__)")"' \
  >"$WORK/exec-version.log" 2>&1 || true
if grep -q "NODE_RAY=ray, version $RAY_VERSION" "$WORK/exec-version.log" && grep -q "PY_RAY=$RAY_VERSION" "$WORK/exec-version.log"; then
  pass node-ray-version "Ray on the node: $RAY_VERSION (the launcher's: $("$VENV/bin/ray" --version | awk '{print $3}'))"
else
  fail node-ray-version "$(grep -E 'NODE_RAY=|PY_RAY=' "$WORK/exec-version.log" | grep -v echo | tr '\n' ' ')"
fi

step "MLflow server on the head"
if wait_for 60 health_ok "$MLF"; then
  pass mlflow-health-forward "GET $MLF/health (forwarded to the head's 127.0.0.1:5000): OK"
else
  fail mlflow-health-forward "no answer from $MLF/health (see $WORK/forward-mlflow.log, ~$NODE_USER/mlflow.log)"
fi
lray exec "$DERIVED" 'echo "HEALTH=$(curl -s --max-time 5 http://127.0.0.1:5000/health)"' >"$WORK/exec-health.log" 2>&1 || true
if grep -q 'HEALTH=OK' "$WORK/exec-health.log"; then
  pass mlflow-health-exec "ray exec 'curl http://127.0.0.1:5000/health' on the head: OK"
else
  fail mlflow-health-exec "ray exec curl of /health on the head gave: $(grep -a 'HEALTH=' "$WORK/exec-health.log" | tail -n 1)"
fi

step "one GPU worker joined by hand (it stands in for the autoscaled gpu_worker)"
log "as $NODE_USER: $(tail -n 1 "$WORK/gpu-worker-start.sh")"
node_ssh 'bash -s' <"$WORK/gpu-worker-start.sh" >"$WORK/gpu-worker-start.log" 2>&1 \
  || die "the GPU worker did not start (see $WORK/gpu-worker-start.log)"
nodes_json() {
  curl -s --max-time 10 -H "Authorization: Bearer $TOKEN" "$DASH/api/v0/nodes?limit=100&detail=1"
}
gpu_node_id() {
  nodes_json | "$VENV/bin/python" -c '
import json, sys
rows = json.load(sys.stdin)["data"]["result"]["result"]
alive = [r for r in rows if r["state"] == "ALIVE"]
gpu = [r["node_id"] for r in alive if r.get("resources_total", {}).get("GPU")]
head = [r["node_id"] for r in alive if r.get("is_head_node")]
if len(gpu) == 1 and len(head) == 1 and len(alive) == 2:
    print(gpu[0], head[0])
else:
    sys.exit(1)'
}
if wait_for 90 gpu_node_id >/dev/null 2>&1; then
  read -r GPU_NODE HEAD_NODE < <(gpu_node_id)
  pass gpu-worker-joined "2 nodes alive: head ${HEAD_NODE:0:12}…, GPU worker ${GPU_NODE:0:12}… (GPU: 1)"
else
  fail gpu-worker-joined "the GPU worker did not join (see $WORK/gpu-worker-start.log)"
  exit 1
fi

step "submit a tiny cv from the launcher, through the forwarded dashboard"
lray rsync-up "$DERIVED" "$STATE_DIR/dataset/" "$SHARED/data/rayup/" >"$WORK/rsync-up.log" 2>&1 \
  || die "ray rsync-up of the dataset failed (see $WORK/rsync-up.log)"
"$VENV/bin/seld-orch" submit cv --address "$DASH" --dataset "$SHARED/data/rayup" \
  --workspace "$SHARED/workspace" --config tiny --set train.max_batches_per_epoch=2 \
  --gpu --folds 1 --epochs 1 --run rayup >"$WORK/submit.out" 2>"$WORK/submit.err" \
  || die "seld-orch submit failed: $(tail -n 3 "$WORK/submit.err")"
JOB=$(grep -m 1 -oE '^raysubmit_[A-Za-z0-9]+$' "$WORK/submit.out") || die "no job id in $WORK/submit.out"
log "submitted $JOB"
set +e
timeout 1200 "$VENV/bin/seld-orch" status "$JOB" --address "$DASH" --wait --json >"$WORK/job-status.json" 2>&1
STATUS_RC=$?
"$VENV/bin/seld-orch" logs "$JOB" --address "$DASH" >"$WORK/job-logs.txt" 2>&1
set -e
sed 's/^/    | /' "$WORK/job-logs.txt" | tail -n 40
JOB_STATUS=$("$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["status"])' "$WORK/job-status.json" 2>/dev/null || echo unknown)
if [[ $STATUS_RC -eq 0 && $JOB_STATUS == SUCCEEDED ]] && grep -q "MLflow: run" "$WORK/job-logs.txt"; then
  pass job-succeeded "$JOB SUCCEEDED ($("$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["elapsed_s"])' "$WORK/job-status.json") s)"
else
  fail job-succeeded "$JOB: $JOB_STATUS (status exit $STATUS_RC; logs $WORK/job-logs.txt)"
fi
# node.txt: the node of a stage's Ray Train worker (the fold job that drives it stays on the head)
NODE_FILES=$(find "$SHARED/workspace/runs/rayup" -name node.txt 2>/dev/null | sort)
if [[ -n $NODE_FILES ]] && ! grep -L -x -F "$GPU_NODE" $NODE_FILES | grep -q .; then
  pass fold-jobs-on-gpu-node "the training workers of $(echo "$NODE_FILES" | wc -l) fold stages ($(echo "$NODE_FILES" | sed "s|$SHARED/workspace/runs/rayup/||; s|/node.txt||" | xargs)) ran on the GPU worker ${GPU_NODE:0:12}… (their node.txt)"
else
  fail fold-jobs-on-gpu-node "node.txt: $(for f in $NODE_FILES; do echo "$f=$(cut -c1-12 "$f")"; done | xargs) (GPU node ${GPU_NODE:0:12}, head ${HEAD_NODE:0:12})"
fi
if "$VENV/bin/python" - "$MLF" >"$WORK/mlflow-runs.log" 2>&1 <<'PY'
import sys
from mlflow.tracking import MlflowClient

client = MlflowClient(sys.argv[1])
experiments = [e.experiment_id for e in client.search_experiments()]
runs = client.search_runs(experiments)
parents = [r for r in runs if r.data.tags.get("kind") == "cv" and r.info.run_name == "rayup"]
assert len(parents) == 1, f"cv runs named rayup: {len(parents)}"
parent = parents[0]
assert parent.info.status == "FINISHED", parent.info.status
assert "cv_seld" in parent.data.metrics, sorted(parent.data.metrics)
children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
stages = sorted((r.data.tags.get("fold"), r.data.tags.get("stage")) for r in children)
assert stages == [("1", "doa"), ("1", "sed")], stages
assert all(r.info.status == "FINISHED" for r in children)
print(f"run {parent.info.run_id} FINISHED, cv_seld={parent.data.metrics['cv_seld']:.3f}, children {stages}")
PY
then
  pass mlflow-run-tracked "in the head's server (via $MLF): $(tail -n 1 "$WORK/mlflow-runs.log")"
else
  fail mlflow-run-tracked "$(tail -n 1 "$WORK/mlflow-runs.log")"
fi

# ==============================================================================================
step "ray up -y again (an update: head start commands, MLflow stopped and started again)"
OLD_PID=$(cat "$NODE_HOME/mlflow.pid" 2>/dev/null || echo none)
OLD_TREE=$OLD_PID
[[ $OLD_PID =~ ^[0-9]+$ ]] && OLD_TREE="$OLD_PID $(ps --ppid "$OLD_PID" -o pid= | xargs)"
log "MLflow before: pid file $OLD_PID, process tree: $OLD_TREE"
ps -o pid,ppid,args -p "${OLD_TREE// /,}" 2>/dev/null | sed 's/^/    | /' || true
UP2_T=$SECONDS
if ray_up "$WORK/ray-up-2.log"; then
  pass ray-up-rerun "second ray up -y in $((SECONDS - UP2_T)) s"
else
  fail ray-up-rerun "second ray up failed (see $WORK/ray-up-2.log)"
fi
NEW_PID=$(cat "$NODE_HOME/mlflow.pid" 2>/dev/null || echo none)
sleep 2
left=()
for pid in $OLD_TREE; do
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && left+=("$pid:$(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-80)")
done
if wait_for 90 health_ok "$MLF"; then HEALTH2=OK; else HEALTH2=none; fi
LISTENER=$(ss -ltnpH 'sport = :5000' | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2)
LISTENER_PARENT=$([[ -n $LISTENER ]] && ps -o ppid= -p "$LISTENER" | tr -d ' ' || true)
log "MLflow after: pid file $NEW_PID, port 5000 held by pid ${LISTENER:-none} (parent ${LISTENER_PARENT:-none})"
if [[ ${#left[@]} -eq 0 && $NEW_PID =~ ^[0-9]+$ && $NEW_PID != "$OLD_PID" && $HEALTH2 == OK ]] \
  && [[ $LISTENER == "$NEW_PID" || $LISTENER_PARENT == "$NEW_PID" ]]; then
  pass mlflow-restarted "old server $OLD_TREE gone; new server $NEW_PID (port 5000: pid $LISTENER) answers /health"
else
  fail mlflow-restarted "old processes left: ${left[*]:-none}; new pid $NEW_PID; port 5000 pid ${LISTENER:-none}; /health: $HEALTH2 (see ~$NODE_USER/mlflow.log)"
fi
# the head's `ray stop` (first head start line) also stopped the hand-joined worker: it runs as
# the same user on this machine. On AWS the worker is another machine.
WORKER_LEFT=$(ps -u "$NODE_USER" -o pid=,args= | grep -F "$GPU_WORKER_TMP" | grep -v grep || true)
log "hand-joined worker processes after the rerun: ${WORKER_LEFT:-none (its ray stop line ran as the same user)}"

# ==============================================================================================
step "ray down -y; stop the worker, MLflow and the forwards"
# on AWS `ray down` terminates the head's instance, MLflow with it; the local provider keeps the
# machine, so the head's own MLflow stop line runs first
node_ssh 'bash -s' <"$WORK/mlflow-stop.sh" >"$WORK/mlflow-stop.log" 2>&1 || true
if lray down -y "$DERIVED" >"$WORK/ray-down.log" 2>&1; then
  DOWN_OK=1
else
  DOWN_OK=0
fi
sed 's/^/    | /' "$WORK/ray-down.log" | tail -n 15
# the hand-joined worker, if the rerun's `ray stop` left any of it: by pid
for pid in $(ps -u "$NODE_USER" -o pid=,args= | grep -F "$GPU_WORKER_TMP" | grep -v grep | awk '{print $1}'); do
  as_node kill "$pid" 2>/dev/null || true
done
stop_forwards
sleep 3
LEFT=$(node_ray_or_mlflow)
rm -rf "$GPU_WORKER_TMP"
if [[ $DOWN_OK -eq 1 ]]; then
  pass ray-down "ray down -y of the derived config"
else
  fail ray-down "ray down failed (see $WORK/ray-down.log)"
fi
FWD_LEFT=""
for port in "$DASH_FWD" "$MLFLOW_FWD" 6379 8265 5000; do
  ss -ltnH "sport = :$port" | grep -q . && FWD_LEFT+=" $port"
done
if [[ -z $LEFT && -z $FWD_LEFT ]]; then
  pass nothing-left "no Ray or MLflow process of $NODE_USER, no forward, ports 6379 8265 5000 $DASH_FWD $MLFLOW_FWD closed"
else
  fail nothing-left "left: ${LEFT:-no process}; listening:${FWD_LEFT:- none}"
  echo "$LEFT" | sed 's/^/    | /'
fi
log "$NODE_USER's processes now: $(ps -u "$NODE_USER" -o pid=,args= | wc -l)"
ps -u "$NODE_USER" -o pid=,args= | sed 's/^/    | /' || true

FINISHED=1
