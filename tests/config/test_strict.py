"""Every ops-file pattern runs on Python's re, where `$` would let a final newline through."""

from collections.abc import Iterator
from typing import Any

import pytest

import config.opsfile  # noqa: F401  (defines every model of the ops file)
from config.opsfile import OpsFileError, parse_ops_text
from config.strict import StrictModel


def all_models(base: type[StrictModel] = StrictModel) -> Iterator[type[StrictModel]]:
    for model in base.__subclasses__():
        yield model
        yield from all_models(model)


def patterns_in(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        if isinstance(schema.get("pattern"), str):
            yield schema["pattern"]
        for value in schema.values():
            yield from patterns_in(value)
    elif isinstance(schema, list | tuple):
        for value in schema:
            yield from patterns_in(value)


def test_every_model_runs_its_patterns_on_python_re_anchored_at_the_very_end() -> None:
    models = list(all_models())
    assert len(models) > 40  # the whole ops file, not a part of it
    patterns = {p for model in models for p in patterns_in(model.__pydantic_core_schema__)}
    assert len(patterns) > 20
    for model in models:
        assert model.model_config.get("regex_engine") == "python-re", model
    assert [p for p in patterns if not (p.startswith("^") and p.endswith(r"\Z"))] == []


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('[services."web\\n"]\nunit = "web.service"', "not a valid name"),
        ('[services.web]\nunit = "web.service\\n"', "services.web.unit: not a valid systemd unit"),
        ('[hosts.h]\naddress = "10.0.0.1\\n"', "hosts.h.address: not a valid host name"),
        ('[hosts.h]\naddress = "h"\nuser = "deploy\\n"', "hosts.h.user: not a valid user name"),
        ('[hosts.h]\naddress = "h"\nprefix = ["sudo\\n"]', "hosts.h.prefix[0]: not a plain"),
    ],
)
def test_a_value_with_a_final_newline_is_refused(snippet: str, expected: str) -> None:
    with pytest.raises(OpsFileError) as caught:
        parse_ops_text(snippet, "test.toml")
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems
