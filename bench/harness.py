#!/usr/bin/env python3
"""bulkwatch's benchmark harness (run it through bench/run).

What it does, in order (each part can be picked with --only):

  setup       build bulkwatch and the floor (release), install the peers
              (npm ci for lifion-kinesis), record versions;
  throughput  fill each stream ONCE with sample-events.py --no-quirks (reused
              when a stream with the same name, shard count and record count
              is still there), then run every consumer on it to completion
              from TRIM_HORIZON, one after the other: CPU seconds (user+sys of
              the consumer process, from wait4), peak RSS (ru_maxrss), wall
              time and records/s; plus the LocalStack processes' CPU meanwhile;
  latency     per consumer that can print what it decoded, a fresh stream,
              events put at a steady rate, put->emit latency p50/p99;
  idle        bulkwatch on a fresh empty stream of many shards: CPU used per
              second once it is settled;

then writes bench/results/<UTC date>-<mode>.json and .md.

Completion: bulkwatch never exits by itself, so the harness counts the lines
it writes on stdout. With --no-quirks every event is a new status of its job,
so every record must become exactly one transition; the count bulkwatch logs
in its "Worker summary." line on exit is recorded next to it. The peers exit
themselves after --expect N records. Wall time runs from the spawn to the
moment the last expected line was read (bulkwatch) or to the exit (peers);
CPU and RSS cover the whole process life, start-up and shutdown included.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "work")
BIN = os.path.join(WORK, "bin")
RESULTS = os.path.join(HERE, "results")
SAMPLE_EVENTS = os.path.join(ROOT, "localstack", "sample-events.py")
LIFION_DIR = os.path.join(HERE, "peers", "lifion")
SEED = 7
TICK = os.sysconf("SC_CLK_TCK")
ALL_CONSUMERS = ["floor", "bulkwatch", "python", "lifion"]
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ profiles

@dataclass
class Profile:
    name: str
    streams: list[tuple[str, int, int]]   # (name, shards, records)
    latency_shards: int
    latency_rate: float                    # events/s
    latency_seconds: float
    idle_shards: int
    idle_seconds: float
    idle_warmup: float = 15.0


FULL = Profile(
    name="full",
    streams=[("bench-16x200000", 16, 200_000), ("bench-64x200000", 64, 200_000)],
    latency_shards=16, latency_rate=20, latency_seconds=60,
    # 75 s settle: past `poll.dormant_after` (60 s), so the measured minute
    # is the steady state of a quiet fleet, not its first minute.
    idle_shards=200, idle_seconds=60, idle_warmup=75,
)
QUICK = Profile(
    name="quick",
    streams=[("bench-4x8000", 4, 8_000)],
    latency_shards=4, latency_rate=10, latency_seconds=15,
    idle_shards=16, idle_seconds=15, idle_warmup=10,
)


# ------------------------------------------------------------------- helpers

def aws_client(service: str):
    import boto3
    from botocore.config import Config
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    return boto3.client(service, region_name=region, config=Config(
        retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32))


def run_cmd(cmd: list[str], **kw) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout.strip()


def proc_cpu_s(pid: int) -> float | None:
    """utime+stime of a live process, in seconds (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def proc_rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def server_pids() -> dict[str, int]:
    """The LocalStack gateway and its kinesis-local engine (found by command line)."""
    found: dict[str, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "localstack.runtime.main" in cmd:
            found["localstack"] = int(d)
        elif "kinesis-local" in cmd and "node" in cmd:
            found["kinesis-local"] = int(d)
    return found


def server_settings() -> dict:
    """The settings the running LocalStack was started with, read from its
    own environment: bench/run's exports only apply when it is the one that
    starts LocalStack, so the harness's environment would not tell."""
    pid = server_pids().get("localstack")
    out: dict = {"pid": pid}
    if pid is None:
        return out
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    except OSError as e:
        out["error"] = str(e)
        return out
    for k in ("KINESIS_LATENCY", "KINESIS_SHARD_LIMIT", "KINESIS_MOCK_PROVIDER_ENGINE"):
        v = env.get(k.encode())
        out[k] = v.decode() if v is not None else None
    return out


class ServerCpu:
    """CPU the LocalStack processes spend between start() and stop()."""

    def __init__(self):
        self.pids = server_pids()
        self.before = {k: proc_cpu_s(p) for k, p in self.pids.items()}

    def stop(self) -> float | None:
        total = 0.0
        for k, p in self.pids.items():
            now, then = proc_cpu_s(p), self.before.get(k)
            if now is None or then is None:
                return None
            total += now - then
        return round(total, 2) if self.pids else None


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


# ------------------------------------------------------------------ building

def build(args, consumers: list[str]) -> dict:
    """Release builds of bulkwatch and the floor, copied to bench/work/bin so a
    later build by someone else in a shared target dir cannot swap them."""
    os.makedirs(BIN, exist_ok=True)
    target = os.environ.get("CARGO_TARGET_DIR")
    info: dict = {}
    if args.bulkwatch:
        shutil.copy2(args.bulkwatch, os.path.join(BIN, "bulkwatch"))
        info["bulkwatch_binary"] = os.path.abspath(args.bulkwatch)
    elif not args.no_build and "bulkwatch" in consumers:
        log("cargo build --release (bulkwatch)")
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
        src = os.path.join(target or os.path.join(ROOT, "target"), "release", "bulkwatch")
        shutil.copy2(src, os.path.join(BIN, "bulkwatch"))
    if not args.no_build and "floor" in consumers:
        log("cargo build --release (bench/floor)")
        subprocess.run(["cargo", "build", "--release", "--locked"],
                       cwd=os.path.join(HERE, "floor"), check=True)
        src = os.path.join(target or os.path.join(HERE, "floor", "target"), "release", "bench-floor")
        shutil.copy2(src, os.path.join(BIN, "bench-floor"))
    for c, b in (("bulkwatch", "bulkwatch"), ("floor", "bench-floor")):
        if c in consumers and not os.path.exists(os.path.join(BIN, b)):
            sys.exit(f"bench: {BIN}/{b} missing (run without --no-build once)")
    try:
        info["git_commit"] = run_cmd(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT)
        info["git_dirty"] = bool(run_cmd(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"], cwd=ROOT))
    except (subprocess.CalledProcessError, FileNotFoundError):
        pass
    try:
        info["rustc"] = run_cmd(["rustc", "--version"])
    except (subprocess.CalledProcessError, FileNotFoundError):
        pass
    return info


def install_peers(consumers: list[str]) -> dict:
    info: dict = {}
    import boto3
    import botocore
    info["python"] = platform.python_version()
    info["boto3"] = boto3.__version__
    info["botocore"] = botocore.__version__
    if "lifion" in consumers:
        lock = os.path.join(LIFION_DIR, "package-lock.json")
        with open(lock, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        stamp = os.path.join(LIFION_DIR, "node_modules", ".bench-stamp")
        if not (os.path.exists(stamp) and open(stamp).read() == digest):
            log("npm ci (lifion-kinesis, pinned by package-lock.json)")
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=LIFION_DIR, check=True)
            with open(stamp, "w") as f:
                f.write(digest)
        info["node"] = run_cmd(["node", "--version"])
        with open(os.path.join(LIFION_DIR, "node_modules", "lifion-kinesis", "package.json")) as f:
            info["lifion-kinesis"] = json.load(f)["version"]
        with open(os.path.join(LIFION_DIR, "node_modules", "aws-sdk", "package.json")) as f:
            info["aws-sdk (js v2)"] = json.load(f)["version"]
    return info


# ------------------------------------------------------------------- streams

def wait_active(kinesis, name: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        s = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if s["StreamStatus"] == "ACTIVE":
            return s
        if time.monotonic() > deadline:
            raise RuntimeError(f"stream {name} not ACTIVE after {timeout} s")
        time.sleep(0.2)


def delete_stream(kinesis, name: str) -> None:
    try:
        kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
    except kinesis.exceptions.ResourceNotFoundException:
        return
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            kinesis.describe_stream_summary(StreamName=name)
        except kinesis.exceptions.ResourceNotFoundException:
            return
        time.sleep(0.2)


def ensure_filled(kinesis, name: str, shards: int, count: int) -> dict:
    """Fill once; reuse while the stream the marker describes is still there."""
    marker = os.path.join(WORK, "fills", name + ".json")
    try:
        s = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    except kinesis.exceptions.ResourceNotFoundException:
        s = None
    if s is not None and os.path.exists(marker):
        with open(marker) as f:
            m = json.load(f)
        if (m.get("created") == s["StreamCreationTimestamp"].isoformat()
                and m.get("records") == count and s["OpenShardCount"] == shards):
            log(f"reusing stream {name} ({shards} shards, {count} records, filled {m['filled_at']})")
            m["reused"] = True
            return m
    if s is not None:
        log(f"stream {name} exists without a matching fill marker: deleting it")
        delete_stream(kinesis, name)
    log(f"filling {name}: {shards} shards, {count} events (sample-events.py --no-quirks --seed {SEED}); "
        f"LocalStack takes ~500 records/s")
    t = time.monotonic()
    proc = subprocess.run(
        [sys.executable, SAMPLE_EVENTS, "--stream", name, "--create-shards", str(shards),
         "--count", str(count), "--no-quirks", "--seed", str(SEED)],
        capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench: filling {name} failed:\n{proc.stderr[-3000:]}")
    found = re.search(r"put (\d+) record\(s\) into .* per shard: (\{.*\})", proc.stderr)
    if not found or int(found.group(1)) != count:
        sys.exit(f"bench: unexpected sample-events output:\n{proc.stderr[-2000:]}")
    s = wait_active(kinesis, name)
    m = {"stream": name, "shards": shards, "records": count,
         "per_shard": ast.literal_eval(found.group(2)),
         "created": s["StreamCreationTimestamp"].isoformat(),
         "filled_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
         "fill_seconds": round(time.monotonic() - t, 1), "reused": False}
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    with open(marker, "w") as f:
        json.dump(m, f, indent=1)
    log(f"filled {name} in {m['fill_seconds']} s")
    return m


# ----------------------------------------------------------------- consumers

@dataclass
class Spec:
    """How to start one consumer."""
    name: str
    argv: list[str]
    env: dict
    exits_itself: bool          # False: bulkwatch (SIGTERM after completion)
    line_is_transition: bool    # stdout lines are what we count (bulkwatch)
    emits_event_ids: bool = False
    emits_transitions: bool = False
    workdir: str = ""


def consumer_spec(name: str, stream: str, expect: int | None, run_dir: str,
                  latency: bool = False) -> Spec | None:
    env = dict(os.environ)
    os.makedirs(run_dir, exist_ok=True)
    if name == "bulkwatch":
        env.update({"BULKWATCH_LOG_FORMAT": "json", "BULKWATCH_LOG_LEVEL": "info"})
        return Spec(name, [os.path.join(BIN, "bulkwatch"), "run", "--stream", stream,
                           "--state-dir", os.path.join(run_dir, "state"),
                           "--start-position", "trim-horizon"],
                    env, exits_itself=False, line_is_transition=True,
                    emits_transitions=True, workdir=run_dir)
    if name == "floor":
        if latency:
            return None  # it has no output by design
        argv = [os.path.join(BIN, "bench-floor"), "--stream", stream]
        if expect is not None:
            argv += ["--expect", str(expect)]
        return Spec(name, argv, env, exits_itself=True, line_is_transition=False, workdir=run_dir)
    if name == "python":
        argv = [sys.executable, os.path.join(HERE, "peers", "python_consumer.py"),
                "--stream", stream, "--checkpoint-file", os.path.join(run_dir, "checkpoints.json")]
        if expect is not None and not latency:
            argv += ["--expect", str(expect)]
        if latency:
            argv += ["--emit", "--follow"]
        return Spec(name, argv, env, exits_itself=not latency, line_is_transition=False,
                    emits_event_ids=latency, workdir=run_dir)
    if name == "lifion":
        table = "bench-lifion-" + os.path.basename(run_dir.rstrip("/"))
        argv = ["node", os.path.join(LIFION_DIR, "consumer.js"), "--stream", stream,
                "--table", table]
        if expect is not None and not latency:
            argv += ["--expect", str(expect)]
        if latency:
            argv += ["--emit"]
        return Spec(name, argv, env, exits_itself=not latency, line_is_transition=False,
                    emits_event_ids=latency, workdir=run_dir)
    raise ValueError(name)


class Running:
    """A started consumer: stdout read by a thread (line count, optionally
    timestamped event ids), exit and rusage collected with wait4."""

    def __init__(self, spec: Spec, keep_ids: bool):
        self.spec = spec
        self.stderr_path = os.path.join(spec.workdir, "stderr.log")
        self.stdout_sample_path = os.path.join(spec.workdir, "stdout-head.jsonl")
        self.lines = 0
        self.last_line_t: float | None = None
        self.first_line_t: float | None = None
        self.ids: list[tuple[float, str]] = []   # (monotonic emit time, event id)
        self.keep_ids = keep_ids
        self.cond = threading.Condition()
        self.exited = threading.Event()
        self.status: int | None = None
        self.rusage = None
        self.t_exit: float | None = None
        self.time_path = os.path.join(spec.workdir, "rusage.txt")
        argv = spec.argv
        if GNU_TIME:
            # Why GNU time in between: Linux carries a process's peak RSS
            # across exec (signal->maxrss takes the old mm's high-water mark),
            # so a consumer forked straight from this harness would report the
            # harness's own RSS (~60 MB of Python) as its peak. time forks the
            # consumer from a ~2 MB process and reports its wait4 rusage.
            argv = [GNU_TIME, "-o", self.time_path, "-f", "%e %U %S %M %x", "--"] + argv
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, env=spec.env, cwd=spec.workdir,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=open(self.stderr_path, "wb"))
        self.wrapper_pid = self.proc.pid
        self.pid = self._consumer_pid() if GNU_TIME else self.wrapper_pid
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._wait, daemon=True).start()

    def _consumer_pid(self) -> int:
        """The consumer itself: the one child of the time wrapper."""
        path = f"/proc/{self.wrapper_pid}/task/{self.wrapper_pid}/children"
        for _ in range(500):
            try:
                kids = open(path).read().split()
            except OSError:
                kids = []
            if kids:
                return int(kids[0])
            time.sleep(0.01)
        raise RuntimeError(f"{self.spec.name}: no consumer process under the time wrapper")

    def time_rusage(self) -> dict | None:
        """GNU time's report: elapsed, user, sys, max RSS (KiB), exit status."""
        try:
            last = open(self.time_path).read().strip().splitlines()[-1].split()
            return {"user": float(last[1]), "sys": float(last[2]),
                    "maxrss_kb": int(last[3]), "exit": int(last[4])}
        except (OSError, IndexError, ValueError):
            return None

    def _read(self) -> None:
        fd = self.proc.stdout.fileno()
        buf = b""
        head: list[bytes] = []
        while True:
            chunk = os.read(fd, 1 << 16)
            now = time.monotonic()
            if not chunk:
                break
            n = chunk.count(b"\n")
            if self.keep_ids or len(head) < 20:
                buf += chunk
                parts = buf.split(b"\n")
                buf = parts.pop()
                for line in parts:
                    if len(head) < 20:
                        head.append(line)
                    if self.keep_ids:
                        self.ids.append((now, self._event_id(line)))
            with self.cond:
                if n:
                    if self.first_line_t is None:
                        self.first_line_t = now
                    self.lines += n
                    self.last_line_t = now
                self.cond.notify_all()
        with open(self.stdout_sample_path, "wb") as f:
            f.write(b"\n".join(head) + (b"\n" if head else b""))

    def _event_id(self, line: bytes) -> str:
        if self.spec.emits_transitions:
            try:
                return json.loads(line).get("event_id", "")
            except ValueError:
                return ""
        return line.decode(errors="replace").strip()

    def _wait(self) -> None:
        _, status, ru = os.wait4(self.wrapper_pid, 0)
        self.t_exit = time.monotonic()
        self.status = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.status  # so Popen does not wait again
        self.rusage = ru
        self.exited.set()
        with self.cond:
            self.cond.notify_all()

    def wait_lines(self, n: int, stall: float, deadline: float) -> bool:
        """Until n lines were read; False on exit, a stall or the deadline."""
        last_progress, last_lines = time.monotonic(), -1
        with self.cond:
            while self.lines < n:
                if self.exited.is_set():
                    return False
                now = time.monotonic()
                if self.lines != last_lines:
                    last_lines, last_progress = self.lines, now
                if now - last_progress > stall or now > deadline:
                    return False
                self.cond.wait(1.0)
        return True

    def terminate(self, grace: float = 60) -> None:
        if not self.exited.is_set():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not self.exited.wait(grace):
                log(f"{self.spec.name}: no exit {grace} s after SIGTERM; SIGKILL")
                os.kill(self.pid, signal.SIGKILL)
                self.exited.wait(10)

    def stderr_tail(self, n: int = 3000) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def summary_from_stderr(self) -> dict | None:
        """bulkwatch's 'Worker summary.' log line, or a peer's JSON summary."""
        try:
            with open(self.stderr_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            if "Worker summary." in line or line.startswith('{"peer"'):
                try:
                    obj = json.loads(line)
                except ValueError:
                    return {"raw": line[:500]}
                flat = dict(obj.get("fields", {})) if isinstance(obj.get("fields"), dict) else {}
                flat.update({k: v for k, v in obj.items() if not isinstance(v, dict)})
                return flat
        return None


def usage_of(r: Running) -> dict:
    t = r.time_rusage() if GNU_TIME else None
    if t is not None:
        return {"cpu_user_s": round(t["user"], 3), "cpu_sys_s": round(t["sys"], 3),
                "cpu_s": round(t["user"] + t["sys"], 3),
                "peak_rss_mb": round(t["maxrss_kb"] / 1024, 1), "exit_code": r.status,
                "rusage_from": "GNU time (wait4 of the consumer)"}
    ru = r.rusage
    if ru is None:
        return {}
    return {"cpu_user_s": round(ru.ru_utime, 3), "cpu_sys_s": round(ru.ru_stime, 3),
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
            # Linux: KiB. Without GNU time this includes the harness's own
            # pre-exec peak (see Running), so it is only an upper bound.
            "peak_rss_mb": round(ru.ru_maxrss / 1024, 1), "exit_code": r.status,
            "rusage_from": "wait4 (peak RSS is an upper bound)"}


def throughput_run(name: str, fill: dict, run_root: str) -> dict:
    stream, expect = fill["stream"], fill["records"]
    run_dir = os.path.join(run_root, f"{stream}-{name}")
    shutil.rmtree(run_dir, ignore_errors=True)
    spec = consumer_spec(name, stream, expect, run_dir)
    log(f"throughput: {name} on {stream} ({fill['shards']} shards, {expect} records)")
    server = ServerCpu()
    r = Running(spec, keep_ids=False)
    deadline = r.t0 + 900 + expect / 100
    result: dict = {"consumer": name, "stream": stream, "shards": fill["shards"], "records": expect,
                    "loadavg_1m_before": round(os.getloadavg()[0], 2)}
    if spec.line_is_transition:
        ok = r.wait_lines(expect, stall=120, deadline=deadline)
        t_done = r.last_line_t if ok else None
        if not ok:
            result["error"] = (f"stopped at {r.lines} of {expect} transitions "
                               f"({'exited' if r.exited.is_set() else 'stalled'})")
        r.terminate()
        result["transitions_seen"] = r.lines
    else:
        ok = r.exited.wait(max(1, deadline - time.monotonic()))
        if not ok:
            result["error"] = "did not finish before the deadline"
            r.terminate()
        t_done = r.t_exit if ok and r.status == 0 else None
        if ok and r.status != 0:
            result["error"] = f"exit code {r.status}: {r.stderr_tail(1500)}"
    r.exited.wait(30)
    result["server_cpu_s"] = server.stop()
    result.update(usage_of(r))
    result["summary"] = r.summary_from_stderr()
    if t_done is not None:
        wall = t_done - r.t0
        result["wall_s"] = round(wall, 2)
        result["records_per_s"] = round(expect / wall, 1)
        result["cpu_us_per_record"] = round(result["cpu_s"] / expect * 1e6, 1)
        if name == "bulkwatch" and r.first_line_t is not None:
            result["first_output_s"] = round(r.first_line_t - r.t0, 2)
    if "error" in result:
        log(f"  {name}: {result['error']}")
    else:
        log(f"  {name}: wall {result['wall_s']} s, cpu {result['cpu_s']} s, "
            f"{result['cpu_us_per_record']} us/record, peak RSS {result['peak_rss_mb']} MB")
    return result


# ------------------------------------------------------------------- latency

def load_sample_events():
    spec = importlib.util.spec_from_file_location("sample_events", SAMPLE_EVENTS)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sample_events"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def latency_run(name: str, prof: Profile, run_root: str, kinesis) -> dict | None:
    stream = f"bench-latency-{name}-{int(time.time())}"
    run_dir = os.path.join(run_root, stream)
    spec = consumer_spec(name, stream, None, run_dir, latency=True)
    if spec is None:
        return None
    se = load_sample_events()
    n_timed = int(prof.latency_rate * prof.latency_seconds)
    n_warm = 2 * prof.latency_shards
    # Many jobs in flight, so the partition keys (job sids) cover every shard.
    gen = se.generate(None, 4 * prof.latency_shards, n_warm + n_timed, False,
                      dt.datetime.now(dt.timezone.utc))
    log(f"latency: {name}, {prof.latency_shards} shards, {prof.latency_rate}/s for "
        f"{prof.latency_seconds:.0f} s (stream {stream})")
    kinesis.create_stream(StreamName=stream, ShardCount=prof.latency_shards)
    wait_active(kinesis, stream)
    result: dict = {"consumer": name, "shards": prof.latency_shards,
                    "rate_per_s": prof.latency_rate, "seconds": prof.latency_seconds}
    r = Running(spec, keep_ids=True)
    try:
        puts: dict[str, float] = {}

        def put(rec) -> None:
            ev = rec.event
            now = dt.datetime.now(dt.timezone.utc)
            ev["time"] = se.rfc3339(now)   # the put time rides in the event too (ms)
            data = se.encode(ev)
            puts[ev["id"]] = time.monotonic()
            kinesis.put_record(StreamName=stream, Data=data, PartitionKey=rec.partition_key)

        # Warm-up: a few events, and wait until the consumer has emitted them
        # all, so start-up (leases, iterators) is not counted as latency.
        for _ in range(n_warm):
            put(next(gen))
        if not r.wait_lines(n_warm, stall=180, deadline=time.monotonic() + 240):
            result["error"] = f"warm-up: {r.lines} of {n_warm} events emitted; {r.stderr_tail(800)}"
            return result
        puts.clear()
        cpu0, t_cpu0 = proc_cpu_s(r.pid), time.monotonic()
        t0 = time.monotonic()
        for i in range(n_timed):
            due = t0 + i / prof.latency_rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            put(next(gen))
        r.wait_lines(n_warm + n_timed, stall=30, deadline=time.monotonic() + 60)
        cpu1, t_cpu1 = proc_cpu_s(r.pid), time.monotonic()
        lat = [(t - puts[i]) * 1000 for t, i in r.ids if i in puts]
        result.update({
            "events": n_timed, "emitted": len(lat), "missing": n_timed - len(lat),
            "p50_ms": round(pct(lat, 50), 1) if lat else None,
            "p90_ms": round(pct(lat, 90), 1) if lat else None,
            "p99_ms": round(pct(lat, 99), 1) if lat else None,
            "max_ms": round(max(lat), 1) if lat else None,
            "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
        })
        if cpu0 is not None and cpu1 is not None:
            result["cpu_pct_of_core_during"] = round((cpu1 - cpu0) / (t_cpu1 - t_cpu0) * 100, 2)
        log(f"  {name}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
            f"{result['missing']} missing")
        return result
    finally:
        r.terminate()
        r.exited.wait(30)
        result.update({k: v for k, v in usage_of(r).items() if k in ("peak_rss_mb", "exit_code")})
        delete_stream(kinesis, stream)


# ---------------------------------------------------------------------- idle

def idle_run(prof: Profile, run_root: str, kinesis, consumers: list[str]) -> tuple[dict, dict | None]:
    """bulkwatch on a fresh stream of empty shards, with its defaults; then,
    when the floor is among the consumers, the floor on the same shards
    polling each once a second (bulkwatch's pace before a shard goes
    dormant). Both report CPU per GetRecords call: on empty shards that is
    all there is, so the floor's figure is the SDK's own cost of a poll."""
    shards = prof.idle_shards
    stream = f"bench-idle-{shards}"
    result: dict = {"consumer": "bulkwatch", "shards": shards, "seconds": prof.idle_seconds,
                    "warmup_s": prof.idle_warmup}
    floor: dict | None = None
    log(f"idle: on {shards} empty shards, {prof.idle_warmup:.0f} s settle + "
        f"{prof.idle_seconds:.0f} s measured")
    delete_stream(kinesis, stream)
    try:
        # The shard limit is per account: every open shard of every stream
        # counts, so say plainly when the budget is short.
        lim = kinesis.describe_limits()
        free = lim["ShardLimit"] - lim["OpenShardCount"]
        result["shard_limit"], result["open_shards_before"] = lim["ShardLimit"], lim["OpenShardCount"]
        if free < shards:
            raise RuntimeError(f"ShardLimit {lim['ShardLimit']} with {lim['OpenShardCount']} open leaves {free}")
        kinesis.create_stream(StreamName=stream, ShardCount=shards)
        wait_active(kinesis, stream)
    except Exception as e:  # noqa: BLE001 - report whatever LocalStack said
        result["error"] = (f"CreateStream with {shards} shards failed: {type(e).__name__}: {e}. "
                           f"LocalStack's KINESIS_SHARD_LIMIT must leave room for {shards} shards: "
                           f"localstack/down, then KINESIS_SHARD_LIMIT={max(shards, 1000)} bench/run "
                           f"(or --idle-shards N to measure fewer)")
        log("  " + result["error"])
        return result, None
    try:
        run_dir = os.path.join(run_root, stream)
        shutil.rmtree(run_dir, ignore_errors=True)
        spec = consumer_spec("bulkwatch", stream, None, run_dir)
        port = free_port()
        spec.env["BULKWATCH_OPS__LISTEN"] = f"127.0.0.1:{port}"
        idle_measure(prof, spec, result, lambda: get_records_calls(port))
        if "floor" in consumers:
            floor = {"consumer": "floor", "shards": shards, "seconds": prof.idle_seconds,
                     "warmup_s": prof.idle_warmup, "interval_ms": 1000}
            fdir = os.path.join(run_root, stream + "-floor")
            shutil.rmtree(fdir, ignore_errors=True)
            fspec = consumer_spec("floor", stream, 10**12, fdir)
            fspec.argv += ["--interval-ms", "1000"]
            idle_measure(prof, fspec, floor, None)
        return result, floor
    finally:
        delete_stream(kinesis, stream)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_records_calls(port: int) -> float | None:
    """The sum of bulkwatch_get_records_calls_total over shards."""
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("bulkwatch_get_records_calls_total"))


def idle_measure(prof: Profile, spec: Spec, result: dict, calls) -> None:
    """Runs one consumer on the idle stream: settle, then CPU (utime+stime
    from /proc) and RSS over the measured window. `calls` reads its
    GetRecords call count (bulkwatch's metrics); without it the count comes
    from the consumer's exit summary."""
    name = spec.name
    r = Running(spec, keep_ids=False)
    try:
        time.sleep(prof.idle_warmup)
        if r.exited.is_set():
            result["error"] = f"{name} exited: {r.stderr_tail(1500)}"
            return
        server = ServerCpu()
        n0 = calls() if calls else None
        c0, t0 = proc_cpu_s(r.pid), time.monotonic()
        rss: list[int] = []
        while time.monotonic() - t0 < prof.idle_seconds and not r.exited.is_set():
            time.sleep(1)
            v = proc_rss_kb(r.pid)
            if v:
                rss.append(v)
        c1, t1 = proc_cpu_s(r.pid), time.monotonic()
        n1 = calls() if calls else None
        if c0 is None or c1 is None:
            result["error"] = f"{name} exited during the measurement"
            return
        result["cpu_s"] = round(c1 - c0, 3)
        result["cpu_pct_of_core"] = round((c1 - c0) / (t1 - t0) * 100, 3)
        result["rss_mb_during"] = round(max(rss) / 1024, 1) if rss else None
        if n0 is not None and n1 is not None:
            result["calls_per_s"] = round((n1 - n0) / (t1 - t0), 1)
        srv = server.stop()
        result["server_cpu_pct_of_core"] = round(srv / (t1 - t0) * 100, 1) if srv is not None else None
    finally:
        r.terminate()
        r.exited.wait(30)
        result.update({k: v for k, v in usage_of(r).items() if k in ("peak_rss_mb", "exit_code")})
    if "calls_per_s" not in result:
        s = r.summary_from_stderr() or {}
        if s.get("get_records_calls") and s.get("elapsed_s"):
            # The floor paces each shard evenly, so its whole-life rate is
            # the window's rate.
            result["calls_per_s"] = round(s["get_records_calls"] / s["elapsed_s"], 1)
    if result.get("calls_per_s") and "cpu_s" in result:
        result["cpu_us_per_call"] = round(result["cpu_s"] / (result["calls_per_s"] * prof.idle_seconds) * 1e6)
    log(f"  idle {name}: {result.get('cpu_pct_of_core')} % of a core, "
        f"{result.get('calls_per_s')} GetRecords/s, {result.get('cpu_us_per_call')} µs CPU per call; "
        f"LocalStack {result.get('server_cpu_pct_of_core')} %")


# -------------------------------------------------------------------- report

def fmt(v, nd=1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def targets(res: dict) -> list[str]:
    out = []
    for stream in {t["stream"] for t in res.get("throughput", [])}:
        rows = {t["consumer"]: t for t in res["throughput"] if t["stream"] == stream and "cpu_us_per_record" in t}
        bw, fl = rows.get("bulkwatch"), rows.get("floor")
        peers = [rows[p] for p in ("python", "lifion") if p in rows]
        if bw and fl:
            ratio = bw["cpu_us_per_record"] / fl["cpu_us_per_record"]
            out.append(f"{stream}: CPU/record bulkwatch / floor = {ratio:.2f} (target ≤ 1.25) "
                       f"{'met' if ratio <= 1.25 else 'MISSED'}")
        if bw and peers:
            best = min(peers, key=lambda p: p["cpu_us_per_record"])
            ratio = bw["cpu_us_per_record"] / best["cpu_us_per_record"]
            out.append(f"{stream}: CPU/record bulkwatch / best peer ({best['consumer']}) = {ratio:.3f} "
                       f"= 1/{1 / ratio:.1f} (target ≤ 1/6, stretch 1/10) "
                       f"{'met' if ratio <= 1 / 6 else 'MISSED'}")
        if bw and bw["shards"] >= 64:
            out.append(f"{stream}: bulkwatch peak RSS {bw['peak_rss_mb']} MB with {bw['shards']} shards "
                       f"(target ≤ 30 MB) {'met' if bw['peak_rss_mb'] <= 30 else 'MISSED'}")
    for lat in res.get("latency", []):
        if lat.get("consumer") == "bulkwatch" and lat.get("p50_ms") is not None:
            out.append(f"put→emit p50 {lat['p50_ms']} ms (target ≤ 250 ms) "
                       f"{'met' if lat['p50_ms'] <= 250 else 'MISSED'}")
    idle = res.get("idle")
    if idle and "cpu_pct_of_core" in idle:
        out.append(f"idle: {idle['cpu_pct_of_core']} % of a core on {idle['shards']} shards "
                   f"(target < 2 % on 200) {'met' if idle['cpu_pct_of_core'] < 2 else 'MISSED'}"
                   + ("" if idle["shards"] >= 200 else " (fewer shards than the target's 200)"))
    return out


def write_report(res: dict, path_base: str) -> None:
    with open(path_base + ".json", "w") as f:
        json.dump(res, f, indent=1, default=str)
    L = [f"# bulkwatch benchmark: {res['profile']} run", "",
         f"- date (UTC): {res['started']}", f"- command: `{res['command']}`",
         f"- machine: {res['machine']}; load average at start {res.get('loadavg_at_start')}",
         f"- versions: {', '.join(f'{k} {v}' for k, v in res['versions'].items())}",
         f"- LocalStack as running (its own environment): "
         f"{', '.join(f'{k}={v}' for k, v in res.get('localstack', {}).items() if k != 'pid')}", ""]
    if res.get("fills"):
        L += ["## Streams", "", "| stream | shards | records | filled | fill s | note |", "|---|---:|---:|---|---:|---|"]
        for f_ in res["fills"]:
            L.append(f"| {f_['stream']} | {f_['shards']} | {fmt(f_['records'])} | "
                     f"{'reused' if f_.get('reused') else 'this run'} | {fmt(f_.get('fill_seconds'))} | "
                     f"{f_.get('note', '')} |")
        L.append("")
    if res.get("throughput"):
        L += ["## Throughput (read to completion from TRIM_HORIZON)", "",
              "| stream | consumer | wall s | records/s | CPU s (user+sys) | CPU µs/record | peak RSS MB | LocalStack CPU s | load 1m before | note |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for t in res["throughput"]:
            note = t.get("error", "")
            s = t.get("summary") or {}
            if t["consumer"] == "bulkwatch" and "transitions" in s:
                note = (note + " " if note else "") + f"summary: {s.get('records')} records, {s.get('transitions')} transitions"
            L.append(f"| {t['stream']} | {t['consumer']} | {fmt(t.get('wall_s'), 2)} | "
                     f"{fmt(t.get('records_per_s'), 0)} | {fmt(t.get('cpu_s'), 2)} | "
                     f"{fmt(t.get('cpu_us_per_record'))} | {fmt(t.get('peak_rss_mb'))} | "
                     f"{fmt(t.get('server_cpu_s'))} | {fmt(t.get('loadavg_1m_before'), 2)} | {note} |")
        L.append("")
    if res.get("latency"):
        L += ["## Latency (put → emit)", "",
              "| consumer | shards | rate/s | events | p50 ms | p90 ms | p99 ms | max ms | missing | CPU % of a core meanwhile | note |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for lt in res["latency"]:
            L.append(f"| {lt['consumer']} | {lt['shards']} | {fmt(lt['rate_per_s'], 0)} | {fmt(lt.get('events'))} | "
                     f"{fmt(lt.get('p50_ms'))} | {fmt(lt.get('p90_ms'))} | {fmt(lt.get('p99_ms'))} | "
                     f"{fmt(lt.get('max_ms'))} | {fmt(lt.get('missing'))} | "
                     f"{fmt(lt.get('cpu_pct_of_core_during'), 2)} | {lt.get('error', '')} |")
        L.append("")
    idle = res.get("idle")
    if idle:
        L += ["## Idle", "", "| consumer | shards | measured s | CPU s | % of a core | GetRecords/s | CPU µs per call | RSS MB | LocalStack % of a core | note |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for row in (idle, res.get("idle_floor")):
            if not row:
                continue
            note = row.get("error", "") or ("polls every shard once a second" if row["consumer"] == "floor" else "defaults")
            L.append(f"| {row['consumer']} | {row['shards']} | {fmt(row['seconds'], 0)} | {fmt(row.get('cpu_s'), 3)} | "
                     f"{fmt(row.get('cpu_pct_of_core'), 2)} | {fmt(row.get('calls_per_s'))} | "
                     f"{fmt(row.get('cpu_us_per_call'), 0)} | {fmt(row.get('rss_mb_during'))} | "
                     f"{fmt(row.get('server_cpu_pct_of_core'))} | {note} |")
        L.append("")
    t = targets(res)
    if t:
        L += ["## Against the targets of issue 7", ""] + [f"- {x}" for x in t] + [""]
    with open(path_base + ".md", "w") as f:
        f.write("\n".join(L))


# ---------------------------------------------------------------------- main

def main() -> None:
    p = argparse.ArgumentParser(description="bulkwatch benchmark harness (use bench/run)")
    p.add_argument("--quick", action="store_true",
                   help="small smoke run: 4 shards x 8,000 events, short latency/idle runs")
    p.add_argument("--only", default="throughput,latency,idle",
                   help="comma list of parts: throughput, latency, idle (default: all)")
    p.add_argument("--consumers", default=",".join(ALL_CONSUMERS),
                   help=f"comma list (default: {','.join(ALL_CONSUMERS)})")
    p.add_argument("--streams", help="throughput streams as NAME:SHARDS:RECORDS,... (overrides the profile)")
    p.add_argument("--bulkwatch", help="use this bulkwatch binary instead of building one")
    p.add_argument("--no-build", action="store_true", help="reuse bench/work/bin as it is")
    p.add_argument("--idle-shards", type=int, help="override the idle run's shard count")
    p.add_argument("--label", default="", help="suffix for the results file name")
    a = p.parse_args()
    prof = QUICK if a.quick else FULL
    if a.streams:
        prof.streams = [(n, int(s), int(c)) for n, s, c in (x.split(":") for x in a.streams.split(","))]
    if a.idle_shards:
        prof.idle_shards = a.idle_shards
    parts = [x.strip() for x in a.only.split(",") if x.strip()]
    consumers = [x.strip() for x in a.consumers.split(",") if x.strip()]
    for c in consumers:
        if c not in ALL_CONSUMERS:
            sys.exit(f"bench: unknown consumer {c}")

    started = dt.datetime.now(dt.timezone.utc)
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    res: dict = {
        "profile": prof.name, "started": started.isoformat(timespec="seconds"),
        "command": "bench/run " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores, {cpu_model}, "
                   f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
                   f"{platform.system()} {platform.release()}",
        "localstack": server_settings(),
        "versions": {},
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    res["versions"].update(build(a, consumers))
    res["versions"].update(install_peers(consumers))
    run_root = os.path.join(WORK, "runs", started.strftime("%Y%m%dT%H%M%SZ"))
    os.makedirs(run_root, exist_ok=True)
    kinesis = aws_client("kinesis")
    out_base = os.path.join(RESULTS, started.strftime("%Y-%m-%d") + f"-{prof.name}" + (f"-{a.label}" if a.label else ""))
    os.makedirs(RESULTS, exist_ok=True)

    def save() -> None:
        write_report(res, out_base)

    if "throughput" in parts:
        res["fills"], res["throughput"] = [], []
        for name, shards, count in prof.streams:
            res["fills"].append(ensure_filled(kinesis, name, shards, count))
            save()
        for fill in res["fills"]:
            for c in consumers:
                res["throughput"].append(throughput_run(c, fill, run_root))
                save()
    if "latency" in parts:
        res["latency"] = []
        for c in consumers:
            lr = latency_run(c, prof, run_root, kinesis)
            if lr:
                res["latency"].append(lr)
                save()
    if "idle" in parts and "bulkwatch" in consumers:
        res["idle"], floor = idle_run(prof, run_root, kinesis, consumers)
        if floor:
            res["idle_floor"] = floor
    res["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    save()
    log(f"results: {out_base}.md and .json")
    print(open(out_base + ".md").read())


if __name__ == "__main__":
    main()
