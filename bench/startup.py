"""Cold start to first answered update, and idle memory, of `opsgate run` against the sandbox.

Baseline, measured in the same run: a bare PTB Application with one CommandHandler (no
storage, no HTTP side, no ops file) answering the same command. Run by hand:

    .venv/bin/python bench/startup.py [--runs 5] [--idle 30] [--ops config/opsgate.example.toml]

Each is measured twice: as `opsgate run` starts when `opsgate precompile` has written the
optimized bytecode (it restarts itself under python -OO; so does the baseline), and
plain (OPSGATE_OPTIMIZE=0; the baseline without -OO). Idle memory is read as RSS and USS
(pages only this process holds, what it would give back).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bot.dev.demo import seed_sandbox
from bot.dev.sandbox import SandboxClient, SandboxThread
from bot.launch import optimized_bytecode_installed
from config.opsfile import load_ops_file

REPO = Path(__file__).resolve().parents[1]

TOKEN = "7300000001:BENCH-startup-token-shaped-like-botfathers"

BASELINE = """
import os
from telegram.ext import ApplicationBuilder, CommandHandler
async def status(update, context):
    await update.message.reply_text("pong")
app = ApplicationBuilder().token(os.environ["T"]).base_url(os.environ["U"]).build()
app.add_handler(CommandHandler("status", status))
app.run_polling()
"""


# name -> (argv, environment added)
VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {
    "opsgate": ([sys.executable, "-m", "bot", "run"], {}),
    "baseline -OO": ([sys.executable, "-OO", "-c", BASELINE], {}),
    "opsgate plain": ([sys.executable, "-m", "bot", "run"], {"OPSGATE_OPTIMIZE": "0"}),
    "baseline": ([sys.executable, "-c", BASELINE], {}),
}


async def one_run(
    client: SandboxClient,
    sandbox: SandboxThread,
    argv: list[str],
    extra_env: dict[str, str],
    workdir: Path,
    idle: float,
    ops_path: Path,
) -> tuple[float, int, int]:
    """Seconds from spawn to the bot's answer, and RSS and USS after `idle` s of idling."""
    env = dict(os.environ)
    env.update(
        OPSGATE_BOT_TOKEN=TOKEN,
        OPSGATE_BOT_API_URL=sandbox.base_url,
        OPSGATE_CONFIG=str(ops_path),
        OPSGATE_DB=str(workdir / f"bench-{time.monotonic_ns()}.db"),
        OPSGATE_HTTP_ADDR="127.0.0.1:0",
        OPSGATE_LOG_LEVEL="WARNING",
        PYTHONPATH=str(REPO),
        T=TOKEN,
        U=sandbox.base_url,
    )
    env.update(extra_env)
    await client.reset()
    ops = load_ops_file(ops_path)
    await seed_sandbox(client, ops)
    person, deploys = next(iter(ops.people)), ops.chats.deploys
    assert deploys is not None, "the ops file names no deploys chat"
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=workdir, stdout=asyncio.subprocess.DEVNULL
    )
    # Sent at once: it waits in the sandbox until the bot's first getUpdates takes it.
    sent = await client.send(person, deploys, "/status")
    await client.wait_for(
        deploys, lambda ms: any(m.from_bot and m.message_id > sent for m in ms), timeout=60
    )
    cold_start = time.perf_counter() - started
    await asyncio.sleep(idle)
    memory = psutil.Process(process.pid).memory_full_info()
    process.terminate()
    await process.wait()
    return cold_start, memory.rss, memory.uss


def summary(label: str, values: list[float], unit: str) -> str:
    return (
        f"{label:<36} median {statistics.median(values):7.3f} {unit}"
        f"  min {min(values):7.3f}  max {max(values):7.3f}"
    )


async def main(runs: int, idle: float, ops_path: Path) -> None:
    before = psutil.Process().memory_info().rss
    with SandboxThread(TOKEN) as sandbox, tempfile.TemporaryDirectory() as tmp:
        sandbox_rss = psutil.Process().memory_info().rss - before
        async with SandboxClient(sandbox.control_url) as client:
            results: dict[str, list[tuple[float, int, int]]] = {name: [] for name in VARIANTS}
            for _ in range(runs):  # interleaved, so machine noise hits all alike
                for name, (argv, extra_env) in VARIANTS.items():
                    results[name].append(
                        await one_run(client, sandbox, argv, extra_env, Path(tmp), idle, ops_path)
                    )
    mib = 1024 * 1024
    print(f"ops file: {ops_path}")
    print(f"runs: {runs}, idle before memory reading: {idle} s, cores: {os.cpu_count()}")
    print(f"optimized bytecode installed: {optimized_bytecode_installed()}")
    for measure, index, unit, scale in (
        ("cold start", 0, "s", 1.0),
        ("idle RSS", 1, "MiB", mib),
        ("idle USS", 2, "MiB", mib),
    ):
        medians = {}
        for name, rows in results.items():
            values = [row[index] / scale for row in rows]
            medians[name] = statistics.median(values)
            print(summary(f"{name} {measure}", values, unit))
        for ours, theirs in (("opsgate", "baseline -OO"), ("opsgate plain", "baseline")):
            ratio = medians[ours] / medians[theirs]
            print(f"{f'ratio {ours} / {theirs}':<36} {ratio:.2f}")
        plain = medians["opsgate plain"] - medians["opsgate"]
        print(f"{'opsgate plain - opsgate':<36} {plain:+.3f} {unit}")
    print(f"{'sandbox thread RSS added':<36} {sandbox_rss / mib:7.1f} MiB (bench process)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--ops", type=Path, default=REPO / "config" / "opsgate.example.toml")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.idle, args.ops))
