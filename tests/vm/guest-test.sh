#!/bin/sh
# The checks run inside the cgroup v2 VM (busybox sh), as root, by /init.
#
# Starts `silo server` and runs jobs with limits through the CLI, then checks the limits
# from outside the job: in the job's cgroup, /sys/fs/cgroup/silo/jobs/<full job id>, and in
# /proc. The contract checked (issue 4, shared/DESIGN.md "Resource control"):
#   - the server keeps itself in /sys/fs/cgroup/silo/server;
#   - --memory 64M --cpu 50 --pids 64 --cpus 0 write memory.max 67108864 (and memory.high
#     below it), cpu.max "50000 100000", pids.max 64, cpuset.cpus 0, with the job's
#     processes in the cgroup and pinned to CPU 0;
#   - a memory hog under --memory 32M ends FAILED with a reason that says "out of memory";
#   - a fork bomb under --pids 16 stays at 16 processes, and the job can still be stopped;
#   - a busy loop under --cpu 50 gets 50% +- 15% of one core over 3 s;
#   - --io-bps 10M writes io.max on the device that holds the job's files (a loop device
#     that /init set up), and an O_DIRECT write runs at 10 MiB/s +- 30%;
#   - a job's cgroup is removed when it ends: none is left under silo/jobs at the end;
#   - the server's oom_score_adj is -500, a job's 500, and the job cannot lower it;
#   - silo/jobs has pids.max = 3/4 of the smaller of kernel.pid_max and threads-max;
#   - a server with raised RLIMIT_RTPRIO and RLIMIT_NICE gives its jobs 0 of both.
# Each check prints "CHECK <name>: PASS|FAIL ...". Exits 0 when all pass; otherwise writes
# the failed names to /tmp/silo-vm-failed and exits 1.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
STATE=/var/lib/silo
export SILO_CONFIG=$STATE/client-admin.toml
export NO_COLOR=1
CG=/sys/fs/cgroup
JOBS=$CG/silo/jobs
failed=""
npass=0

log() { echo "silo-vm: $*"; }
pass() { echo "CHECK $1: PASS${2:+ ($2)}"; npass=$((npass + 1)); }
fail() { echo "CHECK $1: FAIL $2"; failed="$failed $1"; }
check_eq() { # name what got want
    if [ "$3" = "$4" ]; then pass "$1" "$2 = $3"; else fail "$1" "$2 = '$3', want '$4'"; fi
}
# Guest uptime in whole seconds, and in microseconds.
now() { cut -d. -f1 /proc/uptime; }
now_us() { awk '{ printf "%d\n", $1 * 1000000 }' /proc/uptime; }

# One field of `silo job status ID --json` (the JSON is pretty-printed: one field a line).
field() { # id name
    silo job status "$1" --json 2>/dev/null |
        sed -n "s/^  \"$2\": //p" | sed 's/,$//; s/^"//; s/"$//'
}
# Waits until the job is in one of the states (a |-separated list); prints the state.
wait_state() { # id states timeout_s
    deadline=$(( $(now) + $3 ))
    while :; do
        st=$(field "$1" state)
        case "|$2|" in *"|$st|"*) echo "$st"; return 0 ;; esac
        if [ "$(now)" -ge "$deadline" ]; then echo "${st:-unknown}"; return 1; fi
        sleep 0.3
    done
}
wait_end() { wait_state "$1" "completed|failed|stopped" "$2"; }
# Waits until the path is gone.
wait_gone() { # path timeout_s
    deadline=$(( $(now) + $2 ))
    while [ -e "$1" ]; do
        [ "$(now)" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}
# The pids of the processes whose command line holds MARKER.
pids_with() { # marker
    for f in /proc/[0-9]*/cmdline; do
        # (a process may end between the glob and the read)
        { c=$(tr '\0' ' ' <"$f"); } 2>/dev/null || continue
        case "$c" in *"$1"*) p=${f#/proc/}; echo "${p%/cmdline}" ;; esac
    done
}
# cpu time used, in microseconds: by the cgroup when there is one, else by the processes
# whose command line holds MARKER (utime + stime from /proc, at 100 ticks a second).
cpu_us() { # cgroup marker
    if [ -r "$1/cpu.stat" ]; then
        sed -n 's/^usage_usec //p' "$1/cpu.stat"
        return
    fi
    total=0
    for p in $(pids_with "$2"); do
        t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null) || continue
        total=$((total + ${t:-0} * 10000))
    done
    echo "$total"
}
# Starts a detached job; prints its full id. Logs silo's error and returns 1 on failure.
start_job() { # silo job run options and command...
    out=$(silo job run -d "$@" 2>/tmp/run.err) && [ -n "$out" ] && { echo "$out"; return 0; }
    log "silo job run -d $*: $(cat /tmp/run.err)" >&2
    return 1
}
stop_job() { # id
    timeout 60 silo job stop "$1" >/dev/null 2>&1
}

t_start=$(now)

# ---- server -------------------------------------------------------------------------
log "starting silo server"
# --default-disk 0: the job files stay on /dev/loop0 (ext2, above), whose io.max this test
# checks; per-job disk images are tested on the host.
# The server gets raised scheduling limits (as limits.conf or a unit's LimitRTPRIO= would
# give it); its jobs must not inherit them.
ulimit -r 50 2>/dev/null || log "cannot raise RLIMIT_RTPRIO"
ulimit -e 40 2>/dev/null || log "cannot raise RLIMIT_NICE"
silo server --listen 127.0.0.1:50051 --state-dir "$STATE" --default-disk 0 >/tmp/server.log 2>&1 &
server=$!
deadline=$(( $(now) + 90 ))
until grep -qs '^address' "$SILO_CONFIG"; do
    if ! kill -0 "$server" 2>/dev/null; then
        cat /tmp/server.log
        echo "silo server exited before writing $SILO_CONFIG" >/tmp/silo-vm-failed
        exit 1
    fi
    if [ "$(now)" -ge "$deadline" ]; then
        cat /tmp/server.log
        echo "silo server did not write $SILO_CONFIG in 90s" >/tmp/silo-vm-failed
        exit 1
    fi
    sleep 0.2
done
log "server up after $(( $(now) - t_start ))s; its log so far:"
sed 's/^/  server| /' /tmp/server.log
check_eq server-cgroup "server's cgroup" "$(cat /proc/$server/cgroup)" "0::/silo/server"

# ---- a job runs at all ----------------------------------------------------------------
got=$(timeout 60 silo job run -- echo hello-from-job 2>&1)
check_eq job-runs "output of 'echo hello-from-job'" "$got" "hello-from-job"

# ---- the OOM killer takes a job's processes first -------------------------------------
# Root here has CAP_SYS_RESOURCE (the host's test container may not): the server lowers
# its own score, and a job's 500 is a floor the job cannot go under.
check_eq server-oom "server's oom_score_adj" "$(cat /proc/$server/oom_score_adj)" "-500"
got=$(silo job run -- sh -c 'echo 0 > /proc/self/oom_score_adj 2>/dev/null; cat /proc/self/oom_score_adj' 2>&1)
check_eq job-oom "a job's oom_score_adj after it wrote 0 there" "$got" "500"

# A job gets no real-time or raised scheduling, though the server has both.
check_eq server-rtprio "server's RLIMIT_RTPRIO" \
    "$(awk '/realtime priority/ {print $4}' /proc/$server/limits)" "50"
got=$(silo job run -- sh -c "awk '/realtime priority|nice priority/ {print \$4, \$5}' /proc/self/limits | tr '\n' ' '" 2>&1)
check_eq job-rtprio "a job's RLIMIT_NICE and RLIMIT_RTPRIO (soft hard)" "$got" "0 0 0 0 "

# All jobs together keep three quarters of the host's process ids at most.
hl=$(cat /proc/sys/kernel/pid_max); tm=$(cat /proc/sys/kernel/threads-max)
[ "$tm" -lt "$hl" ] && hl=$tm
check_eq total-pids "jobs' pids.max" "$(cat $JOBS/pids.max)" "$((hl / 4 * 3))"

# The job's init lives inside the job's cgroup: the smallest memory limit the server accepts
# (4 MiB) must still leave room for it and a shell.
got=$(silo job run --memory 4M -- sh -c 'echo small-ok' 2>&1)
check_eq small-memory "output of a job under --memory 4M" "$got" "small-ok"

# ---- limits are written where the contract says ----------------------------------------
if id=$(start_job --memory 64M --cpu 50 --pids 64 --cpus 0 -- sh -c 'sleep 30; : silo_vm_limits'); then
    log "limits job $id"
    wait_state "$id" running 30 >/dev/null
    sleep 0.5
    cg=$JOBS/$id
    if [ -d "$cg" ]; then
        pass job-cgroup "$cg exists"
        check_eq memory-max "memory.max" "$(cat "$cg/memory.max")" 67108864
        high=$(cat "$cg/memory.high")
        if [ "$high" != max ] && [ "$high" -lt 67108864 ] && [ "$high" -ge 50331648 ]; then
            pass memory-high "memory.high = $high, below memory.max"
        else
            fail memory-high "memory.high = '$high', want a little below 67108864"
        fi
        check_eq cpu-max "cpu.max" "$(cat "$cg/cpu.max")" "50000 100000"
        check_eq pids-max "pids.max" "$(cat "$cg/pids.max")" 64
        check_eq cpuset-cpus "cpuset.cpus" "$(cat "$cg/cpuset.cpus")" 0
    else
        fail job-cgroup "no cgroup $cg (ls $JOBS: $(ls "$JOBS" 2>&1 | tr '\n' ' '))"
        for c in memory-max memory-high cpu-max pids-max cpuset-cpus; do
            fail "$c" "no job cgroup"
        done
    fi
    job_pid=$(pids_with silo_vm_limits | head -n 1)
    if [ -z "$job_pid" ]; then
        fail job-in-cgroup "the job's process (sh -c 'sleep 30; ...') not found in /proc"
        fail pinned "the job's process not found"
    else
        check_eq job-in-cgroup "the job's process's cgroup" "$(cat "/proc/$job_pid/cgroup")" "0::/silo/jobs/$id"
        check_eq pinned "the job's Cpus_allowed_list" \
            "$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "/proc/$job_pid/status")" 0
    fi
    stop_job "$id"
    st=$(wait_end "$id" 30)
    check_eq stop "state after silo job stop" "$st" stopped
    if wait_gone "$cg" 10; then
        pass cgroup-removed "$cg gone after the job ended"
    else
        fail cgroup-removed "$cg still there 10 s after the job ended"
    fi
else
    for c in job-cgroup memory-max memory-high cpu-max pids-max cpuset-cpus job-in-cgroup pinned stop cgroup-removed; do
        fail "$c" "the job with limits did not start"
    done
fi

# ---- out of memory --------------------------------------------------------------------
# busybox dd allocates its 64 MiB buffer and fills it from /dev/zero.
if id=$(start_job --memory 32M --timeout 60s -- dd if=/dev/zero of=/dev/null bs=64M count=1); then
    st=$(wait_end "$id" 90)
    reason=$(field "$id" reason)
    log "memory hog $id: state $st, reason '$reason'"
    case "$st:$reason" in
        failed:*"out of memory"*) pass oom "failed: $reason" ;;
        *) fail oom "state '$st' reason '$reason', want failed with 'out of memory'" ;;
    esac
else
    fail oom "the memory hog did not start"
fi

# ---- fork bomb under --pids 16 -------------------------------------------------------------
# The bomb waits for /tmp/go (created from outside, through /proc/PID/root) so that it is
# armed only once pids.max is seen in place: without the limit it would take the VM down.
# Its main process execs sleep and never forks again, so only a stop ends the job.
bomb='while [ ! -e /tmp/go ]; do sleep 0.2; done; b() { while :; do b & done; }; b & exec sleep 120'
if id=$(start_job --pids 16 -- sh -c "$bomb" silo_vm_bomb); then
    wait_state "$id" running 30 >/dev/null
    cg=$JOBS/$id
    max=$(cat "$cg/pids.max" 2>/dev/null)
    if [ "$max" = 16 ]; then
        first=$(head -n 1 "$cg/cgroup.procs")
        touch "/proc/$first/root/tmp/go"
        # The bomb churns (a subshell whose fork is refused exits): sample pids.current.
        most=0
        for i in 1 2 3 4 5 6 7 8; do
            sleep 0.5
            cur=$(cat "$cg/pids.current")
            [ "$cur" -gt "$most" ] && most=$cur
        done
        refused=$(sed -n 's/^max //p' "$cg/pids.events")
        if [ "$most" -le 16 ] && [ "${refused:-0}" -gt 0 ]; then
            pass pids-bomb "pids.current at most $most <= 16 in 8 samples, $refused forks refused"
        else
            fail pids-bomb "pids.current at most $most in 8 samples, pids.events max '$refused'"
        fi
        t0=$(now)
        if stop_job "$id"; then :; else log "silo job stop $id failed"; fi
        st=$(wait_end "$id" 60)
        left=$(pids_with silo_vm_bomb | wc -l)
        if [ "$st" = stopped ] && [ "$left" = 0 ]; then
            pass pids-stop "stopped in $(( $(now) - t0 ))s, no process left"
        else
            fail pids-stop "state '$st' after stop, $left bomb processes left"
        fi
        wait_gone "$cg" 10 || fail pids-cgroup-removed "$cg still there after the stop"
    else
        fail pids-bomb "pids.max of $cg is '${max:-missing}', want 16; bomb not armed"
        stop_job "$id"
        st=$(wait_end "$id" 30)
        check_eq pids-stop "state after stop (unarmed bomb)" "$st" stopped
    fi
else
    fail pids-bomb "the fork bomb job did not start"
fi

# ---- cpu 50% of one core -------------------------------------------------------------------
if id=$(start_job --cpu 50 --timeout 60s -- sh -c 'while :; do :; done; : silo_vm_busy'); then
    wait_state "$id" running 30 >/dev/null
    cg=$JOBS/$id
    sleep 1
    u0=$(cpu_us "$cg" silo_vm_busy); w0=$(now_us)
    sleep 3
    u1=$(cpu_us "$cg" silo_vm_busy); w1=$(now_us)
    pct=$(( (u1 - u0) * 100 / (w1 - w0) ))
    src="cgroup cpu.stat"; [ -r "$cg/cpu.stat" ] || src="/proc (no job cgroup)"
    if [ "$pct" -ge 35 ] && [ "$pct" -le 65 ]; then
        pass cpu-50 "$pct% of one core over $(( (w1 - w0) / 1000 )) ms, from $src"
    else
        fail cpu-50 "$pct% of one core over $(( (w1 - w0) / 1000 )) ms, from $src; want 35..65"
    fi
    stop_job "$id"
    wait_end "$id" 30 >/dev/null
else
    fail cpu-50 "the busy loop did not start"
fi

# ---- io bandwidth 10 MiB/s ---------------------------------------------------------------
# /init put the state directory on /dev/loop0 (ext2), so the job's files have a block device.
# The job times its own O_DIRECT write of 20 MiB with /proc/uptime: 2 s at 10 MiB/s.
if ! grep -q '^/dev/loop0 /var/lib/silo ' /proc/mounts; then
    fail io-max "the state directory is not on a block device here (see /init's output)"
    fail io-10m "the state directory is not on a block device here"
elif id=$(start_job --io-bps 10M --timeout 90s -- sh -c \
    'a=$(cut -d" " -f1 /proc/uptime); dd if=/dev/zero of=io.bin bs=1M count=20 oflag=direct 2>/dev/null; b=$(cut -d" " -f1 /proc/uptime); echo "io-window $a $b"; : silo_vm_io'); then
    wait_state "$id" "running|completed|failed|stopped" 30 >/dev/null
    dev=$(cat /sys/block/loop0/dev)
    iomax=$(cat "$JOBS/$id/io.max" 2>/dev/null)
    case "$iomax" in
        *"$dev rbps=10485760 wbps=10485760"*) pass io-max "io.max = $iomax" ;;
        *) fail io-max "io.max of $JOBS/$id = '${iomax:-missing}', want '$dev rbps=10485760 wbps=10485760 ...'" ;;
    esac
    st=$(wait_end "$id" 90)
    window=$(silo job logs "$id" 2>/dev/null | sed -n 's/^io-window //p')
    # MiB/s times 100: 20 MiB over the window.
    rate=$(echo "$window" | awk '$2 > $1 { printf "%d\n", 2000 / ($2 - $1) }')
    if [ "$st" != completed ] || [ -z "$rate" ]; then
        fail io-10m "job state '$st', window '$window'"
    elif [ "$rate" -ge 700 ] && [ "$rate" -le 1300 ]; then
        pass io-10m "20 MiB written with O_DIRECT at $((rate / 100)).$((rate % 100 / 10)) MiB/s"
    else
        fail io-10m "20 MiB written with O_DIRECT at $((rate / 100)).$((rate % 100 / 10)) MiB/s, want 7..13"
    fi
else
    fail io-max "the io job did not start"
    fail io-10m "the io job did not start"
fi

# ---- nothing left behind -----------------------------------------------------------------
sleep 1
# Cgroups of jobs the server knows must be gone; the others belong to its ready inits
# (--ready-inits), which wait for the next jobs.
ids=$(silo job list --json --limit 1000 2>/dev/null | grep -o '"id": *"[0-9a-f]*"' | grep -o '[0-9a-f]\{32\}')
left=0
for id in $ids; do
    [ -d "$JOBS/$id" ] && left=$((left + 1))
done
ready=$(find "$JOBS" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
if [ ! -d "$JOBS" ]; then
    fail no-leftovers "$JOBS does not exist (no job cgroups were ever made)"
elif [ -z "$ids" ]; then
    fail no-leftovers "silo job list --json listed no jobs"
elif [ "$left" = 0 ]; then
    pass no-leftovers "no job's cgroup is left ($ready ready-init cgroups wait for new jobs)"
else
    fail no-leftovers "$left job cgroups left in $JOBS"
fi

log "checks took $(( $(now) - t_start ))s; $npass passed, $(echo $failed | wc -w) failed"
if [ -n "$failed" ]; then
    log "server log (last 40 lines):"
    tail -n 40 /tmp/server.log | sed 's/^/  server| /'
    echo "checks failed:$failed" >/tmp/silo-vm-failed
    exit 1
fi
exit 0
