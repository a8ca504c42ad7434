"""List parsing, validation and the llama-server command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tui_lab.engine.errors import LabError
from tui_lab.engine.plan.config import (
    Layout,
    computed_ctx_size,
    effective_threads_http,
    exposure_warning,
    server_argv,
)
from tui_lab.engine.settings.values import (
    check_host,
    parse_balances,
    parse_int_list,
    parse_positive_ints,
)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1,,x", "empty item"),
        ("0", "below 1"),
        ("-4", "below 1"),
        ("", "empty list"),
        ("  ", "empty list"),
        ("1,x", "'x' is not a whole number"),
        ("2,2", "repeats"),
        ("1.5", "not a whole number"),
    ],
)
def test_malformed_lists_are_rejected_with_the_option_named(text: str, fragment: str) -> None:
    with pytest.raises(LabError) as err:
        parse_positive_ints(text, "parallel")
    assert str(err.value).startswith("--parallel: ")
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_default_is_accepted_only_where_unset_means_something() -> None:
    assert parse_int_list("512, default ,2048", "batch-size", allow_default=True) == (
        512,
        None,
        2048,
    )
    with pytest.raises(LabError, match="not a whole number"):
        parse_int_list("default", "parallel")


@given(st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=20, unique=True))
def test_any_list_of_positive_ints_round_trips(values: list[int]) -> None:
    assert parse_positive_ints(",".join(map(str, values)), "x") == tuple(values)


@given(st.text(max_size=30))
def test_parser_never_raises_anything_but_lab_error(text: str) -> None:
    try:
        result = parse_int_list(text, "x", allow_default=True)
    except LabError:
        return
    assert all(v is None or v >= 1 for v in result)


def test_balances_accept_hyphens_and_reject_the_articles_directive() -> None:
    assert parse_balances("round-robin,least_conn") == ("round_robin", "least_conn")
    with pytest.raises(LabError, match="not one of"):
        parse_balances("ip_hash")


def test_host_must_be_an_address() -> None:
    assert check_host("0.0.0.0") == "0.0.0.0"
    assert check_host("::1") == "::1"
    with pytest.raises(LabError, match="not an IP address"):
        check_host("my box")


def test_context_fits_prompt_budget_plus_n_predict_in_every_slot() -> None:
    assert computed_ctx_size(parallel=4, n_predict=64) == 4 * 256
    assert computed_ctx_size(parallel=2, n_predict=1024) == 2 * 1280
    assert computed_ctx_size(parallel=3, n_predict=64, ctx_per_slot=1000) == 3000


def _layout(**kw: object) -> Layout:
    base: dict[str, object] = {"instances": 1, "parallel": 8, "ctx_size": 2048}
    base.update(kw)
    return Layout(**base)  # type: ignore[arg-type]


def test_server_argv_always_passes_parallel_and_enough_http_threads() -> None:
    argv = server_argv(Path("/bin/llama-server"), Path("/m/a b.gguf"), "127.0.0.1", 9000, _layout())
    assert argv[argv.index("--parallel") + 1] == "8"
    assert argv[argv.index("--ctx-size") + 1] == "2048"
    assert int(argv[argv.index("--threads-http") + 1]) >= 8
    assert argv[argv.index("--model") + 1] == "/m/a b.gguf"  # one argument, spaces and all
    assert "--metrics" in argv and "--slots" in argv
    assert effective_threads_http(_layout(threads_http=3)) == 3


def test_user_given_ctx_size_and_parallel_win_over_computed_ones() -> None:
    layout = _layout(extra_args=("--ctx-size", "9999", "-np=3"))
    argv = server_argv(Path("s"), Path("m"), "127.0.0.1", 9000, layout)
    assert argv.count("--ctx-size") == 1 and argv[argv.index("--ctx-size") + 1] == "9999"
    assert "--parallel" not in argv and "-np=3" in argv


def test_unset_batch_sizes_are_not_passed() -> None:
    argv = server_argv(Path("s"), Path("m"), "h", 1, _layout())
    assert "--batch-size" not in argv and "--ubatch-size" not in argv and "--threads" not in argv
    argv = server_argv(Path("s"), Path("m"), "h", 1, _layout(batch_size=512, ubatch_size=128))
    assert argv[argv.index("--batch-size") + 1] == "512"
    assert argv[argv.index("--ubatch-size") + 1] == "128"


@pytest.mark.parametrize(
    ("host", "api_key", "warning"),
    [
        ("127.0.0.1", None, None),
        ("localhost", None, None),
        ("::1", None, None),
        ("127.0.0.2", None, None),
        (
            "0.0.0.0",
            None,
            "listening on every interface without an API key: anyone who can reach this "
            "machine can use it",
        ),
        (
            "::",
            "k",
            "listening on every interface: reachable from the network, clients need the API key",
        ),
        (
            "192.168.1.20",
            None,
            "listening on 192.168.1.20 without an API key: anyone who can "
            "reach this machine can use it",
        ),
    ],
)
def test_binding_beyond_loopback_is_warned_about(
    host: str, api_key: str | None, warning: str | None
) -> None:
    assert exposure_warning(host, api_key) == warning
