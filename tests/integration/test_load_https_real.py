"""`llamalab load --url https://...`: the load client over TLS, against a real nginx with a
certificate this test makes, trusted through SSL_CERT_FILE the way a user trusts a private CA."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tui_lab.engine.load.client import LoadSpec, run_load
from tui_lab.engine.machine.discovery import find_nginx
from tui_lab.engine.processes.ports import free_port_block, port_is_free

pytestmark = pytest.mark.integration

REPLY = json.dumps(
    {"content": " hi" * 4, "stop": True, "tokens_predicted": 4, "tokens_evaluated": 2}
)


@pytest.fixture
def tls_nginx(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """nginx on 127.0.0.1 with a self-signed certificate for that address; (URL, cert)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [*request, "-keyout", str(key), "-out", str(cert), *subject],
        check=True,
        capture_output=True,
    )
    port = free_port_block(1)
    temp = " ".join(f"{k}_temp_path {tmp_path / k};" for k in ("client_body", "proxy"))
    (tmp_path / "nginx.conf").write_text(
        f"""pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log warn;
events {{ worker_connections 256; }}
http {{ access_log off; {temp}
    server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
        location = /completion {{ default_type application/json; return 200 '{REPLY}'; }} }} }}
"""
    )
    conf = [
        "-e",
        str(tmp_path / "error.log"),
        "-p",
        str(tmp_path),
        "-c",
        str(tmp_path / "nginx.conf"),
    ]
    proc = subprocess.Popen([str(find_nginx()), *conf, "-g", "daemon off;"])
    try:
        deadline = time.monotonic() + 10
        while port_is_free("127.0.0.1", port):
            assert time.monotonic() < deadline and proc.poll() is None, "nginx did not listen"
            time.sleep(0.1)
        yield f"https://127.0.0.1:{port}", cert
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_load_over_tls_verifies_the_certificate(
    tls_nginx: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_nginx
    spec = LoadSpec(url=url, concurrency=4, requests=40, n_predict=4)
    untrusted = await run_load(spec)
    assert not any(r.ok for r in untrusted.records)  # an unknown certificate is refused
    assert {r.error for r in untrusted.records} == {"tls_certificate"}
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    trusted = await run_load(spec)
    assert all(r.ok and r.output_tokens == 4 for r in trusted.records)
