"""Property-based tests of the settings parser and the conninfo check (hypothesis).

Whatever a user writes (keyword argument, Django/Flask mapping or environment
variable), the result is either valid settings or a `SettingsError` that names the
setting at fault; never another exception, never a silently wrong value.
"""

from __future__ import annotations

import math
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serverless_pool import ServerlessPool
from serverless_pool.errors import SettingsError
from serverless_pool.settings import SCHEMA, PoolSettings

NAMES = [s.name for s in SCHEMA]
BY_NAME = {s.name: s for s in SCHEMA}
# Keep one setting's mistakes from tripping a cross-setting rule instead.
NEUTRAL = {"min_size": 0, "retry_backoff": 0.001, "retry_backoff_max": 1000.0, "max_size": 10}

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.binary(max_size=10),
)
ENV_TEXT = st.text(alphabet=string.printable, max_size=40)

fast = settings(max_examples=150, deadline=None, database=None)


def _load(values: dict[str, object], environ: dict[str, str]) -> PoolSettings | SettingsError:
    try:
        return PoolSettings.load(values, environ=environ)
    except SettingsError as err:
        return err


@fast
@given(name=st.sampled_from(NAMES), value=ANY_VALUE)
def test_any_value_is_accepted_or_refused_naming_the_setting(name: str, value: object) -> None:
    values = {**{k: v for k, v in NEUTRAL.items() if k != name}, name: value}
    loaded = _load(values, {})
    if isinstance(loaded, SettingsError):
        assert name in str(loaded)
        return
    parsed = getattr(loaded, name)
    assert parsed == BY_NAME[name].parse(value)
    if isinstance(parsed, float):
        assert math.isfinite(parsed)
        assert parsed >= 0


@fast
@given(name=st.sampled_from(NAMES), raw=ENV_TEXT)
def test_any_environment_text_is_accepted_or_refused_naming_the_variable(
    name: str, raw: str
) -> None:
    env_var = BY_NAME[name].env_var
    values = {k: v for k, v in NEUTRAL.items() if k != name}
    loaded = _load(values, {env_var: raw})
    if isinstance(loaded, SettingsError):
        assert env_var in str(loaded)
        return
    assert raw.strip()
    assert getattr(loaded, name) == BY_NAME[name].parse(raw)


@fast
@given(name=st.sampled_from(NAMES), blank=st.text(alphabet=" \t\n", max_size=4))
def test_an_empty_environment_variable_is_an_error_naming_it(name: str, blank: str) -> None:
    env_var = BY_NAME[name].env_var
    with pytest.raises(SettingsError, match=f"{env_var} is empty"):
        PoolSettings.load({}, environ={env_var: blank})


@fast
@given(name=st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=20))
def test_an_unknown_setting_is_refused_by_name(name: str) -> None:
    if name in BY_NAME:
        return
    with pytest.raises(SettingsError, match=re.escape(f"unknown keyword argument {name!r}")):
        PoolSettings.load({name: 1}, environ={})


@fast
@given(size=st.integers(max_value=0))
def test_sizes_below_one_are_refused(size: int) -> None:
    with pytest.raises(SettingsError, match="max_size: must be at least 1"):
        PoolSettings.load({"max_size": size}, environ={})


# "%" escapes and quotes are where URL and key/value parsing go wrong: weight them.
CONNINFO_TEXT = st.lists(
    st.sampled_from([*string.printable, "%80", "%C3", "%zz", "%", "\\", "é"]), max_size=20
).map("".join)


@settings(max_examples=400, deadline=None, database=None)
@given(before=CONNINFO_TEXT, after=CONNINFO_TEXT)
def test_a_refused_connection_string_never_shows_its_password(before: str, after: str) -> None:
    secret = "Pw-7f3b9c1e"
    for conninfo in (
        f"{before} password={secret} {after}",
        f"{before} password='{secret}'{after}",
        f"postgresql://app:{secret}@{before}/{after}",
    ):
        shown = _make_pool(conninfo)
        assert secret not in shown
        if "conninfo" in shown:
            assert shown.startswith("conninfo:")


def _make_pool(conninfo: str) -> str:
    """The error message, or the pool's repr if it was made."""
    try:
        pool = ServerlessPool(conninfo, environ={})
    except SettingsError as err:
        return str(err)
    pool.close()
    return repr(pool)
