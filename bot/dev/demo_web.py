"""A tiny stdlib HTTP service for tests of systemd and supervisord control.

    python3 bot/dev/demo_web.py --port N [--fail-after S] [--exit-code C] [--unhealthy]
                            [--release PATH/release.json]

GET /health answers {"status": "healthy"} (503 and "unhealthy" with --unhealthy). With
--release, a release's JSON ({"version": ..., "healthy": ...}) says its version (shown by
/health) and whether it is healthy: the demo deploys releases that differ only in it. A startup
line goes to stdout so the journal or the supervisord log has something to show.
`--exit-code C` alone exits with C at once, before listening; with `--fail-after S` the
service runs for S seconds and then exits with C (default 1). Under systemd Type=notify it
sends READY=1 once the port is bound, so `systemctl start` returns only when it listens.
Imported as a module it also offers `free_port()` for the tests that start it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


def free_port() -> int:
    """A loopback port that was free a moment ago (the service binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def say(line: str) -> None:
    # Flushed at once: stdout is a pipe under systemd and supervisord, and a crash must
    # not lose the lines the tests look for in the journal or the log tail.
    print(line, flush=True)


def notify_ready() -> None:
    """sd_notify(READY=1) without libsystemd; a no-op outside Type=notify units."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", address)


def make_handler(healthy: bool, version: str | None = None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/health":
                self.send_error(404)
                return
            status = "healthy" if healthy else "unhealthy"
            payload: dict[str, object] = {"status": status, "pid": os.getpid()}
            if version is not None:
                payload["version"] = version
            body = json.dumps(payload).encode()
            self.send_response(200 if healthy else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            say("request: " + format % args)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fail-after", type=float, default=None)
    parser.add_argument("--exit-code", type=int, default=None)
    parser.add_argument("--unhealthy", action="store_true")
    parser.add_argument("--release", default=None)
    args = parser.parse_args(argv)
    healthy, version = not args.unhealthy, None
    if args.release is not None:
        with open(args.release) as file:  # read once: a restart picks up the new release
            release = json.load(file)
        healthy, version = bool(release["healthy"]) and healthy, str(release["version"])

    if args.exit_code is not None and args.fail_after is None:
        say(f"demo-web pid {os.getpid()} failing at startup with exit code {args.exit_code}")
        return int(args.exit_code)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(healthy, version))
    release = f" release {version}" if version else ""
    say(f"demo-web{release} pid {os.getpid()} listening on 127.0.0.1:{args.port}")
    notify_ready()

    exit_code = 0

    def stop(signum: int, frame: FrameType | None) -> None:
        say(f"demo-web got signal {signum}, stopping")
        # shutdown() waits for serve_forever, which runs on this very thread: hand it off.
        threading.Thread(target=server.shutdown, daemon=True).start()

    def fail() -> None:
        nonlocal exit_code
        exit_code = 1 if args.exit_code is None else args.exit_code
        say(f"demo-web failing after {args.fail_after}s with exit code {exit_code}")
        server.shutdown()

    signal.signal(signal.SIGTERM, stop)
    if args.fail_after is not None:
        timer = threading.Timer(args.fail_after, fail)
        timer.daemon = True
        timer.start()
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
