"""Building a release directory from its source, and the vocabulary releases share.

A source is a git repository and ref (fetched shallow, checked out detached, `.git` removed
afterwards) or an artifact directory or tarball on the host; build steps then run with the
release directory as cwd. Each is an argv list with a timeout; its output tail is kept in a
`BuildResult`. Versions are checked before anything runs, so user text never reaches argv raw.

    ReleaseError            str() is a sentence fit for a chat reply
     +-- InvalidVersion     the version was rejected; nothing ran
     +-- BuildFailed        a source or build step failed: step, exit status, output tail
     +-- (ReleaseNotFound, ReleaseExists: in services.releases.layout)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

from config.inventory import DeployConfig
from services.errors import OpsgateError
from services.hosts.primitives import run_checked, validate_path
from services.hosts.runner import Host, validate_argv
from services.progress import Progress

VERSION_MAX = 100
STEP_OUTPUT_LIMIT = 16 * 1024
TAIL_LINES = 20
# Stricter than git's ref rules: a version is also a directory name, so no "/" at all.
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tar.zst")


class ReleaseError(OpsgateError):
    """A release operation failed; `str()` is one sentence for a chat reply."""


class InvalidVersion(ReleaseError, ValueError):
    kind = "invalid"

    def __init__(self, version: object, problem: str) -> None:
        shown = repr(version[:40]) if isinstance(version, str) else type(version).__name__
        super().__init__(
            f"{shown} is not a valid version: {problem} "
            "(for example v2.3.1, 2024-06-01, release-7 or a commit id)"
        )
        self.problem = problem


class BuildFailed(ReleaseError):
    def __init__(self, version: str, failed: BuildResult, results: Sequence[BuildResult]) -> None:
        super().__init__(f"Building {version} failed at '{failed.name}': {failed.summary}.")
        self.version = version
        self.step = failed.name
        self.exit_status = failed.exit_status
        self.tail = failed.tail
        self.results = tuple(results)


def validate_version(version: object) -> str:
    """The version itself, or InvalidVersion naming what is wrong with it."""
    if not isinstance(version, str):
        raise InvalidVersion(version, "it is not text")
    problem = None
    if not version:
        problem = "it is empty"
    elif len(version) > VERSION_MAX:
        problem = f"it is longer than {VERSION_MAX} characters"
    elif VERSION_PATTERN.fullmatch(version) is None:
        problem = "use only letters, digits and . _ + -, starting with a letter or digit"
    elif ".." in version:
        problem = "it contains '..'"
    elif version.endswith((".", ".lock")):
        problem = "it ends in '.' or '.lock'"
    if problem is not None:
        raise InvalidVersion(version, problem)
    return version


@dataclass(frozen=True)
class GitSource:
    """A git repository; `ref` None means the version itself (a tag, branch or full commit id)."""

    url: str
    ref: str | None = None
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.url or self.url.startswith("-") or "::" in self.url or "\n" in self.url:
            raise ValueError(f"not a usable git URL: {self.url!r}")  # "::": git's ext:: runs code
        if self.ref is not None:
            validate_version(self.ref)


@dataclass(frozen=True)
class ArtifactSource:
    """A directory or tarball (by suffix) on the host; "{version}" in the path is replaced."""

    path: str
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        validate_path(self.path.replace("{version}", "v"))


@dataclass(frozen=True)
class BuildStep:
    argv: tuple[str, ...]
    timeout_s: float = 600.0
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "argv", validate_argv(self.argv))
        object.__setattr__(self, "name", self.name or " ".join(self.argv)[:80])


@dataclass(frozen=True)
class BuildResult:
    name: str
    argv: tuple[str, ...]
    exit_status: int
    duration_s: float
    tail: str  # the last lines of stderr, or of stdout when stderr is empty
    summary: str  # how it ended, e.g. "exit status 3 on web1"
    ok: bool


async def build(
    host: Host,
    directory: str,
    version: str,
    source: GitSource | ArtifactSource,
    steps: Sequence[BuildStep] = (),
    *,
    progress: Progress | None = None,
    timeout_s: float = 60.0,
) -> tuple[str | None, list[BuildResult]]:
    """Fill the existing, empty `directory` and build there: (commit id or None, results).
    A failing step raises BuildFailed; the caller removes what is left."""
    version = validate_version(version)
    env = {"OPSGATE_VERSION": version, "OPSGATE_RELEASE_DIR": directory}
    results: list[BuildResult] = []
    commit = None
    if isinstance(source, GitSource):
        await run_checked(host, ["git", "init", "--quiet"], timeout=timeout_s, cwd=directory)
        ref = source.ref or version
        fetch = ("git", "fetch", "--quiet", "--depth", "1", "--no-tags", "--", source.url, ref)
        checkout = ("git", "checkout", "--quiet", "--detach", "FETCH_HEAD")
        git_env = {**env, "GIT_TERMINAL_PROMPT": "0"}  # never wait for a password nobody types
        for step in (BuildStep(fetch, source.timeout_s, f"fetch {ref}"), BuildStep(checkout)):
            await _step(host, version, step, directory, git_env, results, progress)
        head = ["git", "rev-parse", "HEAD"]
        commit = (await run_checked(host, head, timeout=timeout_s, cwd=directory)).stdout.strip()
        # A release is a build artifact: a .git inside a served tree leaks the history.
        await run_checked(host, ["rm", "-rf", "--", f"{directory}/.git"], timeout=timeout_s)
    else:
        unpack = _unpack(source, version, directory)
        await _step(host, version, unpack, directory, env, results, progress)
    for step in steps:
        await _step(host, version, step, directory, env, results, progress)
    return commit, results


async def _step(
    host: Host,
    version: str,
    step: BuildStep,
    cwd: str,
    env: Mapping[str, str],
    results: list[BuildResult],
    progress: Progress | None,
) -> None:
    async with progress.step(step.name) if progress is not None else nullcontext():
        run = await host.run(
            step.argv, timeout=step.timeout_s, env=env, cwd=cwd, output_limit=STEP_OUTPUT_LIMIT
        )
        tail = run.tail(TAIL_LINES)
        result = BuildResult(
            step.name, run.argv, run.exit_status, run.duration_s, tail, run.summary, run.ok
        )
        results.append(result)
        if not result.ok:
            raise BuildFailed(version, result, results)


def _unpack(source: ArtifactSource, version: str, directory: str) -> BuildStep:
    path = source.path.replace("{version}", version)
    argv: tuple[str, ...] = ("cp", "-a", "--", f"{path}/.", directory)
    if path.endswith(TARBALL_SUFFIXES):  # --force-local: "host:file" would mean a remote tape
        argv = ("tar", "-x", "--force-local", "--no-same-owner", "-f", path, "-C", directory)
    return BuildStep(argv, source.timeout_s, f"unpack {path}")


def source_of(deploy: DeployConfig) -> GitSource | ArtifactSource:
    if deploy.git is not None:
        return GitSource(deploy.git, deploy.ref, timeout_s=deploy.build_timeout_s)
    assert deploy.artifact is not None  # exactly one of the two: checked at load time
    return ArtifactSource(deploy.artifact, timeout_s=deploy.build_timeout_s)


def build_steps_of(deploy: DeployConfig) -> list[BuildStep]:
    return [BuildStep(tuple(argv), deploy.build_timeout_s) for argv in deploy.build]
