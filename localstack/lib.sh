# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are used by the scripts that source this
# Shared by localstack/up and localstack/down (sourced, not run).
#
# Why a shared file: both scripts must agree exactly on where things live and
# on how "our process" is recognised, otherwise `down` could miss what `up`
# started, or worse, signal a stranger that reused a pid.

# Everything lives in the checkout's git-ignored .localstack/, found relative
# to this file so the scripts work from any cwd.
LS_HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$LS_HERE/../.localstack"
LS_BASE=$(cd -- "$LS_HERE/../.localstack" && pwd)

LS_VENV="$LS_BASE/venv"            # LocalStack + boto3
LS_MOTO_VENV="$LS_BASE/venv-moto"  # moto server (cannot share a venv, see requirements.txt)
LS_FSROOT="$LS_BASE/fs"            # LocalStack's FILESYSTEM_ROOT (host mode)
LS_VOLUME="$LS_FSROOT/var/lib/localstack"  # = its volume dir; lib/ holds kinesis-local
LS_RUN="$LS_BASE/run"              # pid files, warm markers, effective settings
LS_LOGS="$LS_BASE/logs"

LS_PORT=4566
MOTO_PORT=4567
LS_URL="http://127.0.0.1:$LS_PORT"
MOTO_URL="http://127.0.0.1:$MOTO_PORT"

# stdout is reserved for the export lines of `up`; all chatter goes to stderr.
ls_log() { printf '%s: %s\n' "${LS_SCRIPT:-localstack}" "$*" >&2; }
ls_die() { ls_log "ERROR: $*"; exit 1; }

# One up/down at a time per checkout: parallel test jobs may all call `up`,
# and without the lock two of them would both see "not running" and race to
# start a second LocalStack on a busy port.
ls_lock() {
    mkdir -p "$LS_RUN"
    exec 9>"$LS_RUN/lock"
    if ! flock -n 9; then
        ls_log "waiting for another localstack/up or down in this checkout to finish..."
        flock -w 900 9 || ls_die "gave up waiting for the lock $LS_RUN/lock"
    fi
}

# The command line that identifies each service as ours. It contains the
# absolute venv path, so a LocalStack from another checkout (or a reused pid)
# never matches.
ls_marker() {
    case $1 in
        localstack) printf '%s' "$LS_VENV/bin/python -m localstack.runtime.main" ;;
        moto) printf '%s' "$LS_MOTO_VENV/bin/python -m moto.server" ;;
    esac
}

# Print the pid of service $1 if its pid file names a live process that is
# really ours; fail otherwise.
ls_pid() {
    local f="$LS_RUN/$1.pid" pid cmd
    [[ -s $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    cmd=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || return 1
    [[ $cmd == *"$(ls_marker "$1")"* ]] || return 1
    printf '%s\n' "$pid"
}

# Is anything listening on 127.0.0.1:$1? (bash's /dev/tcp: no extra tools)
ls_port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Healthy = the health endpoint lists kinesis as available (lazy, not yet
# started) or running. Other states (error, disabled) or no answer: not healthy.
ls_localstack_healthy() {
    curl -fsS --max-time 3 "$LS_URL/_localstack/health" 2>/dev/null |
        grep -Eq '"kinesis": *"(available|running)"'
}

# moto serves every AWS service on one port and picks the service from the
# signature's credential scope, so an unsigned request lands in S3; a fake
# SigV4 header naming dynamodb is enough (moto does not verify signatures).
ls_moto_healthy() {
    curl -fsS --max-time 3 -X POST "$MOTO_URL/" \
        -H 'Content-Type: application/x-amz-json-1.0' \
        -H 'X-Amz-Target: DynamoDB_20120810.ListTables' \
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0' \
        -d '{}' 2>/dev/null | grep -q '"TableNames"'
}

# pids of all descendants of $1. LocalStack starts kinesis-local with
# start_new_session=True, so it is NOT in LocalStack's process group: a group
# kill would orphan it (and its port); we have to find it by parentage.
ls_descendants() {
    local all
    all=$(ps -eo pid=,ppid=) || return 0
    awk -v root="$1" '
        { parent[$1] = $2; pids[NR] = $1 }
        END {
            changed = 1; mark[root] = 1
            while (changed) {
                changed = 0
                for (i in pids) { p = pids[i]
                    if (!(p in mark) && (parent[p] in mark)) { mark[p] = 1; changed = 1 } }
            }
            for (p in mark) if (p != root) print p
        }' <<<"$all"
}

# pids of leftovers from a crashed run: our service processes whose pid file
# is gone, and engines LocalStack started from its lib folder (kinesis-local's
# node) that outlived it. Deliberately narrow: a user's `tail -f` of our log
# must not match.
# Services whose pid file is live, and their children (kinesis-local), are
# not strays: `up` cleans strays while the other service may be running fine.
ls_strays() {
    local f pid cmd m1 m2 live p
    m1=$(ls_marker localstack) m2=$(ls_marker moto)
    live=" "
    for p in $(ls_pid localstack || true) $(ls_pid moto || true); do
        live+="$p $(ls_descendants "$p" | tr '\n' ' ') "
    done
    # One grep pre-filters /proc (cheap), the exact test below decides.
    # shellcheck disable=SC2013 # /proc paths have no spaces
    for f in $(grep -lsaF -e "$LS_FSROOT/" -e "$LS_VENV/bin/python" \
        -e "$LS_MOTO_VENV/bin/python" /proc/[0-9]*/cmdline 2>/dev/null); do
        pid=${f#/proc/}
        pid=${pid%/cmdline}
        [[ $pid == "$BASHPID" || $live == *" $pid "* ]] && continue
        cmd=$({ tr '\0' ' ' <"$f"; } 2>/dev/null) || continue # may exit meanwhile
        if [[ $cmd == *"$LS_FSROOT/"* || $cmd == *"$m1"* || $cmd == *"$m2"* ]]; then
            printf '%s\n' "$pid"
        fi
    done
    return 0
}

# Stop one service: TERM (LocalStack then stops kinesis-local itself), wait,
# then KILL whatever is left of it and its descendants. Only pids we can prove
# are ours are signalled.
ls_stop() {
    local name=$1 pid kids left i
    if ! pid=$(ls_pid "$name"); then
        rm -f "$LS_RUN/$name.pid" "$LS_RUN/$name.warm"
        return 1
    fi
    kids=$(ls_descendants "$pid")
    ls_log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < ${LS_STOP_GRACE:-10} * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    # kinesis-local is shut down by LocalStack on TERM, but give it a moment.
    for ((i = 0; i < 20; i++)); do
        left=
        for p in $pid $kids; do kill -0 "$p" 2>/dev/null && left+=" $p"; done
        [[ -z $left ]] && break
        sleep 0.1
    done
    if [[ -n $left ]]; then
        ls_log "$name did not exit after TERM; sending KILL to:$left"
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$LS_RUN/$name.pid" "$LS_RUN/$name.warm"
    return 0
}

# TERM, then KILL, the strays (see ls_strays). Used by `down`, and by `up`
# before it starts a server, so a crashed run's orphaned kinesis-local does
# not linger next to the new one.
ls_kill_strays() {
    local strays p i alive
    strays=$(ls_strays | tr '\n' ' ')
    [[ -n ${strays// /} ]] || return 1
    ls_log "stopping leftover processes of ours: $strays"
    # shellcheck disable=SC2086
    kill -TERM $strays 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        alive=
        for p in $strays; do kill -0 "$p" 2>/dev/null && alive=1; done
        [[ -z $alive ]] && break
        sleep 0.1
    done
    for p in $strays; do
        if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
    done
    return 0
}
