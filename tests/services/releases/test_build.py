"""Version and path validation, sources and build steps, with real git, tar and processes."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.dev.harness.gitrepo import AppRepo, make_app_repo
from services.hosts.primitives import validate_path
from services.hosts.runner import LocalHost
from services.progress import Progress, Step, StepStatus
from services.releases.build import (
    VERSION_MAX,
    ArtifactSource,
    BuildFailed,
    BuildStep,
    GitSource,
    InvalidVersion,
    build,
    validate_version,
)

GOOD_VERSIONS = [
    "v2.3.1",
    "2024-06-01",
    "release-7",
    "v1.0.0-rc.1",
    "v1.0.0+build.5",
    "V_2",
    "7",
    "0123456789abcdef0123456789abcdef01234567",
    "a" * VERSION_MAX,
]

# Hostile or broken versions: each must be refused before any command runs.
HOSTILE_VERSIONS = [
    "",
    "..",
    "v1..v2",
    "-v1",
    "--upload-pack=touch /tmp/pwned",
    "/etc/passwd",
    "v1/",
    "release/7",
    "../../etc",
    "v1@{1}",
    "@{-1}",
    "HEAD@{0}",
    "v 1",
    " v1",
    "v1\n",
    "v1\nrm -rf /",
    "v1\t",
    "v1\r",
    "v1\0",
    "v1\x7f",
    "v1~1",
    "v1^",
    "v1^{commit}",
    "v1:refs/heads/x",
    "v?",
    "v*",
    "v[1]",
    "v\\1",
    "x.lock",
    "v1.",
    ".hidden",
    "_v1",
    "+v1",
    "a" * (VERSION_MAX + 1),
    "$(reboot)",
    "`id`",
    "v1;ls",
    "v1|cat",
    "v1&",
    "v1>x",
    "v1'",
    'v1"',
    "v1\u200b",  # zero-width space
    "ｖ1",  # fullwidth letter
    "vé",
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> AppRepo:
    return make_app_repo(tmp_path_factory.mktemp("build") / "app")


@pytest.mark.parametrize("version", GOOD_VERSIONS)
def test_good_versions_pass_unchanged(version: str) -> None:
    assert validate_version(version) == version


@pytest.mark.parametrize("version", HOSTILE_VERSIONS)
def test_hostile_versions_are_refused_with_a_chat_ready_message(version: str) -> None:
    with pytest.raises(InvalidVersion) as caught:
        validate_version(version)
    message = str(caught.value)
    assert "is not a valid version" in message and "v2.3.1" in message
    assert "\n" not in message and "\0" not in message and len(message) < 250


def test_non_text_versions_are_refused() -> None:
    for value in (None, 7, b"v1", ["v1"]):
        with pytest.raises(InvalidVersion, match="not text"):
            validate_version(value)


@pytest.mark.parametrize(
    "path", ["", "relative/dir", "/srv/a b", "/srv/../etc", "/srv/./x", "/srv/*", "/srv/'x", "/"]
)
def test_validate_path_refuses_anything_but_a_plain_absolute_path(path: str) -> None:
    with pytest.raises(ValueError):
        validate_path(path)


def test_sources_and_steps_validate_what_they_are_given() -> None:
    assert validate_path("/srv/app/shared/.env") == "/srv/app/shared/.env"
    for url in ("", "-oProxyCommand=x", "ext::sh -c id", "a\nb"):
        with pytest.raises(ValueError):
            GitSource(url)
    with pytest.raises(InvalidVersion):
        GitSource("/srv/repo.git", ref="main..evil")
    with pytest.raises(ValueError):
        ArtifactSource("artifacts/{version}.tar.gz")
    with pytest.raises(ValueError):
        BuildStep(("-rf",))
    assert BuildStep(("python3", "-m", "venv", ".venv")).name == "python3 -m venv .venv"


async def test_a_tag_and_a_commit_id_are_fetched_and_git_is_removed(
    repo: AppRepo, tmp_path: Path
) -> None:
    for ref in ("v2", repo.commits["v1"]):
        directory = tmp_path / ref
        directory.mkdir()
        commit, results = await build(LocalHost(), str(directory), ref, GitSource(repo.url))
        assert commit == repo.commits["v2" if ref == "v2" else "v1"]
        assert [r.name for r in results] == [
            f"fetch {ref}",
            "git checkout --quiet --detach FETCH_HEAD",
        ]
        assert (directory / "app.py").exists() and not (directory / ".git").exists()
    assert '"v2"' in (tmp_path / "v2" / "release.json").read_text()


async def test_steps_run_in_the_release_with_its_environment_and_report_progress(
    repo: AppRepo, tmp_path: Path
) -> None:
    seen: list[list[Step]] = []

    async def listener(steps: Sequence[Step]) -> None:
        seen.append([Step(s.title, s.status) for s in steps])

    steps = [
        BuildStep(("python3", "-m", "venv", "--without-pip", ".venv"), 60.0, "venv"),
        # A relative program path resolves inside the release directory.
        BuildStep((".venv/bin/python", "-c", "import os; print(os.environ['OPSGATE_VERSION'])")),
    ]
    directory = tmp_path / "release"
    directory.mkdir()
    source = GitSource(repo.url, ref="v3")
    progress = Progress(listener)
    _, results = await build(LocalHost(), str(directory), "v3-b", source, steps, progress=progress)
    assert results[-1].ok and results[-1].tail == "v3-b"
    assert [s.title for s in progress.steps][-2] == "venv"
    assert all(s.status is StepStatus.OK for s in progress.steps) and len(seen) == 2 * len(results)


async def test_a_failing_step_raises_with_its_exit_status_and_output_tail(tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "setup.txt").write_text("x")
    noisy = "import sys\nfor n in range(100): print('line', n)\nsys.exit(3)"
    steps = [BuildStep(("true",)), BuildStep(("python3", "-c", noisy), name="install")]
    directory = tmp_path / "release"
    directory.mkdir()
    with pytest.raises(BuildFailed) as caught:
        await build(LocalHost(), str(directory), "v9", ArtifactSource(str(artifact)), steps)
    failed = caught.value
    assert (failed.step, failed.exit_status) == ("install", 3)
    assert failed.tail.splitlines() == [f"line {n}" for n in range(80, 100)]
    assert [r.ok for r in failed.results] == [True, True, False]
    assert str(failed) == "Building v9 failed at 'install': exit status 3 on local."


async def test_a_step_past_its_timeout_is_stopped_and_reported(tmp_path: Path) -> None:
    step = BuildStep(("sleep", "30"), timeout_s=0.3)
    (tmp_path / "artifact").mkdir()
    (tmp_path / "release").mkdir()
    source = ArtifactSource(str(tmp_path / "artifact"))
    with pytest.raises(BuildFailed, match="timed out after"):
        await build(LocalHost(), str(tmp_path / "release"), "v1", source, [step])


async def test_artifact_directories_and_tarballs_are_unpacked(tmp_path: Path) -> None:
    built = tmp_path / "build-v4"
    (built / "static").mkdir(parents=True)
    (built / "static" / "index.html").write_text("v4")
    (built / ".env.example").write_text("hidden files come too")
    tarball = tmp_path / "web-v4.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(built), "."], check=True)
    sources = {
        "dir": ArtifactSource(str(tmp_path / "build-{version}")),
        "tar": ArtifactSource(str(tmp_path / "web-{version}.tar.gz")),
    }
    for kind, source in sources.items():
        directory = tmp_path / kind
        directory.mkdir()
        commit, results = await build(LocalHost(), str(directory), "v4", source)
        assert commit is None and results[0].argv[0] == ("cp" if kind == "dir" else "tar")
        assert (directory / "static" / "index.html").read_text() == "v4"
        assert (directory / ".env.example").exists()
    with pytest.raises(BuildFailed, match="unpack"):
        await build(LocalHost(), str(tmp_path / "dir"), "v5", sources["tar"])


async def test_an_unknown_ref_fails_the_fetch_step(repo: AppRepo, tmp_path: Path) -> None:
    with pytest.raises(BuildFailed) as caught:
        await build(LocalHost(), str(tmp_path), "v404", GitSource(repo.url))
    assert caught.value.step == "fetch v404" and "v404" in caught.value.tail
