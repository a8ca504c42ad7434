"""The bad-input catalogue: what users mistype, across the CLI, the preset files and the forms.

Each entry must give one clear line naming what is wrong, start no process, and leave every
results file already written byte for byte as it was.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psutil
import pytest
from textual.widgets import Button, Input

from tests.helpers import Harness, type_into, widget_text
from tui_lab.app import LabApp
from tui_lab.cli import main as cli
from tui_lab.engine.settings.presets import load_presets
from tui_lab.engine.settings.run_settings import RunSettings

# (argv, a fragment of the one-line message). {tmp} is a scratch folder of the test.
CLI_CASES = [
    (["sweep", "full", "--instances", "1,,2"], "--instances: empty item in '1,,2'"),
    (["sweep", "full", "--instances", "0"], "--instances: 0 is below 1"),
    (["sweep", "full", "--instances=-1"], "--instances: -1 is below 1"),
    (["sweep", "full", "--parallel", "abc"], "--parallel: 'abc' is not a whole number"),
    (["sweep", "full", "--concurrency", "1.5"], "--concurrency: '1.5' is not a whole number"),
    (["sweep", "full", "--concurrency", "4,"], "--concurrency: empty item"),
    (["sweep", "full", "--n-predict", "0"], "--n-predict: 0 is below 1"),
    (["sweep", "full", "--base-port", "70000"], "--base-port: 70000 is not a TCP port"),
    (["sweep", "full", "--nginx-port", "0"], "--nginx-port: 0 is not a TCP port"),
    (["sweep", "full", "--host", "example.com"], "--host: 'example.com' is not an IP address"),
    (["sweep", "full", "--host", "999.1.1.1"], "--host: '999.1.1.1' is not an IP address"),
    (["sweep", "full", "--model", "{tmp}/missing.gguf"], "model not found: "),
    (["sweep", "full", "--model", "{tmp}/notes.gguf"], "is not a GGUF file"),
    (["sweep", "full", "--server-bin", "{tmp}/missing"], "llama-server not found"),
    (["sweep", "full", "--server-args", '"unbalanced'], "--server-args: No closing quotation"),
    (
        ["sweep", "full", "--balance", "fastest"],
        "'fastest' is not one of round_robin, least_conn, session",
    ),
    (["sweep", "full", "--batch-size", "0"], "--batch-size: 0 is below 1"),
    (["sweep", "full", "--ubatch-size", "x"], "--ubatch-size: 'x' is not a whole number"),
    (["sweep", "threads", "--threads", "0"], "--threads: 0 is below 1"),
    (["sweep", "full", "--threads", "many"], "--threads: 'many' is not a whole number, auto or"),
    (["sweep", "full", "--threads", "1,2"], "--threads: this run takes one value"),
    (["sweep", "full", "--placement", "tight"], "--placement: 'tight' is not one of shared"),
    (
        ["sweep", "full", "--instances", "1,64", "--placement", "pinned"],
        "--placement pinned: 64 instances need 64 physical cores",
    ),
    (["cluster", "start", "--instances", "64", "--placement", "pinned"], "need 64 physical"),
    (["sweep", "full", "--gpus", "first"], "--gpus: 'first' is not a GPU number"),
    (["sweep", "full", "--gpus", "0,0"], "--gpus: '0,0' repeats a GPU"),
    (["sweep", "full", "--server-dim", "-fa on|-fa on"], "--server-dim: '-fa on|-fa on' repeats"),
    (["sweep", "full", "--server-dim", '"-fa|on'], "--server-dim: No closing quotation"),
    (["sweep", "full", "--model", "{tmp}/notes.gguf|"], "--model: empty entry"),
    (
        ["test", "round-robin", "--model", "a.gguf", "--model", "b.gguf"],
        "--model: this run takes one model, not a list",
    ),
    (["sweep", "full", "--model", "{tmp}/notes.gguf|{tmp}/x.gguf"], "is not a GGUF file"),
    (["sweep", "threads", "--concurrency", "1,8"], "--concurrency: this run takes one value"),
    (["test", "round-robin", "--instances", "1,2"], "--instances: this run takes one value"),
    (["test", "single", "--requests", "0"], "--requests: 0 is below 1"),
    (["sweep", "full", "--request-timeout", "0"], "--request-timeout: must be above 0"),
    (["sweep", "full", "--liveness-timeout", "soon"], "--liveness-timeout: 'soon' is not a"),
    (["sweep", "full", "--ctx-per-slot", "10"], "--ctx-per-slot: 10 is below 16"),
    (["sweep", "full", "--results", "{tmp}/notes.gguf"], "is a file, not a folder"),
    (["sweep", "full", "--api-key", "a b"], "--api-key: use letters, digits"),
    (["sweep", "full", "--instancse", "2"], "unrecognized arguments: --instancse 2"),
    (["sweep", "full", "--instances", "100000"], "needs ports up to 108099, above 65535"),
    (
        ["sweep", "full", "--instances", "4", "--base-port", "20000", "--nginx-port", "20001"],
        "--nginx-port 20001 is one of the servers' ports 20000-20003",
    ),
    (["sweep", "bogus"], "invalid choice: 'bogus'"),
    (["sweep", "adaptive", "--plateau", "100"], "--plateau: a percentage below 100"),
    (["sweep", "adaptive", "--finalists", "0"], "--finalists: 0 is below 1"),
    (["sweep", "full", "--repeats", "0"], "--repeats: 0 is below 1"),
    (["test", "single", "--repeats", "three"], "--repeats: 'three' is not"),
    (["sweep", "adaptive", "--max-p99-ms", "-5"], "--max-p99-ms: must be above 0"),
    (["sweep", "adaptive", "--max-ttft-ms", "500"], "--max-ttft-ms: TTFT is measured only with"),
    (["sweep", "adaptive", "--parallel", "4,4"], "--parallel: '4,4' repeats a value"),
    (["cluster", "start", "--instances", "0"], "--instances: 0 is below 1"),
    (["cluster", "start", "--parallel", "2,4"], "--parallel: this run takes one value"),
    (["cluster", "start", "--session-header", "X Session"], "--session-header: 'X Session' is not"),
    (["cluster", "start", "--liveness-timeout", "-1"], "--liveness-timeout: must be above 0"),
    (["sweep", "full", "--session-header", "X-Sess$on"], "--session-header: 'X-Sess$on' is not"),
    (["load", "--url", "notaurl"], "--url: 'notaurl' is not an http:// or https:// URL"),
    (["load", "--url", "http://127.0.0.1:9", "--concurrency", "0"], "--concurrency: 0 is below"),
    (["sweep", "full", "--rate", "0"], "--rate: 0 is not above 0 requests per second"),
    (["sweep", "full", "--rate=-2"], "--rate: -2 is not above 0 requests per second"),
    (["sweep", "full", "--rate", "1,soon"], "--rate: 'soon' is not a number of requests"),
    (["test", "round-robin", "--rate", "1,2"], "--rate: this run takes one value"),
    (["sweep", "full", "--rate", "1", "--arrival", "bursty"], "--arrival: 'bursty' is not one"),
    (["sweep", "full", "--rate", "1", "--burst", "0"], "--burst: 0 is below 1"),
    (["load", "--url", "http://127.0.0.1:9", "--rate", "0"], "--rate: 0 is not above 0"),
    (["load", "--url", "http://127.0.0.1:9", "--workload", "chats"], "--workload: 'chats' is not"),
    (
        ["sweep", "full", "--workload", "synthetic", "--prompt-tokens", "uniform(-5,10)"],
        "--prompt-tokens: 'uniform(-5,10)': a length cannot be negative",
    ),
    (["sweep", "full", "--output-tokens=-5"], "--output-tokens: -5 is below 1"),
    (
        ["sweep", "full", "--workload", "synthetic", "--prompt-tokens", "uniform(9,3)"],
        "--prompt-tokens: 'uniform(9,3)': min 9 is above max 3",
    ),
    (
        ["sweep", "full", "--workload", "file", "--workload-file", "{tmp}/missing.jsonl"],
        "--workload-file: cannot read ",
    ),
    (
        ["sweep", "full", "--workload", "file", "--workload-file", "{tmp}/bad.jsonl"],
        "bad.jsonl:2: neither a prompt nor messages",
    ),
    (["sweep", "full", "--workload", "multi-turn", "--turns", "0"], "--turns: 0 is below 1"),
    (["analyze", "{tmp}/missing.csv"], "results file not found: "),
    (["analyze", "{tmp}/results/kept.csv", "--field", "nosuch"], "cannot rank by 'nosuch'"),
    (["analyze", "{tmp}/results/kept.csv", "--count", "-1"], "--count: -1 is below 1"),
    (["report", "{tmp}/missing.jsonl"], "results file not found: "),
    (["report", "{tmp}/notes.gguf"], "not a results file (expected .jsonl or .csv)"),
    (
        ["report", "{tmp}/results/kept.jsonl", "--out", "{tmp}/notes.gguf/r.html"],
        "cannot write the report to ",
    ),
    (["compare", "{tmp}/results/kept.jsonl", "{tmp}/gone.csv"], "results file not found: "),
]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLAMALAB_CONFIG", str(tmp_path / "config"))
    (tmp_path / "notes.gguf").write_text("not a model\n")
    (tmp_path / "bad.jsonl").write_text('"a prompt"\n{"other": 1}\n')
    results = tmp_path / "results"
    results.mkdir()
    (results / "kept.csv").write_text("cell,output_tok_per_s\n1,61.5\n")
    (results / "kept.jsonl").write_text('{"cell": 1, "output_tok_per_s": 61.5}\n')
    return tmp_path


@pytest.mark.parametrize(("argv", "message"), CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_bad_input_is_one_line_and_harmless(
    argv: list[str], message: str, scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _digests(scratch / "results")
    args = [a.replace("{tmp}", str(scratch)) for a in argv]
    args += ["--results", str(scratch / "results")] if argv[0] in ("test", "sweep") else []
    if "--results" in argv:  # the case is about --results itself: let its value stand
        args = args[:-2]
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse's own errors leave through SystemExit, still one line
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("llamalab"), err
    assert message in err, err
    assert "Traceback" not in err
    assert psutil.Process().children(recursive=True) == []
    assert _digests(scratch / "results") == before


PRESET_FILES = [
    ('[preset.fast]\ninstances = "2"\nparallel = \n', "line 3"),
    ('[preset.fast]\ninstancez = "2"\n', "line 2: unknown setting 'instancez'"),
    ("[preset.fast]\nstream = 3\n", "line 2: stream must be true or false"),
    ('instances = "2"\n', "expected only [preset.NAME] tables"),
    ("[preset]\nfast = 1\n", "expected a [preset.NAME] table"),
]


@pytest.mark.parametrize(("text", "message"), PRESET_FILES)
def test_a_corrupt_preset_file_names_path_and_line(text: str, message: str, scratch: Path) -> None:
    path = scratch / "config" / "presets.toml"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(Exception, match=r"presets\.toml") as caught:
        load_presets()
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert path.read_text() == text  # reported, never rewritten


async def test_the_app_still_starts_with_a_corrupt_last_toml(scratch: Path) -> None:
    last = scratch / "config" / "last.toml"
    last.parent.mkdir()
    last.write_text('kind = "sweep-full"\ninstances = [\n')
    app = LabApp(telemetry_interval_s=3600)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.3)
        shown = [n.message for n in app._notifications]
        assert any(str(last) in m and "line" in m and "using defaults" in m for m in shown), shown
        assert app.settings == RunSettings()
    assert last.read_text() == 'kind = "sweep-full"\ninstances = [\n'


# (field, typed text, the reason shown beside the field)
FORM_CASES = [
    ("instances", "1,,2", "--instances: empty item in '1,,2'"),
    ("parallel", "0", "--parallel: 0 is below 1"),
    ("concurrency", "x", "--concurrency: 'x' is not a whole number"),
    ("n_predict", "-4", "--n-predict: -4 is below 1"),
    ("base_port", "99999", "--base-port: 99999 is not a TCP port"),
    ("host", "my box", "--host: 'my box' is not an IP address"),
    ("request_timeout", "soon", "--request-timeout: 'soon' is not a number"),
    ("model", "/nonexistent/m.gguf", "model not found: /nonexistent/m.gguf"),
    ("server_args", "'-ngl", "--server-args: No closing quotation"),
    ("api_key", "k e y", "--api-key: use letters, digits"),
    ("rate", "0", "--rate: 0 is not above 0 requests per second"),
]


async def test_form_bad_input_is_explained_beside_its_field_and_blocks_run(
    scratch: Path,
) -> None:
    async with Harness().run_test(size=(120, 40)) as pilot:
        for field, text, message in FORM_CASES:
            good = pilot.app.screen.query_one(f"#{field}", Input).value
            await type_into(pilot, field, text)
            assert message in widget_text(pilot, f"#error-{field}"), field
            assert pilot.app.screen.query_one("#run", Button).disabled, field
            await type_into(pilot, field, good)
            assert not pilot.app.screen.query_one("#run", Button).disabled, field
