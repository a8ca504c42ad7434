"""Workloads: the requests each client sends, built from settings, a seed and server tokens."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.fake_llama_server import FakeLlamaServer
from tui_lab.engine.errors import LabError
from tui_lab.engine.load.client import LoadSpec, run_load
from tui_lab.engine.load.workloads import (
    Filler,
    Length,
    Think,
    WorkloadSettings,
    build,
    read_requests,
)
from tui_lab.engine.settings import presets
from tui_lab.engine.settings import values as v
from tui_lab.engine.settings.run_settings import RunSettings, build_plan, load_settings

# One piece a token, each its own word, so a text's length in tokens is its count of words.
FILLER = Filler([f" w{i}" for i in range(5000)])


def tokens(text: str) -> int:
    return len(text.split())


def test_synthetic_lengths_are_exact_and_the_seed_reproduces_them() -> None:
    w = WorkloadSettings("synthetic", Length(10, 200), Length(3, 9), seed=7)
    script = build(w, FILLER, 50, n_predict=64)
    assert len(script) == 50 and all(len(chain) == 1 for chain in script)
    prompts = [chain[0].prompt for chain in script]
    assert all(isinstance(p, str) and 10 <= tokens(p) <= 200 for p in prompts)
    assert all(3 <= chain[0].max_tokens <= 9 for chain in script)
    assert len({tokens(p) for p in prompts}) > 10  # drawn, not fixed  # type: ignore[arg-type]
    assert build(w, FILLER, 50, 64) == script
    assert build(WorkloadSettings("synthetic", Length(10, 200), seed=8), FILLER, 50, 64) != script


def test_fixed_and_normal_lengths_and_output_defaults_to_n_predict() -> None:
    fixed = build(WorkloadSettings("synthetic", Length(33, 33)), FILLER, 5, n_predict=12)
    assert [(tokens(c[0].prompt), c[0].max_tokens) for c in fixed] == [(33, 12)] * 5  # type: ignore[arg-type]
    normal = Length(5, 500, mean=100, sd=20)
    draws = [normal.draw(random.Random(i)) for i in range(400)]
    assert min(draws) >= 5 and max(draws) <= 500 and 95 < sum(draws) / len(draws) < 105


def test_shared_prefix_groups_share_their_prefix_and_differ_after() -> None:
    w = WorkloadSettings("shared-prefix", Length(20, 20), prefix_tokens=100, prefix_groups=2)
    prompts = [str(c[0].prompt) for c in build(w, FILLER, 6, 8)]
    assert all(tokens(p) == 120 for p in prompts)
    heads = [p.split()[:100] for p in prompts]
    assert heads[0] == heads[2] == heads[4] and heads[1] == heads[3] and heads[0] != heads[1]
    assert len({tuple(p.split()[100:]) for p in prompts}) == 6


def test_multi_turn_sends_the_growing_history_with_the_session_header() -> None:
    w = WorkloadSettings(
        "multi-turn",
        Length(10, 10),
        Length(4, 4),
        sessions=3,
        turns=4,
        system_tokens=50,
        think=Think(2.0),
        session_header="X-Chat",
    )
    script = build(w, FILLER, w.requests(99), 8)
    assert len(script) == 3 and all(len(chain) == 4 for chain in script)
    for chain in script:
        (session,) = {r.session for r in chain}
        assert all(r.headers == (("X-Chat", session),) for r in chain)
        assert [r.think_s for r in chain] == [0.0, 2.0, 2.0, 2.0]
        for turn, request in enumerate(chain):
            messages = request.prompt
            assert isinstance(messages, tuple)
            assert [role for role, _ in messages] == ["system"] + ["user", "assistant"] * turn + [
                "user"
            ]
            assert tokens(messages[-1][1]) == 10 and tokens(messages[0][1]) == 50
            assert all(tokens(c) == 4 for role, c in messages if role == "assistant")
            if turn:  # the previous turn's messages, then the reply and the new message
                assert messages[: len(chain[turn - 1].prompt)] == chain[turn - 1].prompt
    assert len({chain[0].session for chain in script}) == 3
    assert script[0][0].prompt[0] == script[1][0].prompt[0]  # one system prompt for all


def test_exponential_think_times_are_seeded() -> None:
    w = WorkloadSettings("multi-turn", Length(5, 5), sessions=2, turns=50, think=Think(1.0, True))
    thinks = [r.think_s for chain in build(w, FILLER, 100, 4) for r in chain[1:]]
    assert len(set(thinks)) == len(thinks) and 0.6 < sum(thinks) / len(thinks) < 1.5
    assert thinks == [r.think_s for chain in build(w, FILLER, 100, 4) for r in chain[1:]]


def test_a_shorter_cell_takes_the_first_turns() -> None:
    w = WorkloadSettings("multi-turn", Length(5, 5), sessions=3, turns=4, system_tokens=0)
    assert [len(chain) for chain in build(w, FILLER, 6, 4)] == [4, 2]


def test_file_requests_prompts_and_messages_with_lengths(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text(
        '"hello there"\n\n{"prompt": "a", "n_predict": 5}\n'
        '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7}\n'
    )
    requests = read_requests(path)
    w = WorkloadSettings("file", requests_file=requests)
    assert w.chat
    script = build(w, None, 4, n_predict=9)
    assert [(c[0].prompt, c[0].max_tokens) for c in script] == [
        ("hello there", 9),
        ("a", 5),
        ((("user", "hi"),), 7),
        ("hello there", 9),
    ]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "neither a prompt nor messages"),
        ('{"messages": [{"role": "user"}]}', "neither a prompt nor messages"),
        ('{"other": 1}', "neither a prompt nor messages"),
        ('{"prompt": "x", "max_tokens": 0}', "max_tokens"),
        ('""', "empty prompt"),
    ],
)
def test_a_bad_file_line_names_the_path_and_line(tmp_path: Path, line: str, says: str) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text('"fine"\n' + line + "\n")
    with pytest.raises(LabError, match=f"^{path}:2: .*{says}"):
        read_requests(path)


def test_an_unreadable_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"^--workload-file: cannot read .*missing\.jsonl"):
        read_requests(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("-5", "below 1"),
        ("uniform(9,3)", "min 9 is above max 3"),
        ("uniform(-1,3)", "negative"),
        ("normal(10,2,1)", "mean,sd,min,max"),
        ("gamma(1,2)", "give N, uniform"),
        ("uniform(a,3)", "not a number"),
    ],
)
def test_bad_lengths_name_the_setting(text: str, says: str) -> None:
    with pytest.raises(LabError, match=f"^--prompt-tokens: .*{says}"):
        v.token_length(text, "prompt-tokens")


def test_lengths_and_think_times_parse() -> None:
    assert v.token_length("128", "x") == Length(128, 128)
    assert v.token_length("uniform(1, 9)", "x") == Length(1, 9)
    assert v.token_length("normal(50,5,10,90)", "x") == Length(10, 90, 50.0, 5.0)
    assert v.think_time("exp(2)", "x") == Think(2.0, True)
    assert v.think_time("0.5", "x") == Think(0.5)
    with pytest.raises(LabError, match=r"^--think-time: .*negative"):
        v.think_time("-1", "think-time")


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"workload": "multi-turn", "turns": "0"}, "--turns: 0 is below 1"),
        ({"workload": "synthetic", "prompt_tokens": "uniform(5,1)"}, "--prompt-tokens: "),
        ({"workload": "file"}, "--workload-file: "),
        ({"workload": "file", "workload_file": "/no/such.jsonl"}, "--workload-file: cannot read"),
        ({"workload": "chatty"}, "--workload: 'chatty' is not one of"),
        ({"session_header": "X Bad"}, "--session-header: "),
    ],
)
def test_bad_workload_settings_stop_the_plan(changes: dict[str, str], says: str) -> None:
    settings = RunSettings(kind="test-concurrent", parallel="2", concurrency="2", **changes)
    with pytest.raises(LabError, match="^" + says.replace("(", r"\(")):
        build_plan(settings)


def test_the_plan_carries_the_workload_and_sizes_slots_for_its_history() -> None:
    settings = RunSettings(
        kind="test-concurrent",
        parallel="2",
        concurrency="2",
        n_predict="16",
        workload="multi-turn",
        sessions="3",
        turns="5",
        system_tokens="1000",
        prompt_tokens="100",
    )
    (cell,) = build_plan(settings).cells
    assert cell.requests == 15 and cell.params()["workload"] == "multi-turn"
    assert cell.layout.ctx_per_slot >= 1000 + 5 * 100 + 4 * 16
    assert load_settings(settings).sent_api == "chat"
    fixed = build_plan(RunSettings(kind="test-concurrent", parallel="2", concurrency="2"))
    assert fixed.cells[0].params()["workload"] == "fixed" and fixed.cells[0].requests == 4


async def test_the_client_sends_each_chain_in_order_with_its_header() -> None:
    w = WorkloadSettings(
        "multi-turn",
        Length(3, 3),
        Length(2, 2),
        sessions=2,
        turns=3,
        system_tokens=5,
        think=Think(0.01),
    )
    script = build(w, FILLER, 6, 2)
    async with FakeLlamaServer() as server:
        result = await run_load(
            LoadSpec(
                server.base_url, concurrency=2, requests=6, n_predict=2, api="chat", script=script
            )
        )
    assert [r.index for r in result.records] == list(range(6)) and all(r.ok for r in result.records)
    sent = list(zip(server.sessions, (len(b["messages"]) for b in server.bodies), strict=True))
    for session in {s for s, _ in sent}:
        assert [n for s, n in sent if s == session] == [2, 4, 6]  # system + turns so far
    assert all(b["max_tokens"] == 2 for b in server.bodies)
    assert len({s for s, _ in sent}) == 2


def test_recorded_settings_rebuild_the_same_workload_as_resume_does(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text('"one"\n"two"\n')
    for changes in (
        {"workload": "multi-turn", "sessions": "3", "think_time": "exp(1)", "seed": "4"},
        {"workload": "file", "workload_file": str(path)},
    ):
        settings = RunSettings(kind="sweep-full", **changes)
        recorded = RunSettings.from_mapping(settings.to_mapping(), "meta")
        assert build_plan(recorded) == build_plan(settings)
        assert load_settings(recorded).workload == load_settings(settings).workload


def test_a_preset_keeps_the_workload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMALAB_CONFIG", str(tmp_path))
    chosen = RunSettings(workload="synthetic", prompt_tokens="normal(500,50,100,900)", seed="9")
    presets.save_preset("long prompts", chosen)
    assert presets.load_presets()["long prompts"] == chosen
