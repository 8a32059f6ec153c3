#!/usr/bin/env bash
# silo's benchmark: builds release, starts a throw-away `silo server` on 127.0.0.1, measures
# it and its peers in the same run, and prints one table. Run as root.
#
#   bench/run.sh            full run (200 launches, 512 MiB of logs, 1,000 jobs, 200 cron
#                           firings, and the python-3.11-ml runtime, which takes minutes)
#   bench/run.sh --quick    fast check (30 launches, 64 MiB of logs, 100 jobs, 20 firings)
#
# Both run the same workflows (a 100-job chain, a 500-job fan-out, a 10,000-job validation)
# and scrape /metrics with 500 jobs running.
#
# Progress goes to stderr; only the table goes to stdout. See bench/README.md.
set -euo pipefail

RUNS=200 LOG_BYTES=512MiB JOBS=1000 PY_RUNS=30 FIRINGS=200 SCRAPE_JOBS=500 MODE=full
case "${1:-}" in
    --quick) RUNS=30 LOG_BYTES=64MiB JOBS=100 PY_RUNS=10 FIRINGS=20 MODE=quick ;;
    "") ;;
    *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac
[[ $EUID -eq 0 ]] || { echo "bench/run.sh must run as root (silo server, unshare, crun)" >&2; exit 1; }

note() { echo "bench: $*" >&2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
note "building release"
cargo build --release -q -p silo -p silo-bench >&2
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SILO=$TARGET/release/silo
BENCH=$TARGET/release/silo-bench

# Peers, mmdebstrap for the server's python-3.11 runtime builds, and busybox-static for
# the busybox runtime (its build copies /bin/busybox). hyperfine is not needed: silo-bench
# times every peer with the same loop.
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v crun >/dev/null || missing+=(crun)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
[[ -x /bin/busybox ]] || missing+=(busybox-static)
if [[ ${#missing[@]} -gt 0 ]] && command -v apt-get >/dev/null; then
    note "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 \
        || note "could not install ${missing[*]}; their rows will say so"
fi

WORK=$(mktemp -d /tmp/silo-bench.XXXXXX)
STATE=$WORK/state
RESULTS=$WORK/results.jsonl
CONFIG=$STATE/client-admin.toml
SERVER=
CRUN_ID=silo-bench-$$

cleanup() {
    if [[ -n $SERVER ]] && kill -0 "$SERVER" 2>/dev/null; then
        # The jobs' init processes are the server's children; killing an init ends its
        # whole pid namespace.
        for child in $(ps -o pid= --ppid "$SERVER" 2>/dev/null); do kill -9 "$child" 2>/dev/null || true; done
        kill -TERM "$SERVER" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER" 2>/dev/null || true
        # Its cgroup subtree, deepest first (only empty directories can go).
        for root in /sys/fs/cgroup/"$CGROUP_NAME" /sys/fs/cgroup/*/"$CGROUP_NAME"; do
            [[ -d $root ]] && { find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true; }
        done
        wait "$SERVER" 2>/dev/null || true
    fi
    command -v crun >/dev/null && crun delete -f "$CRUN_ID" >/dev/null 2>&1 || true
    # Never recurse into a mount (a job's leftover bind of a host directory).
    if grep -q " $WORK" /proc/self/mountinfo; then
        note "mounts left under $WORK; not removing it"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A row that could not be measured, and why (no quotes or backslashes in REASON).
skip() { printf '{"name":"%s","error":"%s"}\n' "$1" "$2" >>"$RESULTS"; note "$1: $2"; }
# A row this mode leaves out, and why (same rule for REASON).
leave_out() { printf '{"name":"%s","skipped":"%s"}\n' "$1" "$2" >>"$RESULTS"; note "$1: $2"; }
# Runs one measurement; its JSON line (result or error) goes to the results.
measure() { note "$1"; shift; "$BENCH" "$@" >>"$RESULTS" || true; }

note "starting silo server (state in $STATE)"
mkdir -p "$STATE"
# Its own cgroup subtree: never the one of a silo server that may run on this host.
CGROUP_NAME=silo-bench-server-$$
"$SILO" server --listen 127.0.0.1:0 --state-dir "$STATE" --cgroup-name "$CGROUP_NAME" \
    --metrics-listen 127.0.0.1:0 >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 300); do
    grep -qs '^address' "$CONFIG" && break
    kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.log" >&2; echo "silo server exited" >&2; exit 1; }
    sleep 0.1
done
grep -qs '^address' "$CONFIG" || { cat "$WORK/server.log" >&2; echo "silo server did not start in 30 s" >&2; exit 1; }
sleep 0.5 # let it settle before reading its idle memory

# Memory first, while the server is still idle.
measure "memory: idle RSS, then $JOBS jobs" memory --config "$CONFIG" --pid "$SERVER" --jobs "$JOBS"
# busybox, the runtime of the next launch row (offline, under a second; runtimes go under
# $STATE/runtimes). After the memory row, which wants the server idle.
measure "runtime busybox: build" runtime --config "$CONFIG" --spec runtimes/busybox.yml --build-only
# Each silo row right beside the peer it is compared with: a VM's speed drifts over a run
# (more than some of the differences measured), so rows minutes apart compare worse.
have_bwrap=
if command -v bwrap >/dev/null; then have_bwrap=yes; fi
bwrap_row() {
    if [[ -n $have_bwrap ]]; then
        measure "$@"
    else
        skip "$1" "bwrap (bubblewrap) is not installed and apt-get could not install it"
    fi
}
measure "fork/exec of /bin/true" fork-exec --runs "$RUNS"
measure "launch" launch --config "$CONFIG" --runs "$RUNS"
bwrap_row "bwrap" exec --name bwrap --runs "$RUNS" -- bwrap --unshare-all --ro-bind / / true
measure "launch idle" launch --config "$CONFIG" --runs "$RUNS" --gap 20ms
bwrap_row "bwrap idle" exec --name "bwrap idle" --runs "$RUNS" --gap 20ms -- bwrap --unshare-all --ro-bind / / true
# The whole client process, as a user types it (connection, TLS, RunJob, logs, the end).
# SILO_CONFIG comes from silo-bench's environment, as from a user's shell: through `env`
# the row also timed a second exec (about 0.5 ms here).
SILO_CONFIG="$CONFIG" measure "silo job run" exec --name "silo job run" --runs "$RUNS" -- "$SILO" job run -- /bin/true
measure "silo: 100 launches at once" concurrent --config "$CONFIG" --jobs 100
bwrap_row "bwrap concurrent" exec-concurrent --name "bwrap concurrent" --n 100 -- bwrap --unshare-all --ro-bind / / true
measure "launch in the busybox runtime" launch --config "$CONFIG" --runs "$RUNS" --runtime busybox
measure "launch with limits" launch --config "$CONFIG" --runs "$RUNS" --memory 64M --cpu 50 --pids 64
measure "cgroup create + limits + remove" cgroup --runs "$RUNS"
measure "logs: $LOG_BYTES through StreamLogs" logs --config "$CONFIG" --bytes "$LOG_BYTES"
measure "pipe: $LOG_BYTES through dd | cat" pipe --bytes "$LOG_BYTES"

# Isolated launch of /bin/true by the other sandboxes silo is compared with.
measure "unshare" exec --name unshare --runs "$RUNS" -- unshare --pid --fork --mount --uts --ipc --net true
if command -v crun >/dev/null; then
    # crun's default bundle (crun spec), running /bin/true without a terminal. Its rootfs is
    # a read-only bind of / made inside a private mount namespace, where the unified cgroup
    # mount of a hybrid host is also hidden (crun refuses hybrid); the host is untouched.
    BUNDLE=$WORK/bundle
    mkdir -p "$BUNDLE/rootfs"
    (cd "$BUNDLE" && crun spec)
    sed -i 's/"terminal": true/"terminal": false/; s/^\(\s*\)"sh"$/\1"\/bin\/true"/' "$BUNDLE/config.json"
    if grep -q '"/bin/true"' "$BUNDLE/config.json" && grep -q '"terminal": false' "$BUNDLE/config.json"; then
        note "crun"
        unshare --mount --propagation private sh -c '
            umount /sys/fs/cgroup/unified 2>/dev/null
            mount --bind / "$1/rootfs" && mount -o remount,bind,ro "$1/rootfs" || exit 1
            shift; exec "$@"' \
            sh "$BUNDLE" "$BENCH" exec --name crun --runs "$RUNS" -- crun run --bundle "$BUNDLE" "$CRUN_ID" \
            >>"$RESULTS" || true
        grep -q '"name":"crun"' "$RESULTS" || skip crun "could not bind / as the bundle rootfs in a private mount namespace"
    else
        skip crun "crun spec did not produce the expected default config.json"
    fi
else
    skip crun "crun is not installed and apt-get could not install it"
fi

# Workflows: two 100-job chains (of true, then of 30 ms jobs; each edge from the server's
# timestamps, and the launches that found no ready init from its metrics), then a fan-out of 500 under max_parallel 50 with the server's RSS around it
# (the server's default --max-jobs, 512, leaves room for 50 at once); then the validation
# of a 10,000-job workflow in-process.
METRICS_ADDR=$(sed -n 's|.*metrics at http://\([^/]*\)/metrics.*|\1|p' "$WORK/server.log" | head -1)
measure "workflows: 100-job chains (true; 30 ms jobs), 1 + 500 fan-out (max_parallel 50), RSS per node" \
    workflow --config "$CONFIG" --pid "$SERVER" --chain 100 --spaced-chain-ms 30 --fan-out 500 \
    --max-parallel 50 --metrics "$METRICS_ADDR"
measure "workflows: validate 10,000 jobs" workflow-validate --stages 100 --width 100 --repeat 5
# Operations: a per-second cron schedule's lateness (FIRINGS seconds), then /metrics
# scraped with SCRAPE_JOBS jobs running (the default --max-jobs is 512).
measure "schedule lateness: $FIRINGS firings" schedule-lateness --config "$CONFIG" --firings "$FIRINGS"
measure "metrics scrape with $SCRAPE_JOBS jobs" metrics-scrape --config "$CONFIG" --addr "$METRICS_ADDR" --jobs "$SCRAPE_JOBS"

# Runtimes: python-3.11 built (mmdebstrap, network), exported, removed, reinstalled from
# its export and verified; then python3 -c pass in it beside the host's python3.
if command -v mmdebstrap >/dev/null; then
    measure "runtime python-3.11: build, export, remove, install, verify" \
        runtime --config "$CONFIG" --spec runtimes/python-3.11.yml
else
    skip "runtime python-3.11" "mmdebstrap is not installed and apt-get could not install it"
fi
measure "python3 -c pass, host view" launch --config "$CONFIG" --runs "$PY_RUNS" --command python3 -c pass
measure "python3 -c pass in python-3.11" \
    launch --config "$CONFIG" --runs "$PY_RUNS" --runtime python-3.11 --command python3 -c pass
# python-3.11-ml (pip, minutes) and the disk it shares with python-3.11: full run only.
if [[ $MODE == quick ]]; then
    leave_out "runtime python-3.11-ml" "skipped in --quick"
    leave_out "runtime disk" "skipped in --quick"
elif command -v mmdebstrap >/dev/null; then
    measure "runtime python-3.11-ml: build (minutes)" \
        runtime --config "$CONFIG" --spec runtimes/python-3.11-ml.yml --build-only
    measure "disk of python-3.11 + python-3.11-ml" runtime-disk --config "$CONFIG" python-3.11 python-3.11-ml
else
    skip "runtime python-3.11-ml" "mmdebstrap is not installed and apt-get could not install it"
    skip "runtime disk" "mmdebstrap is not installed and apt-get could not install it"
fi

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
"$BENCH" report "$RESULTS" \
    --title "silo benchmark ($MODE, $(date -u +%Y-%m-%dT%H:%MZ)) on $(nproc) cores, ${CPU:-unknown cpu}, Linux $(uname -r), load average $LOAD"
