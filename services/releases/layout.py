"""Releases on a host, Capistrano-style: `ROOT/releases/<version>`, `ROOT/current` atomic.

Everything runs as argv through a `Host`, so a layout works locally, behind a prefix or over ssh.
A release is complete once its `.opsgate-release.json` exists (written last, atomically); that
file's mtime is the build time (a directory's own mtime moves whenever a marker is added). A
release marked bad carries `.opsgate-bad`, so the mark lives with the host. `ROOT/previous`
names the release `current` was switched away from. Errors: see services.release_build.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.hosts.primitives import HostCommandFailed, run_checked, validate_path, write_file
from services.hosts.runner import CommandResult, Host
from services.progress import Progress
from services.releases.build import (
    ArtifactSource,
    BuildFailed,
    BuildResult,
    BuildStep,
    GitSource,
    InvalidVersion,
    ReleaseError,
    build,
    validate_version,
)

__all__ = [
    "ArtifactSource",
    "BuildFailed",
    "BuildResult",
    "BuildStep",
    "GitSource",
    "HostCommandFailed",
    "InvalidVersion",
    "PreparedRelease",
    "ReleaseError",
    "ReleaseExists",
    "ReleaseInfo",
    "ReleaseLayout",
    "ReleaseNotFound",
    "validate_version",
]

META = ".opsgate-release.json"
BAD = ".opsgate-bad"
# How a bad mark left by a failed rollback begins (see ReleaseQueries.rollback_target).
ROLLBACK_MARK = "a rollback to it failed"
# Symlinks (current, previous), directories (releases) and the two marker files.
_FIND_MATCH = f"( -type l -o -type d -o -name {BAD} -o -name {META} )".split()


class ReleaseNotFound(ReleaseError):
    kind = "not_found"

    pass


class ReleaseExists(ReleaseError):
    pass


@dataclass(frozen=True)
class PreparedRelease:
    version: str
    path: str
    commit: str | None  # for a git source
    steps: tuple[BuildResult, ...]


@dataclass(frozen=True)
class ReleaseInfo:
    version: str
    path: str
    mtime: float  # build time of a complete release, the directory's mtime otherwise
    is_current: bool
    is_previous: bool
    is_bad: bool
    complete: bool  # False: an interrupted build
    linked: bool = False  # some link under the root points at it (current, blue, green, ...)


class ReleaseLayout:
    """The releases of one service on one host, under `root`."""

    def __init__(self, host: Host, root: str, *, timeout_s: float = 60.0) -> None:
        self.host = host
        self.root = validate_path(root.rstrip("/"))
        self.releases_dir = f"{self.root}/releases"
        self.timeout_s = timeout_s

    def path(self, version: str) -> str:
        return f"{self.releases_dir}/{validate_version(version)}"

    async def _run(self, argv: Sequence[str], timeout: float | None = None) -> CommandResult:
        return await run_checked(self.host, argv, timeout=timeout or self.timeout_s)

    async def _test(self, *args: str) -> bool:
        result = await self.host.run(["test", *args], timeout=self.timeout_s)
        if result.exit_status not in (0, 1) or result.timed_out or result.connection_failed:
            raise HostCommandFailed(result)
        return result.ok

    async def has(self, name: str) -> bool:
        """Whether ROOT/`name` exists (a file, link or directory)."""
        return await self._test("-e", f"{self.root}/{name}")

    async def exists(self, version: str) -> bool:
        """True for a complete release (an interrupted build does not count)."""
        return await self._test("-f", f"{self.path(version)}/{META}")

    async def _require(self, version: str) -> str:
        if not await self.exists(version):
            raise ReleaseNotFound(f"There is no release {version} on {self.host.name}.")
        return self.path(version)

    async def read_link(self, name: str) -> str | None:
        argv = ["readlink", "--", f"{self.root}/{name}"]
        result = await self.host.run(argv, timeout=self.timeout_s)
        if result.ok:
            return result.stdout.strip().rsplit("/", 1)[-1] or None
        if result.exit_status == 1 and not result.timed_out and not result.connection_failed:
            return None  # no such link
        raise HostCommandFailed(result)

    async def current(self) -> str | None:
        return await self.read_link("current")

    async def previous(self) -> str | None:
        return await self.read_link("previous")

    async def releases(self) -> list[ReleaseInfo]:
        """Every release directory, oldest first (one find); names not versions are ignored."""
        argv = ["find", self.root, "-mindepth", "1", "-maxdepth", "3", *_FIND_MATCH, "-printf"]
        result = await self.host.run([*argv, r"%y\t%T@\t%P\t%l\0"], timeout=self.timeout_s)
        if not result.ok:
            if not await self._test("-d", self.root):
                return []
            raise HostCommandFailed(result)
        links: dict[str, str] = {}
        dirs: dict[str, float] = {}
        built: dict[str, float] = {}
        bad: set[str] = set()
        for entry in result.stdout.split("\0"):
            kind, mtime, path, target = [*entry.split("\t"), "", "", ""][:4]
            parts = path.split("/")
            if kind == "l" and len(parts) == 1:
                links[path] = target.rsplit("/", 1)[-1]
            elif parts[0] != "releases" or not _is_version([*parts, ""][1]):
                continue
            elif kind == "d" and len(parts) == 2:
                dirs[parts[1]] = float(mtime)
            elif kind == "f" and parts[2:] == [META]:
                built[parts[1]] = float(mtime)
            elif kind == "f" and parts[2:] == [BAD]:
                bad.add(parts[1])
        infos = [
            ReleaseInfo(
                version=version,
                path=f"{self.releases_dir}/{version}",
                mtime=built.get(version, mtime),
                is_current=links.get("current") == version,
                is_previous=links.get("previous") == version,
                is_bad=version in bad,
                linked=version in links.values(),
                complete=version in built,
            )
            for version, mtime in dirs.items()
        ]
        return sorted(infos, key=lambda info: (info.mtime, info.version))

    async def prepare(
        self,
        version: str,
        source: GitSource | ArtifactSource,
        steps: Sequence[BuildStep] = (),
        *,
        progress: Progress | None = None,
    ) -> PreparedRelease:
        """Fetch the source into releases/<version> and build there; `current` is never
        touched. A failed build removes its directory and raises BuildFailed."""
        directory = self.path(version)
        if await self.exists(version):
            raise ReleaseExists(f"Release {version} is already built on {self.host.name}.")
        await self._run(["mkdir", "-p", "--", self.releases_dir])
        await self._run(["rm", "-rf", "--", directory])  # what an interrupted build left
        await self._run(["mkdir", "--", directory])
        try:
            commit, results = await build(
                self.host, directory, version, source, steps, progress=progress
            )
        except BuildFailed:
            await self.host.run(["rm", "-rf", "--", directory], timeout=self.timeout_s)
            raise
        await self._run(["rm", "-f", "--", f"{directory}/{BAD}"])  # an artifact may carry one
        meta = {
            "version": version,
            "commit": commit,
            "source": source.url if isinstance(source, GitSource) else source.path,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "steps": [{"name": r.name, "duration_s": round(r.duration_s, 3)} for r in results],
        }
        data = json.dumps(meta, indent=2).encode()
        await write_file(self.host, f"{directory}/{META}", data, timeout=self.timeout_s)
        return PreparedRelease(version, directory, commit, tuple(results))

    async def metadata(self, version: str) -> dict[str, object]:
        """What prepare() recorded: version, commit, source, built_at, steps."""
        path = await self._require(version)
        data: dict[str, object] = json.loads(
            (await self._run(["cat", "--", f"{path}/{META}"])).stdout
        )
        return data

    async def replace_link(self, name: str, version: str) -> None:
        """Point ROOT/`name` at releases/`version` in one rename."""
        await self._rename_link(await self._link_aside(name, version), name)

    async def _link_aside(self, name: str, version: str) -> str:
        temporary = f"{self.root}/.{name}-{secrets.token_hex(6)}"
        await self._run(["ln", "-s", "-T", "--", f"releases/{version}", temporary])
        return temporary

    async def _rename_link(self, temporary: str, name: str) -> None:
        # rename(2) replaces the old link in one step. `ln -sfn` does the same only since
        # coreutils 9.0; older ones and busybox unlink first, leaving a moment with no link.
        try:
            await self._run(["mv", "-T", "--", temporary, f"{self.root}/{name}"])
        except HostCommandFailed:
            await self.host.run(["rm", "-f", "--", temporary], timeout=self.timeout_s)
            raise

    async def switch(self, version: str, current: str | None = None) -> str | None:
        """Point `current` at a complete release; returns the version it pointed at before.
        Independent reads and the temporary links run side by side; the renames stay in
        order (previous, then current), so a crash never leaves `current` without a way back.

        `current`: what the link points at, when the caller read it already under the deploy's
        lock (a rollout reads every host's before its first batch). The release's check then
        runs beside the temporary links, not before them: a round trip less per host.
        """
        version = validate_version(version)  # before anything runs on the host
        if current is None:
            _, old = await asyncio.gather(self._require(version), self.current())
        else:
            old = current
        names = ["previous", "current"] if old is not None and old != version else ["current"]
        targets = {"previous": old or "", "current": version}
        asides = [self._link_aside(n, targets[n]) for n in names]
        if current is None:
            temporaries = await asyncio.gather(*asides)
        else:
            temporaries = await self._aside_of_checked(version, asides)
        for name, temporary in zip(names, temporaries, strict=True):
            await self._rename_link(temporary, name)
        return old

    async def _aside_of_checked(self, version: str, asides: Sequence[Awaitable[str]]) -> list[str]:
        """The temporary links, made while the release is checked; taken away if it fails."""
        checked, *made = await asyncio.gather(
            self._require(version), *asides, return_exceptions=True
        )
        temporaries = [t for t in made if isinstance(t, str)]
        failure = next((r for r in (checked, *made) if isinstance(r, BaseException)), None)
        if failure is not None:
            if temporaries:
                await self.host.run(["rm", "-f", "--", *temporaries], timeout=self.timeout_s)
            raise failure
        return temporaries

    async def prune(self, keep: int, *, protect: Iterable[str] = ()) -> list[str]:
        """Delete all but the `keep` newest complete releases, never current, previous or one
        in `protect` (being deployed); interrupted builds go too. Returns what was deleted."""
        if keep < 1:
            raise ValueError("keep at least one release")
        spared = {validate_version(version) for version in protect}
        infos = await self.releases()
        spared |= {i.version for i in infos if i.is_current or i.is_previous or i.linked}
        spared |= {i.version for i in [i for i in infos if i.complete][-keep:]}
        doomed = [i for i in infos if i.version not in spared]
        if doomed:
            await self._run(["rm", "-rf", "--", *(i.path for i in doomed)], timeout=300.0)
        return [i.version for i in doomed]

    async def mark_bad(self, version: str, reason: str) -> None:
        path = await self._require(version)
        text = (reason.strip() or "marked bad")[:500] + "\n"
        await write_file(self.host, f"{path}/{BAD}", text.encode(), timeout=self.timeout_s)

    async def clear_bad(self, version: str) -> None:
        await self._run(["rm", "-f", "--", f"{await self._require(version)}/{BAD}"])

    async def is_bad(self, version: str) -> bool:
        return await self._test("-e", f"{self.path(version)}/{BAD}")

    async def bad_reason(self, version: str) -> str | None:
        if not await self.is_bad(version):
            return None
        return (await self._run(["cat", "--", f"{self.path(version)}/{BAD}"])).stdout.strip()

    async def previous_good(self, before: str | None = None) -> str | None:
        """The newest complete release neither current nor bad (and older than `before`)."""
        before = None if before is None else validate_version(before)
        infos = [info for info in await self.releases() if info.complete]
        if before is not None:
            versions = [info.version for info in infos]
            if before not in versions:
                raise ReleaseNotFound(f"There is no release {before} on {self.host.name}.")
            infos = infos[: versions.index(before)]
        good = [info.version for info in infos if not info.is_current and not info.is_bad]
        return good[-1] if good else None


def _is_version(name: str) -> bool:
    try:
        validate_version(name)
    except InvalidVersion:
        return False
    return True
