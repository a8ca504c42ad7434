"""The proxy configuration, checked by the real `nginx -t`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tui_lab.engine.errors import LabError
from tui_lab.engine.processes.nginx_config import (
    STANDING_FAILOVER,
    ProxySpec,
    render,
    worker_connections,
)
from tui_lab.engine.processes.proxy import check_config, write_config


def _spec(run_dir: Path, **kw: object) -> ProxySpec:
    base: dict[str, object] = {
        "listen_host": "127.0.0.1",
        "listen_port": 18000,
        "upstreams": (("127.0.0.1", 18100), ("127.0.0.1", 18101)),
        "run_dir": run_dir,
    }
    base.update(kw)
    return ProxySpec(**base)  # type: ignore[arg-type]


def test_round_robin_is_the_default_and_least_conn_an_option(tmp_path: Path) -> None:
    text = render(_spec(tmp_path))
    assert "round-robin" not in text and "least_conn" not in text
    assert "least_conn;" in render(_spec(tmp_path, balance="least_conn"))


def test_streaming_and_keepalive_settings_are_present(tmp_path: Path) -> None:
    text = render(_spec(tmp_path))
    for needle in (
        "proxy_buffering off;",
        "proxy_http_version 1.1;",
        "max_fails=3 fail_timeout=10s;",
        "proxy_read_timeout 3600s;",
        "server 127.0.0.1:18100",
        "server 127.0.0.1:18101",
        "listen 127.0.0.1:18000;",
    ):
        assert needle in text


def test_upstream_keepalive_is_opt_in_because_llama_server_closes_streams(tmp_path: Path) -> None:
    plain = render(_spec(tmp_path))
    assert "keepalive " not in plain and "non_idempotent" not in plain
    pooled = render(_spec(tmp_path, upstream_keepalive=True))
    assert "keepalive 8;" in pooled and "keepalive_timeout 4s;" in pooled
    assert 'proxy_set_header Connection "";' in pooled and "non_idempotent" in pooled


def test_worker_connections_stay_above_twice_the_concurrency() -> None:
    assert worker_connections(1) >= 1024
    assert worker_connections(4096) > 2 * 4096


def test_session_balance_hashes_the_header_consistently_and_spreads_requests_without_it(
    tmp_path: Path,
) -> None:
    text = render(_spec(tmp_path, balance="session", session_header="X-OpenWebUI-Chat-Id"))
    assert "hash $llamalab_session consistent;" in text
    assert "map $http_x_openwebui_chat_id $llamalab_session {" in text
    assert '"" $request_id;' in text  # no header: unique per request, so spread, not funnelled
    assert "default $http_x_openwebui_chat_id;" in text
    assert "$llamalab_session" not in render(_spec(tmp_path))


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "session"])
def test_real_nginx_accepts_the_config(tmp_path: Path, nginx_bin: Path, balance: str) -> None:
    spec = _spec(
        tmp_path, balance=balance, max_concurrency=2048, api_key="k-123", upstream_keepalive=True
    )
    write_config(spec)
    asyncio.run(check_config(nginx_bin, tmp_path))


def test_a_run_folder_with_spaces_and_quotes_still_passes_nginx_t(
    tmp_path: Path, nginx_bin: Path
) -> None:
    run_dir = tmp_path / 'my "lab" dir; x'
    run_dir.mkdir()
    write_config(_spec(run_dir))
    asyncio.run(check_config(nginx_bin, run_dir))


def test_a_newline_cannot_inject_configuration(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="nginx configuration"):
        render(_spec(tmp_path / "x\n}\nserver { listen 80; }"))


def test_a_broken_config_is_reported_by_nginx_t(tmp_path: Path, nginx_bin: Path) -> None:
    write_config(_spec(tmp_path))
    conf = tmp_path / "nginx.conf"
    conf.write_text(conf.read_text().replace("worker_processes 1;", "worker_processes one;"))
    with pytest.raises(LabError, match="nginx -t rejected"):
        asyncio.run(check_config(nginx_bin, tmp_path))


def test_the_standing_cluster_fails_over_fast_but_never_resends_a_sent_request(
    tmp_path: Path, nginx_bin: Path
) -> None:
    spec = _spec(tmp_path, failover=STANDING_FAILOVER, upstream_keepalive=True, down=frozenset({1}))
    text = render(spec)
    for needle in (
        "proxy_connect_timeout 2s;",
        "proxy_next_upstream error timeout;",  # no non_idempotent, even with keep-alive
        "proxy_next_upstream_tries 2;",
        "keepalive_timeout 0s;",  # a reload never closes an idle connection under a client
        "proxy_read_timeout 3600s;",  # a long non-streamed generation sends nothing for minutes
        "server 127.0.0.1:18100 max_fails=1 fail_timeout=5s;",
        "server 127.0.0.1:18101 max_fails=1 fail_timeout=5s down;",
    ):
        assert needle in text
    assert "non_idempotent" not in text
    write_config(spec)
    asyncio.run(check_config(nginx_bin, tmp_path))
