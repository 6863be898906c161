"""A small git repository of an HTTP test app, for release and deploy tests.

    repo = make_app_repo(tmp_path / "app")    # tags v1, v2 (healthy) and v3 (/health fails)
    GitSource(repo.url)                       # each tag is a version to deploy
    app_argv(release_dir, port, host=addr)    # how a service unit runs a checked-out release

The app is bot/dev/demo_web.py cut down to what a deployed service needs, standalone (a release
must not import opsgate): `app.py` reads `release.json` next to it for its version and for
`healthy`, answers GET /health with 200 or 503 and GET / with its version, says "listening"
on stdout once bound, sends READY=1 under systemd Type=notify, and stops cleanly on SIGTERM.
A file `broken-<version>` in the release root (ROOT, which holds releases/ and current) makes
that release's /health answer 503 on that host only, from the next request on.
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
"""opsgate test app: GET /health (503 unless release.json says healthy), GET / (the version).

    python3 app.py [--port N] [--host ADDRESS]     (or PORT and HOST from the environment)

/health also answers 503 while ROOT/broken-<version> exists, where ROOT holds releases/ and
current and <version> is release.json's or the release directory's name.
"""

import argparse
import json
import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent  # the real path, not the `current` symlink's
RELEASE = json.loads((HERE / "release.json").read_text())
ROOT = HERE.parent.parent  # HERE is ROOT/releases/<version>
BROKEN = {ROOT / f"broken-{RELEASE['version']}", ROOT / f"broken-{HERE.name}"}


def is_broken():
    return any(marker.exists() for marker in BROKEN)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            healthy = bool(RELEASE["healthy"]) and not is_broken()
            status = {"status": "healthy" if healthy else "unhealthy", "pid": os.getpid()}
            self.answer(200 if healthy else 503, {**status, "version": RELEASE["version"]})
        elif self.path == "/":
            self.answer(200, {"version": RELEASE["version"]})
        else:
            self.send_error(404)

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
