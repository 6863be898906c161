"""The scripted demo, run as a user would: a subprocess printing the transcript."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "demo", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_default_demo_prints_help_whoami_and_status_answered_by_the_bot() -> None:
    result = run_demo()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[alice (private)] bot: Commands" in out
    assert "/reload — re-read the ops file" in out
    assert "[deploys] bot: You: 1002 = bob" in out
    assert "[deploys] bot: opsgate 0.1.0, up" in out
    assert "[deploys] bot: ⛔ /reload needs the role admin." in out
    # The supervised demo service: listed, detailed, restarted after a confirm press.
    assert "🟢 web (production) RUNNING · pid" in out
    assert "demo-web release v1 pid" in out and "listening on 127.0.0.1:" in out
    assert "[deploys] alice pressed [1] 🔁 Restart web" in out
    assert "✅ web restarted and healthy (pid" in out
    # The story: a two-role sign-off, a deploy watched live, a release rolled back by itself.
    assert (
        "[deploys] bot: 🕐 #1 web v2 waits for sign-off in the approvals chat: qa ×1, sre ×1."
        in out
    )
    assert "[approvals] bob pressed [1] ☐ qa: Smoke tests green on staging" in out
    assert "[approvals] bob pressed [2] ✅ Approve as qa" in out
    assert "[approvals] alice pressed [1] ✅ Approve as sre" in out
    assert out.count("✅ Signed off: the deploy goes ahead now.") == 2
    assert "✅ web runs v2 (was v1)." in out
    assert "❌ health: 2 in a row" in out
    assert "Rolled back: web runs v2 again; v3 is marked bad." in out
    releases = [line.strip() for line in out.splitlines() if line.strip().startswith("v3 20")]
    assert releases and "bad" in releases[-1], releases  # /releases marks v3 bad
    # An alert in the critical group, acknowledged.
    assert "[alertmanager] fired ApiErrors (critical, service web): HTTP 200" in out
    assert "[alerts] bot: 🔥 CRITICAL — 1 firing" in out
    assert "[alerts] alice pressed [1] 👀 Ack" in out
    assert "👀 alice is on it" in out
    # Feature flags: role-gated changes, a staged plan, the change trail with names.
    assert "[deploys] bot: ⛔ That /flag change needs the role sre." in out
    assert "[deploys] bot: 🚩 checkout_v2 changed by carol:\n    • rollout: 0% → 25%" in out
    assert "plan 5 → 25 → 50 → 100 every 1h 0m, active" in out
    assert "carol: rollout_percent 25 → 5 (plan step 1)" in out
    # The unlisted group gets an answer only to /whoami.
    lobby = [line for line in out.splitlines() if line.startswith("[lobby] bot:")]
    assert lobby == ["[lobby] bot: You: 1001 = alice"]


def test_script_file_and_bad_script(tmp_path: Path) -> None:
    script = tmp_path / "s.txt"
    script.write_text("# two lines\ncarol@deploys> /status\n")
    result = run_demo("--script", str(script))
    assert result.returncode == 0, result.stderr
    assert "[deploys] carol: /status" in result.stdout
    assert "Services known: 1" in result.stdout
    assert "web (production) supervisor demo-web" in result.stdout

    script.write_text("mallory> /status\n")
    result = run_demo("--script", str(script))
    assert result.returncode == 2
    assert "unknown user 'mallory'" in result.stderr
