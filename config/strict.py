"""The base of every ops-file model, and the one rule its patterns follow."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are refused (a typo must not pass silently) and a loaded file is frozen.

    Patterns run on Python's `re`: the default Rust engine compiles an automaton for every
    field that carries one, about 1.7 MiB of a resident opsgate. Under `re`, `$` also
    matches before a final newline, so every pattern ends in `\\Z` instead."""

    model_config = ConfigDict(extra="forbid", frozen=True, regex_engine="python-re")


def unanchored(pattern: str) -> str:
    """A pattern's body without its `^` and `\\Z`, to build a larger pattern from it."""
    return pattern.removeprefix("^").removesuffix(r"\Z")
