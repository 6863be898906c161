"""ReleaseLayout on real directories, with real git, real processes and a real HTTP app."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import httpx
import pytest

from bot.dev.demo_web import free_port
from bot.dev.harness.gitrepo import AppRepo, app_argv, make_app_repo
from services.hosts.runner import CommandResult, Host, LocalHost, PrefixHost
from services.releases.build import InvalidVersion
from services.releases.layout import (
    ArtifactSource,
    BuildFailed,
    BuildStep,
    GitSource,
    ReleaseExists,
    ReleaseLayout,
    ReleaseNotFound,
)
from tests.services.releases.test_build import HOSTILE_VERSIONS


class ForbiddenHost:
    """A host on which nothing may run: any call fails the test."""

    name = "forbidden"

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        input: bytes | None = None,
        output_limit: int = 64 * 1024,
    ) -> CommandResult:
        self.calls.append(tuple(argv))
        raise AssertionError(f"a command ran: {argv!r}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> AppRepo:
    return make_app_repo(tmp_path_factory.mktemp("releases") / "app")


def layout_at(path: Path, host: Host | None = None) -> ReleaseLayout:
    return ReleaseLayout(host or LocalHost(), str(path))


def artifacts(tmp_path: Path, *versions: str) -> ArtifactSource:
    for version in versions:
        (tmp_path / "artifacts" / version).mkdir(parents=True)
        (tmp_path / "artifacts" / version / "VERSION").write_text(version)
    return ArtifactSource(str(tmp_path / "artifacts" / "{version}"))


async def test_prepare_and_switch_move_current_and_return_the_previous(
    repo: AppRepo, tmp_path: Path
) -> None:
    layout = layout_at(tmp_path / "web")
    assert await layout.releases() == [] and await layout.current() is None
    for version in ("v1", "v2", "v3"):
        prepared = await layout.prepare(version, GitSource(repo.url))
        assert prepared.commit == repo.commits[version]
        assert prepared.path == str(tmp_path / "web" / "releases" / version)
    assert await layout.current() is None  # building never switches
    assert await layout.switch("v1") is None
    assert await layout.switch("v2") == "v1"
    assert os.readlink(tmp_path / "web" / "current") == "releases/v2"
    assert (
        json.loads((tmp_path / "web" / "current" / "release.json").read_text())["version"] == "v2"
    )
    assert (await layout.current(), await layout.previous()) == ("v2", "v1")
    infos = await layout.releases()
    assert [i.version for i in infos] == ["v1", "v2", "v3"]
    assert [(i.is_current, i.is_previous, i.complete) for i in infos] == [
        (False, True, True),
        (True, False, True),
        (False, False, True),
    ]
    meta = await layout.metadata("v3")
    assert meta["commit"] == repo.commits["v3"] and meta["source"] == repo.url
    with pytest.raises(ReleaseExists):
        await layout.prepare("v2", GitSource(repo.url))
    with pytest.raises(ReleaseNotFound, match="no release v9"):
        await layout.switch("v9")
    assert await layout.switch("v2") == "v2" and await layout.previous() == "v1"
    # Told what `current` points at (a rollout read it before its first batch): the same end.
    assert await layout.switch("v3", current="v2") == "v2"
    assert (await layout.current(), await layout.previous()) == ("v3", "v2")
    names = sorted(p.name for p in (tmp_path / "web").iterdir())
    assert names == ["current", "previous", "releases"]  # no temporary link left


async def test_the_releases_serve_their_version_and_v3_fails_its_health_check(
    repo: AppRepo, tmp_path: Path
) -> None:
    """The contract later deploy tests rely on: v1 and v2 are healthy, v3 is not."""
    layout = layout_at(tmp_path)
    for version in ("v2", "v3"):
        prepared = await layout.prepare(version, GitSource(repo.url))
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            *app_argv(prepared.path, port), stdout=asyncio.subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            assert b"listening" in await asyncio.wait_for(process.stdout.readline(), 10)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                health = await client.get("/health")
                index = await client.get("/")
        finally:
            process.terminate()
            await process.wait()
        assert health.status_code == (200 if version == "v2" else 503)
        assert health.json()["version"] == index.json()["version"] == version


async def test_switching_is_atomic_for_a_concurrent_reader(tmp_path: Path) -> None:
    layout = layout_at(tmp_path)
    source = artifacts(tmp_path, "a", "b")
    for version in ("a", "b"):
        await layout.prepare(version, source)
    current = tmp_path / "current"
    await layout.switch("a")
    stop = threading.Event()
    missing: list[int] = []
    seen: set[str] = set()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(os.readlink(current))
            except FileNotFoundError:
                missing.append(1)
            time.sleep(0)  # hand the GIL back at once: the event loop runs the switches

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(200):
            await layout.switch("b" if n % 2 == 0 else "a")
    finally:
        stop.set()
        thread.join()
    assert missing == []
    assert seen == {"releases/a", "releases/b"}  # the reader really ran during the switches
    # The probe can fail: with unlink-then-link (what `ln -sfn` does) it sees the gap.
    stop.clear()
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(5):
            current.unlink()
            await asyncio.sleep(0.01)
            current.symlink_to("releases/a")
    finally:
        stop.set()
        thread.join()
    assert missing


async def test_prune_keeps_the_newest_and_never_current_or_previous(tmp_path: Path) -> None:
    layout = layout_at(tmp_path)
    source = artifacts(tmp_path, "r1", "r2", "r3", "r4", "r5")
    for version in ("r1", "r2", "r3", "r4", "r5"):
        await layout.prepare(version, source)
    (tmp_path / "releases" / "r6").mkdir()  # an interrupted build: never complete
    (tmp_path / "releases" / "not a version").mkdir()  # not ours: left alone
    (tmp_path / "releases" / "x.lock").mkdir()  # a version-like name git would refuse
    await layout.switch("r1")
    await layout.switch("r2")
    assert await layout.prune(2) == ["r3", "r6"]
    assert sorted(os.listdir(tmp_path / "releases")) == [
        "not a version",
        "r1",
        "r2",
        "r4",
        "r5",
        "x.lock",
    ]
    await layout.switch("r5")  # previous: r2
    assert await layout.prune(1, protect=["r4"]) == ["r1"]
    assert await layout.prune(1) == ["r4"]
    assert [i.version for i in await layout.releases()] == ["r2", "r5"]
    with pytest.raises(ValueError):
        await layout.prune(0)


async def test_bad_releases_are_skipped_by_previous_good(tmp_path: Path) -> None:
    layout = layout_at(tmp_path)
    source = artifacts(tmp_path, "v1", "v2", "v3", "v4")
    for version in ("v1", "v2", "v3", "v4"):
        await layout.prepare(version, source)
    await layout.switch("v4")
    assert await layout.previous_good() == "v3"
    await layout.mark_bad("v3", "health check failed after the switch")
    assert await layout.is_bad("v3") and not await layout.is_bad("v2")
    assert await layout.bad_reason("v3") == "health check failed after the switch"
    assert await layout.bad_reason("v2") is None
    assert await layout.previous_good() == "v2"
    assert await layout.previous_good(before="v2") == "v1"
    assert await layout.previous_good(before="v1") is None
    assert [i.version for i in await layout.releases() if i.is_bad] == ["v3"]
    await layout.mark_bad("v4", "marked by hand")  # current itself can be bad
    assert await layout.previous_good() == "v2"
    await layout.clear_bad("v3")
    assert await layout.previous_good() == "v3"
    assert [i.version for i in await layout.releases()] == ["v1", "v2", "v3", "v4"]  # order kept
    with pytest.raises(ReleaseNotFound):
        await layout.mark_bad("v8", "no such release")
    with pytest.raises(ReleaseNotFound):
        await layout.previous_good(before="v8")


async def test_a_failing_build_leaves_current_untouched(repo: AppRepo, tmp_path: Path) -> None:
    layout = layout_at(tmp_path)
    await layout.prepare("v1", GitSource(repo.url))
    await layout.switch("v1")
    failing = BuildStep(("python3", "-c", "import sys; print('no such package'); sys.exit(1)"))
    with pytest.raises(BuildFailed) as caught:
        await layout.prepare("v2", GitSource(repo.url), [BuildStep(("true",)), failing])
    assert caught.value.exit_status == 1 and caught.value.tail == "no such package"
    assert await layout.current() == "v1" and await layout.previous() is None
    assert [i.version for i in await layout.releases()] == ["v1"]
    assert not (tmp_path / "releases" / "v2").exists()
    await layout.prepare("v2", GitSource(repo.url))  # a later attempt starts clean
    assert await layout.exists("v2")


async def test_an_interrupted_build_is_not_a_release(tmp_path: Path) -> None:
    layout = layout_at(tmp_path)
    source = artifacts(tmp_path, "v1")
    (tmp_path / "releases" / "v1").mkdir(parents=True)
    (tmp_path / "releases" / "v1" / "half-written").write_text("x")
    assert [(i.version, i.complete) for i in await layout.releases()] == [("v1", False)]
    with pytest.raises(ReleaseNotFound):
        await layout.switch("v1")
    assert await layout.previous_good() is None
    await layout.prepare("v1", source)  # replaces the leftover
    (tmp_path / "releases" / "v2").mkdir()  # half-written again, another release
    assert await layout.switch("v1") is None
    # Told what `current` points at, the release is checked beside the temporary links: a
    # release that is not complete still moves nothing, and leaves no temporary link behind.
    with pytest.raises(ReleaseNotFound):
        await layout.switch("v2", current="v1")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert (await layout.current(), await layout.previous()) == ("v1", None)
    assert sorted(os.listdir(tmp_path / "releases" / "v1")) == [".opsgate-release.json", "VERSION"]


@pytest.mark.parametrize("version", HOSTILE_VERSIONS)
async def test_hostile_versions_are_refused_before_any_command(version: str) -> None:
    host = ForbiddenHost()
    layout = ReleaseLayout(host, "/srv/web")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: layout.prepare(version, GitSource("/srv/repo.git")),
        lambda: layout.switch(version),
        lambda: layout.exists(version),
        lambda: layout.mark_bad(version, "x"),
        lambda: layout.clear_bad(version),
        lambda: layout.is_bad(version),
        lambda: layout.bad_reason(version),
        lambda: layout.metadata(version),
        lambda: layout.previous_good(before=version),
        lambda: layout.prune(3, protect=[version]),
    ]
    for call in calls:
        with pytest.raises(InvalidVersion):
            await call()
    assert host.calls == []


async def test_the_layout_works_through_a_prefix_host(repo: AppRepo, tmp_path: Path) -> None:
    """Every command goes through Host.run as argv: `env` in front changes nothing."""
    layout = layout_at(tmp_path, PrefixHost(["env"]))
    step = BuildStep(("python3", "-c", "import os; print(os.environ['OPSGATE_RELEASE_DIR'])"))
    prepared = await layout.prepare("v1", GitSource(repo.url), [step])
    assert prepared.steps[-1].tail == str(tmp_path / "releases" / "v1")
    await layout.prepare("v2", GitSource(repo.url))
    await layout.switch("v1")
    assert await layout.switch("v2") == "v1"
    await layout.mark_bad("v2", "smoke test failed")
    assert await layout.previous_good() == "v1"
    assert [i.version for i in await layout.releases() if i.is_current] == ["v2"]


def test_the_root_must_be_a_plain_absolute_path() -> None:
    for root in ("srv/web", "/srv/web app", "/srv/../etc", "/srv/*"):
        with pytest.raises(ValueError):
            ReleaseLayout(LocalHost(), root)
