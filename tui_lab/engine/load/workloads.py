"""What each client sends: the requests of a workload, built before the measured load starts.

Every request of a cell is decided here, from the settings, the seed and the server's own tokens
(a `Filler`), and none depends on an answer: a multi-turn conversation's earlier replies are
filler text of the turn's output length, not what the model said. So a cell sends the same
requests whatever its layout, balancer or timing, and cells compare. The client only sends them.

A script is a tuple of chains: one client sends a chain's requests in order (a conversation's
turns, with the think time before each); the clients take the next chain as they finish one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson

from tui_lab.engine.errors import LabError

WorkloadKind = Literal["fixed", "synthetic", "shared-prefix", "multi-turn", "file"]
WORKLOADS: tuple[WorkloadKind, ...] = ("fixed", "synthetic", "shared-prefix", "multi-turn", "file")
DEFAULT_SESSION_HEADER = "X-Session-Id"

Message = tuple[str, str]  # (role, content)
# Tokens a chat template or the BOS adds around a prompt or each message: context, not asked for.
TEMPLATE_TOKENS = 128
MESSAGE_TOKENS = 8
# Filler tokens beyond the longest text cut from it: the room for different offsets, so no two
# requests' texts begin alike by accident.
FILLER_SPREAD = 1024


@dataclass(frozen=True)
class Length:
    """A token count: fixed (`low` == `high`), uniform in [low, high], or normal clipped to it."""

    low: int
    high: int
    mean: float | None = None  # normal(mean, sd, low, high)
    sd: float = 0.0

    def draw(self, rng: random.Random) -> int:
        if self.mean is not None:
            return min(self.high, max(self.low, round(rng.gauss(self.mean, self.sd))))
        return self.low if self.low == self.high else rng.randint(self.low, self.high)


@dataclass(frozen=True)
class Think:
    """Seconds a user takes between an answer and the next turn: fixed, or exponential."""

    seconds: float = 0.0
    exponential: bool = False

    def draw(self, rng: random.Random) -> float:
        if self.exponential and self.seconds > 0:
            return rng.expovariate(1 / self.seconds)
        return self.seconds


@dataclass(frozen=True)
class FileRequest:
    """One line of a `--workload-file`: a prompt or chat messages, maybe an output length."""

    prompt: str | tuple[Message, ...]
    max_tokens: int | None = None


@dataclass(frozen=True)
class WorkloadSettings:
    kind: WorkloadKind = "fixed"
    prompt_tokens: Length = Length(256, 256)  # synthetic; the unique part elsewhere
    output_tokens: Length | None = None  # None: n_predict
    prefix_tokens: int = 512
    prefix_groups: int = 1
    sessions: int = 4
    turns: int = 4
    system_tokens: int = 512
    think: Think = Think()
    requests_file: tuple[FileRequest, ...] = ()
    seed: int = 0
    session_header: str = DEFAULT_SESSION_HEADER

    @property
    def chat(self) -> bool:
        """Whether requests are chat messages whatever `--api` says: a conversation is one."""
        return self.kind == "multi-turn" or any(
            not isinstance(r.prompt, str) for r in self.requests_file
        )

    def requests(self, default: int) -> int:
        """The requests of a cell: a conversation's turns, or `default` (the cell's)."""
        return self.sessions * self.turns if self.kind == "multi-turn" else default

    def max_output(self, n_predict: int) -> int:
        if self.kind == "file":
            return max([n_predict, *(r.max_tokens or 0 for r in self.requests_file)])
        return n_predict if self.output_tokens is None else self.output_tokens.high

    def prompt_budget(self, n_predict: int) -> int:
        """Context a slot needs beyond n_predict for the longest request, template included."""
        extra = self.max_output(n_predict) - n_predict
        if self.kind == "fixed":
            return TEMPLATE_TOKENS
        if self.kind == "synthetic":
            longest = self.prompt_tokens.high
        elif self.kind == "shared-prefix":
            longest = self.prefix_tokens + self.prompt_tokens.high
        elif self.kind == "multi-turn":
            out = self.max_output(n_predict)
            turns = self.turns * (self.prompt_tokens.high + MESSAGE_TOKENS)
            longest = self.system_tokens + turns + (self.turns - 1) * (out + MESSAGE_TOKENS)
        else:  # a file's texts are not tokenized before planning: a token is rarely under 2 chars
            longest = max(len(_text_of(r.prompt)) // 2 + 1 for r in self.requests_file)
        return longest + extra + TEMPLATE_TOKENS

    def filler_tokens(self) -> int:
        """Tokens of filler the script needs: its longest cut plus the spread (0: none)."""
        if self.kind in ("fixed", "file"):
            return 0
        longest = max(self.prompt_tokens.high, self.prefix_tokens, self.system_tokens)
        if self.kind == "multi-turn" and self.output_tokens is not None:
            longest = max(longest, self.output_tokens.high)
        return longest + FILLER_SPREAD


@dataclass(frozen=True)
class WorkRequest:
    """One request as the client sends it: a prompt (completion) or messages (chat)."""

    prompt: str | tuple[Message, ...]
    max_tokens: int
    session: str | None = None  # sent in the session header
    think_s: float = 0.0  # waited before sending, after the previous request of its chain
    headers: tuple[tuple[str, str], ...] = field(default=())


Script = tuple[tuple[WorkRequest, ...], ...]


class Filler:
    """Text of exact lengths in the server's tokens: runs of the pieces the server split a long
    word sequence into. Joined pieces tokenize back to themselves, so `text(start, n)` is n
    tokens of that server's model (one more or less where two pieces merge, rarely)."""

    def __init__(self, pieces: Sequence[str]) -> None:
        self.pieces = tuple(pieces)

    def text(self, start: int, count: int) -> str:
        if start + count > len(self.pieces):
            raise ValueError(f"filler of {len(self.pieces)} tokens, {start + count} asked")
        return "".join(self.pieces[start : start + count])

    def cut(self, rng: random.Random, count: int) -> str:
        """`count` tokens from a random place, so requests differ."""
        return self.text(rng.randint(0, len(self.pieces) - count), count)


def build(
    settings: WorkloadSettings, filler: Filler | None, requests: int, n_predict: int
) -> Script:
    """The cell's chains of requests; `requests` is the cell's count (multi-turn has its own)."""
    rng = random.Random(settings.seed)
    out = settings.output_tokens

    def output() -> int:
        return n_predict if out is None else out.draw(rng)

    if settings.kind == "fixed":
        raise ValueError("the fixed workload sends the client's own prompt, not a script")
    if settings.kind == "file":
        lines = settings.requests_file
        return tuple(
            (WorkRequest(r.prompt, r.max_tokens or n_predict),)
            for r in (lines[i % len(lines)] for i in range(requests))
        )
    if filler is None:
        raise ValueError(f"the {settings.kind} workload needs the server's tokens")
    if settings.kind == "multi-turn":  # a shorter cell (an adaptive probe): the first turns
        return _first(_conversations(settings, filler, rng, output), requests)
    prefixes = [filler.cut(rng, settings.prefix_tokens) for _ in range(settings.prefix_groups)]
    chains = []
    for i in range(requests):
        unique = filler.cut(rng, settings.prompt_tokens.draw(rng))
        prompt = (
            prefixes[i % len(prefixes)] + unique if settings.kind == "shared-prefix" else unique
        )
        chains.append((WorkRequest(prompt, output()),))
    return tuple(chains)


def _conversations(
    settings: WorkloadSettings, filler: Filler, rng: random.Random, output: Callable[[], int]
) -> Script:
    """S conversations under one system prompt (an assistant's users share it); each turn sends
    the history so far and a new user message, after a think time (none before the first)."""
    system: tuple[Message, ...] = ()
    if settings.system_tokens:
        system = (("system", filler.cut(rng, settings.system_tokens)),)
    chains = []
    for s in range(settings.sessions):
        session = f"session-{settings.seed}-{s}"
        history = system
        turns = []
        for t in range(settings.turns):
            history += (("user", filler.cut(rng, settings.prompt_tokens.draw(rng))),)
            max_tokens = output()
            think = settings.think.draw(rng) if t else 0.0
            headers = ((settings.session_header, session),)
            turns.append(WorkRequest(history, max_tokens, session, think, headers))
            history += (("assistant", filler.cut(rng, max_tokens)),)
        chains.append(tuple(turns))
    return tuple(chains)


def _first(script: Script, requests: int) -> Script:
    """The script's first `requests` requests, whole chains first, the last one cut short."""
    chains = []
    for chain in script:
        if requests <= 0:
            break
        chains.append(chain[:requests])
        requests -= len(chain)
    return tuple(chains)


def _text_of(prompt: str | tuple[Message, ...]) -> str:
    return prompt if isinstance(prompt, str) else "".join(c for _, c in prompt)


def read_requests(path: str | Path, name: str = "workload-file") -> tuple[FileRequest, ...]:
    """The JSONL file's requests; an unreadable file or a bad line is one line naming it."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LabError(f"--{name}: cannot read {path}: {reason}") from None
    requests = [
        _file_request(line, f"{path}:{number}")
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip()
    ]
    if not requests:
        raise LabError(f"--{name}: {path} has no requests")
    return tuple(requests)


def _file_request(line: str, where: str) -> FileRequest:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise LabError(f"{where}: not JSON") from None
    if isinstance(value, str):
        return FileRequest(_nonempty(value, where))
    if not isinstance(value, dict):
        raise LabError(f"{where}: neither a prompt nor messages")
    limit = value.get("max_tokens", value.get("n_predict"))
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise LabError(f"{where}: max_tokens must be a whole number above 0")
    if isinstance(value.get("prompt"), str):
        return FileRequest(_nonempty(value["prompt"], where), limit)
    messages = value.get("messages")
    if isinstance(messages, list) and messages and all(map(_is_message, messages)):
        return FileRequest(tuple((m["role"], m["content"]) for m in messages), limit)
    raise LabError(f"{where}: neither a prompt nor messages (role and content)")


def _nonempty(prompt: str, where: str) -> str:
    if not prompt.strip():
        raise LabError(f"{where}: an empty prompt")
    return prompt


def _is_message(item: object) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("role"), str)
        and isinstance(item.get("content"), str)
    )
