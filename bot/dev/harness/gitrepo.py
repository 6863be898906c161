"""A small git repository of an HTTP test app, for release and deploy tests.

    repo = make_app_repo(tmp_path / "app")    # tags v1, v2 (healthy) and v3 (/health fails)
    GitSource(repo.url)                       # each tag is a version to deploy
    app_argv(release_dir, port, host=addr)    # how a service unit runs a checked-out release

The app is bot/dev/demo_web.py cut down to what a deployed service needs, standalone (a release
must not import opsgate): `app.py` reads `release.json` next to it for its version and for
`healthy`, answers GET /health with 200 or 503, GET / with its version (JSON) and GET /metrics
in the Prometheus text format (requests of GET / by status code, their latency histogram, the
resident memory, app_build_info{version}), says "listening" on stdout once bound, sends
READY=1 under systemd Type=notify, and stops cleanly on SIGTERM. Files in the release root
(ROOT, which holds releases/ and current) inject faults into one release on that host only,
from the next request on, read afresh for every request:
    broken-<version>   /health answers 503
    errors-<version>   a ratio 0..1 (e.g. "0.3"): that share of GET / answers 500, spread
                       evenly (0.3: exactly 3 of any 10 consecutive requests)
    slow-<version>     seconds (e.g. "0.2"): GET / waits that long before answering
Commits have fixed authors and dates, so commit ids are the same on every run.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Tag -> whether that release's /health succeeds. v1 is a lightweight tag, v2 and v3 annotated.
APP_VERSIONS = {"v1": True, "v2": True, "v3": False}

APP_PY = '''\
"""opsgate test app: GET /health (503 unless release.json says healthy), GET / (the version),
GET /metrics (Prometheus text format 0.0.4).

    python3 app.py [--port N] [--host ADDRESS]     (or PORT and HOST from the environment)

Fault markers in ROOT, which holds releases/ and current, where <version> is release.json's
or the release directory's name; each is read on every request, so it can come and go while
the app runs:
    broken-<version>   /health answers 503
    errors-<version>   a ratio 0..1: that share of GET / answers 500 {"version", "error"},
                       spread evenly over the requests (0.3: exactly 3 of any 10 in a row)
    slow-<version>     seconds: GET / sleeps that long before answering

/metrics: http_requests_total{code} and the http_request_duration_seconds histogram count
GET / only (not /health or /metrics); process_resident_memory_bytes is VmRSS;
app_build_info{version} is 1.
"""

import argparse
import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent  # the real path, not the `current` symlink's
RELEASE = json.loads((HERE / "release.json").read_text())
ROOT = HERE.parent.parent  # HERE is ROOT/releases/<version>
NAMES = (RELEASE["version"], HERE.name)
BROKEN = {ROOT / f"broken-{name}" for name in NAMES}
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PERMILLE = 1000  # errors-<version> resolution: integer arithmetic keeps the spread exact


def is_broken():
    return any(marker.exists() for marker in BROKEN)


def marker_value(kind):
    """The number in ROOT/<kind>-<version>, or None when absent or not a number."""
    for name in NAMES:
        try:
            return float((ROOT / f"{kind}-{name}").read_text().strip())
        except (OSError, ValueError):
            continue
    return None


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0  # GET / requests so far: the position that decides an injected 500
        self.codes = {}
        self.buckets = [0] * len(BUCKETS)
        self.duration_sum = 0.0
        self.duration_count = 0

    def next_fails(self, ratio):
        """Count one GET / request; whether it is one of the `ratio` share that fail."""
        permille = round(min(max(ratio or 0.0, 0.0), 1.0) * PERMILLE)
        with self.lock:
            self.requests += 1
            n = self.requests
        # n fails when floor(n * r) steps up at n: every window of 1/r requests holds one.
        return n * permille // PERMILLE > (n - 1) * permille // PERMILLE

    def observe(self, code, seconds):
        with self.lock:
            self.codes[code] = self.codes.get(code, 0) + 1
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.buckets[index] += 1
            self.duration_sum += seconds
            self.duration_count += 1

    def exposition(self):
        with self.lock:
            codes = sorted(self.codes.items())
            buckets = list(self.buckets)
            total, count = self.duration_sum, self.duration_count
        lines = [
            "# HELP http_requests_total GET / requests answered, by status code.",
            "# TYPE http_requests_total counter",
        ]
        lines += [f'http_requests_total{{code="{code}"}} {n}' for code, n in codes]
        lines += [
            "# HELP http_request_duration_seconds Time to answer GET /.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        for bound, n in zip(BUCKETS, buckets):
            lines.append(f'http_request_duration_seconds_bucket{{le="{bound}"}} {n}')
        lines += [
            f'http_request_duration_seconds_bucket{{le="+Inf"}} {count}',
            f"http_request_duration_seconds_sum {total}",
            f"http_request_duration_seconds_count {count}",
            "# HELP process_resident_memory_bytes Resident memory size in bytes.",
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {resident_memory_bytes()}",
            "# HELP app_build_info The release this process runs.",
            "# TYPE app_build_info gauge",
            f'app_build_info{{version="{RELEASE["version"]}"}} 1',
        ]
        return "\\n".join(lines) + "\\n"


def resident_memory_bytes():
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # the kernel says kB
    except (OSError, ValueError, IndexError):
        pass
    return 0


METRICS = Metrics()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            healthy = bool(RELEASE["healthy"]) and not is_broken()
            status = {"status": "healthy" if healthy else "unhealthy", "pid": os.getpid()}
            self.answer(200 if healthy else 503, {**status, "version": RELEASE["version"]})
        elif self.path == "/":
            self.root()
        elif self.path == "/metrics":
            body = METRICS.exposition().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def root(self):
        started = time.monotonic()
        delay = marker_value("slow")
        if delay and delay > 0:
            time.sleep(delay)
        if METRICS.next_fails(marker_value("errors")):
            code, payload = 500, {"version": RELEASE["version"], "error": "injected"}
        else:
            code, payload = 200, {"version": RELEASE["version"]}
        # Counted before the answer goes out: a scrape right after it already includes it.
        METRICS.observe(code, time.monotonic() - started)
        self.answer(code, payload)

    def answer(self, code, payload):
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def notify_ready():
    address = os.environ.get("NOTIFY_SOCKET")
    if address:
        address = "\\0" + address[1:] if address.startswith("@") else address
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"READY=1", address)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    where = f"{args.host}:{args.port}"
    print(f"app {RELEASE['version']} pid {os.getpid()} listening on {where}", flush=True)
    notify_ready()

    def stop(signum, frame):  # shutdown() waits for serve_forever, which runs on this thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever(poll_interval=0.1)
    server.server_close()


if __name__ == "__main__":
    main()
'''

_GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,  # the developer's own git config must not matter
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "opsgate tests",
    "GIT_AUTHOR_EMAIL": "tests@opsgate.invalid",
    "GIT_COMMITTER_NAME": "opsgate tests",
    "GIT_COMMITTER_EMAIL": "tests@opsgate.invalid",
}


@dataclass(frozen=True)
class AppRepo:
    path: Path
    commits: dict[str, str]  # tag -> full commit id

    @property
    def url(self) -> str:
        return str(self.path)


def git(repo: Path, *args: str, when: int = 0) -> str:
    date = f"{1_717_200_000 + when} +0000"
    env = {**os.environ, **_GIT_ENV, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def make_app_repo(directory: Path) -> AppRepo:
    """Create the repository at `directory` (which must not exist yet): one commit per tag."""
    directory.mkdir(parents=True)
    git(directory, "init", "--quiet", "--initial-branch", "main")
    (directory / "app.py").write_text(APP_PY)
    (directory / "requirements.txt").write_text("# the test app needs only the standard library\n")
    commits: dict[str, str] = {}
    for when, (version, healthy) in enumerate(APP_VERSIONS.items()):
        release = {"version": version, "healthy": healthy}
        (directory / "release.json").write_text(json.dumps(release, indent=2) + "\n")
        git(directory, "add", "--all")
        git(directory, "commit", "--quiet", "--message", f"Release {version}", when=when)
        tag = ["tag", version] if when == 0 else ["tag", "--annotate", "-m", version, version]
        git(directory, *tag, when=when)
        commits[version] = git(directory, "rev-parse", "HEAD")
    return AppRepo(directory, commits)


def app_argv(
    release_dir: str | Path, port: int, python: str = "python3", host: str | None = None
) -> list[str]:
    """`host`: the address to bind (the app's default is 127.0.0.1)."""
    argv = [python, str(Path(release_dir) / "app.py"), "--port", str(port)]
    return argv if host is None else [*argv, "--host", host]
