import re

import pytest

from handlers.callbacks import MAX_CALLBACK_BYTES, CallbackData, InvalidCallback, pattern_for


@pytest.mark.parametrize(
    "data",
    [CallbackData("rs", "ok", 1), CallbackData("approval", "tick", 10**18 - 1)],
)
def test_round_trip(data: CallbackData) -> None:
    encoded = data.encode()
    assert len(encoded.encode()) <= MAX_CALLBACK_BYTES
    assert CallbackData.decode(encoded) == data
    assert re.match(pattern_for(data.namespace), encoded)


@pytest.mark.parametrize(
    "forged",
    [
        None,
        "",
        "rs:ok",
        "rs:ok:x",
        "rs:ok:1:2",
        "RS:ok:1",
        "rs:ok:-1",
        "rs:ok:1\n",
        "a" * 65,
        'rs:ok:{"id": 1}',
        "rs:ok:" + "9" * 20,
        "rs:ok:" + "9" * 19,  # beyond SQLite integers
    ],
)
def test_forged_data_is_refused(forged: str | None) -> None:
    with pytest.raises(InvalidCallback):
        CallbackData.decode(forged)


def test_cannot_encode_bad_parts() -> None:
    with pytest.raises(ValueError):
        CallbackData("bad ns", "ok", 1).encode()
    with pytest.raises(ValueError):
        CallbackData("rs", "ok", -5).encode()


def test_pattern_is_anchored_to_its_namespace() -> None:
    assert not re.match(pattern_for("rs"), "rsx:ok:1")
    assert not re.match(pattern_for("rs"), "xrs:ok:1")
