"""How one setting's text becomes a value, or one line that says what is wrong with it.

Every parser takes the text and the option's name (`parallel` for `--parallel`) so that the
message names the flag, whichever surface the text was typed in. The registry (registry.py)
says which parser each setting uses; nothing else turns a setting's text into a value.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable, Sequence
from typing import TypeVar

from tui_lab.engine.errors import LabError
from tui_lab.engine.load.arrivals import ARRIVAL_PROCESSES, ArrivalProcess
from tui_lab.engine.load.workloads import WORKLOADS, Length, Think, WorkloadKind
from tui_lab.engine.plan.config import BALANCES, PLACEMENTS, Api, Balance, Placement, Threads
from tui_lab.engine.processes.ports import MAX_PORT

T = TypeVar("T")
Parser = Callable[[str, str], object]
# `--server-dim`: dimensions, each of alternatives, each a list of llama-server arguments.
ServerDims = tuple[tuple[tuple[str, ...], ...], ...]


def parse_int_list(text: str, name: str, *, allow_default: bool = False) -> tuple[int | None, ...]:
    """Parse `1,2,4` into (1, 2, 4); `default` (when allowed) becomes None, meaning "leave unset".

    Rejects what users mistype (`1,,x`, `0`, `-4`, empty) with a message naming the option, since
    a sweep that silently drops a value wastes an hour of the user's box.
    """
    raw = text.strip()
    if not raw:
        raise LabError(f"--{name}: empty list; give values like 1,2,4")
    values: list[int | None] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            raise LabError(f"--{name}: empty item in {text!r}; give values like 1,2,4")
        if allow_default and item.lower() == "default":
            values.append(None)
            continue
        try:
            value = int(item)
        except ValueError:
            hint = " or 'default'" if allow_default else ""
            raise LabError(f"--{name}: {item!r} is not a whole number{hint}") from None
        if value < 1:
            raise LabError(f"--{name}: {value} is below 1")
        values.append(value)
    if len(set(values)) != len(values):
        raise LabError(f"--{name}: {text!r} repeats a value")
    return tuple(values)


def parse_positive_ints(text: str, name: str) -> tuple[int, ...]:
    """Like `parse_int_list` for dimensions that have no "unset" value."""
    return tuple(v for v in parse_int_list(text, name) if v is not None)


def optional_ints(text: str, name: str) -> tuple[int | None, ...]:
    """A list of counts where `default` leaves llama-server's own value."""
    return parse_int_list(text, name, allow_default=True)


def parse_balances(text: str, name: str = "balance") -> tuple[Balance, ...]:
    """Parse `round_robin,least_conn,session` (hyphens accepted) into balancing methods."""
    out: list[Balance] = []
    for item in text.split(","):
        method = item.strip().replace("-", "_")
        if method not in BALANCES:
            raise LabError(f"--{name}: {item.strip()!r} is not one of {', '.join(BALANCES)}")
        out.append(method)
    return tuple(out)


def parse_threads(text: str, name: str = "threads") -> tuple[Threads, ...]:
    """`1,2,auto,default`: counts, the even split of the cores, or llama-server's default."""
    words: dict[str, Threads] = {"auto": "auto", "default": None}
    values: list[Threads] = []
    for item in text.split(","):
        word = item.strip().lower()
        if word in words:
            values.append(words[word])
            continue
        try:
            count = int(word)
        except ValueError:
            raise LabError(
                f"--{name}: {item.strip()!r} is not a whole number, auto or default"
            ) from None
        if count < 1:
            raise LabError(f"--{name}: {count} is below 1")
        values.append(count)
    if len(set(values)) != len(values):
        raise LabError(f"--{name}: {text!r} repeats a value")
    return tuple(values)


def parse_placements(text: str, name: str = "placement") -> tuple[Placement, ...]:
    """`shared,pinned` (also `spread`, `pinned+spread`) into placements, in the given order."""
    out: list[Placement] = []
    for item in text.split(","):
        word = item.strip().lower().replace(" ", "")
        word = "pinned+spread" if word == "spread+pinned" else word
        if word not in PLACEMENTS:
            raise LabError(f"--{name}: {item.strip()!r} is not one of {', '.join(PLACEMENTS)}")
        out.append(word)
    if len(set(out)) != len(out):
        raise LabError(f"--{name}: {text!r} repeats a value")
    return tuple(out)


def parse_gpus(text: str, name: str = "gpus") -> tuple[int, ...] | None:
    """`all` (None: whatever NVML sees) or NVML indices `0,2` as nvidia-smi numbers them."""
    if text.strip().lower() in ("", "all"):
        return None
    values: list[int] = []
    for item in text.split(","):
        try:
            value = int(item.strip())
        except ValueError:
            raise LabError(f"--{name}: {item.strip()!r} is not a GPU number (or 'all')") from None
        if value < 0:
            raise LabError(f"--{name}: {value} is not a GPU number (they count from 0)")
        values.append(value)
    if len(set(values)) != len(values):
        raise LabError(f"--{name}: {text!r} repeats a GPU")
    return tuple(values)


def require_at_least(value: int, minimum: int, name: str) -> int:
    if value < minimum:
        raise LabError(f"--{name}: {value} is below {minimum}")
    return value


def whole_number(text: str, name: str, minimum: int = 1) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise LabError(f"--{name}: {text.strip()!r} is not a whole number") from None
    return require_at_least(value, minimum, name)


def optional_whole_number(text: str, name: str, minimum: int = 1) -> int | None:
    """Blank or `default` is None: the lab or llama-server chooses."""
    return None if text.strip() in ("", "default") else whole_number(text, name, minimum)


def one_optional_count(text: str, name: str) -> tuple[int | None, ...]:
    """The one-value form of `optional_ints`: blank is also the default."""
    return (optional_whole_number(text, name),)


def slot_context(text: str, name: str) -> int | None:
    return optional_whole_number(text, name, minimum=16)


def number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LabError(f"--{name}: {text!r} is not a number") from None
    if value <= 0:
        raise LabError(f"--{name}: must be above 0")
    return value


def seconds_or_off(text: str, name: str) -> float | None:
    """A bound in seconds; 0 or "off" is None: that watch is turned off."""
    text = text.strip()
    if text.lower() == "off":
        return None
    try:
        if float(text) == 0:
            return None
    except ValueError:
        pass
    return number(text, name)


def optional_number(text: str, name: str) -> float | None:
    """Blank is None: no bound."""
    return None if not text.strip() else number(text.strip(), name)


def percentage(text: str, name: str) -> float:
    """A percentage below 100, as a fraction."""
    value = number(text.strip(), name)
    if value >= 100:
        raise LabError(f"--{name}: a percentage below 100")
    return value / 100


def only_one(values: Sequence[T], name: str) -> T:
    """The single value of a setting this run does not sweep."""
    if len(values) != 1:
        raise LabError(f"--{name}: this run takes one value, not a list")
    return values[0]


def one_value(text: str, name: str) -> int:
    return only_one(parse_positive_ints(text, name), name)


def check_port(port: int, name: str) -> int:
    if not 1 <= port <= MAX_PORT:
        raise LabError(f"--{name}: {port} is not a TCP port (1-{MAX_PORT})")
    return port


def port(text: str, name: str) -> int:
    return check_port(whole_number(text, name, minimum=0), name)


def check_host(host: str, name: str = "host") -> str:
    """Only literal addresses or localhost: a hostname typo must not bind something unexpected."""
    if host == "localhost":
        return host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise LabError(
            f"--{name}: {host!r} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"
        ) from None
    return host


def check_api_key(text: str, name: str = "api-key") -> str:
    if text and not text.replace("-", "").replace("_", "").isalnum():
        raise LabError(f"--{name}: use letters, digits, '-' and '_' only")
    return text


def header_name(text: str, name: str = "session-header") -> str:
    """An HTTP header name nginx can key on (`$http_...`): letters, digits and '-'."""
    if not text or not text.replace("-", "").isalnum() or not text.isascii():
        raise LabError(f"--{name}: {text!r} is not a header name (letters, digits and '-')")
    return text


def check_extra_args(args: tuple[str, ...]) -> tuple[str, ...]:
    """Extra arguments go to execve as a list; a newline could still corrupt logs and state."""
    for arg in args:
        if "\n" in arg or "\0" in arg:
            raise LabError(f"--server-args: {arg!r} contains a newline or NUL byte")
    return args


def server_args(text: str, name: str = "server-args") -> tuple[str, ...]:
    try:
        return check_extra_args(tuple(shlex.split(text)))
    except ValueError as exc:
        raise LabError(f"--{name}: {exc}") from None


def parse_server_dims(text: str, name: str = "server-dim") -> ServerDims:
    """`-fa on|-fa off; -ctk f16|-ctk q8_0` into dimensions of alternatives, each a list of
    arguments; an empty alternative means "no flag" (`|-fa on` compares the default with it)."""
    dims = []
    for dim in text.split(";"):
        if not dim.strip():
            continue
        alternatives = tuple(server_args(alt, name) for alt in dim.split("|"))
        if len(set(alternatives)) != len(alternatives):
            raise LabError(f"--{name}: {dim.strip()!r} repeats an alternative")
        dims.append(alternatives)
    return tuple(dims)


def model_entries(text: str, name: str = "model") -> tuple[str, ...]:
    """The models as typed, `|` between them; blank is the default model."""
    entries = tuple(entry.strip() for entry in text.split("|")) if text.strip() else ("",)
    if len(entries) > 1 and not all(entries):
        raise LabError(f"--{name}: empty entry in {text!r}; give paths like a.gguf|b.gguf")
    if len(set(entries)) != len(entries):
        raise LabError(f"--{name}: {text!r} repeats a model")
    return entries


def one_model(text: str, name: str) -> tuple[str, ...]:
    entries = model_entries(text, name)
    if len(entries) > 1:
        raise LabError(f"--{name}: this run takes one model, not a list")
    return entries


def api(text: str, name: str) -> Api:
    if text not in ("completion", "chat"):
        raise LabError(f"--{name}: {text!r} is not completion or chat")
    return text  # type: ignore[return-value]


def single(parse: Callable[[str, str], Sequence[T]]) -> Callable[[str, str], tuple[T, ...]]:
    """The one-value form of a list parser, for the runs that do not sweep the setting."""

    def one(text: str, name: str) -> tuple[T, ...]:
        return (only_one(parse(text, name), name),)

    return one


def single_balance(text: str) -> Balance:
    return only_one(parse_balances(text), "balance")


def workload(text: str, name: str) -> WorkloadKind:
    word = text.strip().lower().replace("_", "-")
    if word not in WORKLOADS:
        raise LabError(f"--{name}: {text.strip()!r} is not one of {', '.join(WORKLOADS)}")
    return word


def token_length(text: str, name: str) -> Length:
    """`256`, `uniform(64,512)` or `normal(mean,sd,min,max)`: tokens, each above 0."""
    raw = text.strip().replace(" ", "").lower()
    form, _, rest = raw.partition("(")
    if not rest:
        value = whole_number(raw, name)
        return Length(value, value)
    if not rest.endswith(")") or form not in ("uniform", "normal"):
        raise LabError(
            f"--{name}: {text.strip()!r}: give N, uniform(min,max) or normal(mean,sd,min,max)"
        )
    parts = rest[:-1].split(",")
    if len(parts) != (2 if form == "uniform" else 4):
        raise LabError(
            f"--{name}: {form}() takes {'min,max' if form == 'uniform' else 'mean,sd,min,max'}"
        )
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise LabError(f"--{name}: {text.strip()!r} has a value that is not a number") from None
    if any(n < 0 for n in numbers):
        raise LabError(f"--{name}: {text.strip()!r}: a length cannot be negative")
    low, high = (int(n) for n in numbers[-2:])
    if low < 1:
        raise LabError(f"--{name}: {text.strip()!r}: the minimum is below 1")
    if low > high:
        raise LabError(f"--{name}: {text.strip()!r}: min {low} is above max {high}")
    if form == "uniform":
        return Length(low, high)
    return Length(low, high, mean=numbers[0], sd=numbers[1])


def optional_token_length(text: str, name: str) -> Length | None:
    """Blank: n_predict."""
    return None if not text.strip() else token_length(text, name)


def count_or_zero(text: str, name: str) -> int:
    return whole_number(text, name, minimum=0)


def think_time(text: str, name: str) -> Think:
    """Seconds, fixed (`2`) or exponential with that mean (`exp(2)`)."""
    raw = text.strip().replace(" ", "").lower()
    exponential = raw.startswith("exp(") and raw.endswith(")")
    number_text = raw[4:-1] if exponential else raw
    try:
        seconds = float(number_text)
    except ValueError:
        raise LabError(f"--{name}: {text.strip()!r}: give seconds (2) or exp(mean)") from None
    if seconds < 0:
        raise LabError(f"--{name}: {text.strip()!r}: a time cannot be negative")
    return Think(seconds, exponential)


def rates(text: str, name: str) -> tuple[float | None, ...]:
    """Requests per second, a list like `0.5,1,2`; blank is closed loop (None: C clients)."""
    if not text.strip():
        return (None,)
    values: list[float | None] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise LabError(f"--{name}: empty item in {text!r}; give rates like 0.5,1,2")
        try:
            value = float(item)
        except ValueError:
            raise LabError(f"--{name}: {item!r} is not a number of requests per second") from None
        if not value > 0 or value == float("inf"):
            raise LabError(f"--{name}: {item} is not above 0 requests per second")
        values.append(value)
    if len(set(values)) != len(values):
        raise LabError(f"--{name}: {text!r} repeats a value")
    return tuple(values)


def arrival(text: str, name: str) -> ArrivalProcess:
    word = text.strip().lower()
    if word not in ARRIVAL_PROCESSES:
        raise LabError(f"--{name}: {text.strip()!r} is not one of {', '.join(ARRIVAL_PROCESSES)}")
    return word
