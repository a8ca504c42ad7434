"""The nginx configuration of the round-robin proxy, rendered from typed values.

Round robin is nginx's default (the original article's `round-robin;` is not a directive);
`least_conn` is the alternative, and `session` keeps a conversation on one instance, where
llama-server's per-slot prompt cache holds its history: nginx's `hash` on the session header,
`consistent` (ketama), so adding or losing an instance moves only its share of sessions. A
request without the header is keyed on nginx's `$request_id`, unique per request: traffic that
sends no header is spread over the instances, never funnelled to one.

Buffering is off so streamed tokens pass at once, upstream connections are kept alive, and
every path lives in the lab's own run folder so nothing in /etc/nginx or /var/lib/nginx is
touched.

Which requests nginx sends on to another instance (`Failover`): `proxy_next_upstream error
timeout` only, so a connection that fails or times out *before the request was sent* (a dead
instance refuses the connect) is retried on the next instance, for every method. Once a request
has been sent, nginx never resends a POST (non-idempotent: a chat completion would run twice),
so a POST that was on an instance that dies or hangs fails with 502 to its client; only a GET
or HEAD (`/health`, `/v1/models`) is resent after an error. The standing cluster does not add
`non_idempotent`; a sweep with upstream keep-alive does, for a pooled connection that died
before its request could reach the server. A frozen instance still accepts connections (the
kernel completes them into its listen backlog), so no connect timeout catches it: the standing
cluster's supervisor does (cluster_health.py), and `proxy_read_timeout` stays long, because
between two bytes of a reply it must cover a whole non-streamed generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tui_lab.engine.errors import LabError
from tui_lab.engine.load.workloads import DEFAULT_SESSION_HEADER
from tui_lab.engine.plan.config import Balance

MIN_WORKER_CONNECTIONS = 1024
# With upstream keep-alive: idle connections kept per llama-server. Each pins one of its HTTP
# threads, so the pool stays small (config.HTTP_THREAD_HEADROOM budgets for it), and idle ones
# are dropped after 4 s, before llama-server's 5 s keep-alive timeout closes one nginx reuses.
IDLE_PER_UPSTREAM = 4


@dataclass(frozen=True)
class Failover:
    """How nginx gives up on an instance and where it sends the request instead (see above)."""

    connect_timeout_s: int = 60  # nginx's own default
    max_fails: int = 3  # errors within fail_timeout that take an instance out for fail_timeout
    fail_timeout_s: int = 10
    tries: int = 2  # instances one request may be offered to, the first included
    resend_pooled: bool = True  # with upstream keep-alive: resend what a dead pooled one lost
    # How long a client's idle connection is kept (nginx's default 75 s). A reload closes the
    # idle ones, and a client that reuses one at that instant gets an error for its request.
    client_keepalive_s: int = 75


# A sweep's proxy measures: nginx's defaults where a loaded box could be slow to accept.
SWEEP_FAILOVER = Failover()
# The standing cluster's proxy serves: a loopback connect that takes 2 s is a dead instance, one
# error takes it out for 5 s (the supervisor takes it out for good meanwhile), nothing already
# sent is ever resent, and no client connection is kept idle, so the supervisor's reloads never
# close one under a client (a connect per request costs milliseconds beside a generation).
STANDING_FAILOVER = Failover(
    connect_timeout_s=2, max_fails=1, fail_timeout_s=5, resend_pooled=False, client_keepalive_s=0
)


@dataclass(frozen=True)
class ProxySpec:
    listen_host: str
    listen_port: int
    upstreams: tuple[tuple[str, int], ...]  # (host, port) of each llama-server
    run_dir: Path
    balance: Balance = "round_robin"
    max_concurrency: int = 1
    failover: Failover = SWEEP_FAILOVER
    read_timeout_s: int = 3600
    api_key: str | None = None
    # Off by default: llama-server closes the connection after every streamed reply while
    # advertising keep-alive, so pooled connections die under nginx; at 64 streaming clients
    # that failed half the requests and marked every server down (max_fails). Worth turning on
    # only for non-streaming loads, where it saves a loopback connect per request.
    upstream_keepalive: bool = False
    session_header: str = DEFAULT_SESSION_HEADER  # what `session` balancing keys on
    # Indexes into `upstreams` out of the rotation (marked `down`, which keeps `hash
    # consistent` sending every other session where it went before).
    down: frozenset[int] = frozenset()


def header_variable(header: str) -> str:
    """nginx's variable for a request header: `X-Session-Id` is `$http_x_session_id`. The name
    was checked when the settings were parsed (settings/values.py: letters, digits and '-')."""
    return "$http_" + header.lower().replace("-", "_")


def worker_connections(max_concurrency: int) -> int:
    """A proxied request holds a client and an upstream connection: at least 2 x C, plus room."""
    return max(MIN_WORKER_CONNECTIONS, 2 * max_concurrency + 256)


def quote(value: str) -> str:
    """An nginx string literal.

    A newline could end a directive and `$` starts a variable in some directives, so both are
    refused outright rather than escaped in ways that differ between directives.
    """
    if any(c in value for c in "\n\r\0$"):
        raise LabError(f"cannot put {value!r} into the nginx configuration (newline or '$')")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render(spec: ProxySpec) -> str:
    if not spec.upstreams:
        raise LabError("nginx needs at least one llama-server upstream")
    run = spec.run_dir
    wc = worker_connections(spec.max_concurrency)
    failover = spec.failover
    servers = "\n".join(
        f"        server {_addr(h, p)} max_fails={failover.max_fails} "
        f"fail_timeout={failover.fail_timeout_s}s{' down' if i in spec.down else ''};"
        for i, (h, p) in enumerate(spec.upstreams)
    )
    retry = "error timeout"
    method = session_map = ""
    if spec.balance == "least_conn":
        method = "        least_conn;\n"
    elif spec.balance == "session":
        method = "        hash $llamalab_session consistent;\n"
        session_map = (
            f"    map {header_variable(spec.session_header)} $llamalab_session {{\n"
            '        "" $request_id;\n'
            f"        default {header_variable(spec.session_header)};\n"
            "    }\n"
        )
    temp = "\n".join(
        f"    {kind}_temp_path {quote(str(run / 'nginx-temp' / kind))};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    auth = ""
    if spec.api_key:
        auth = (
            f"        if ($http_authorization != {quote('Bearer ' + spec.api_key)}) "
            "{ return 401; }\n"
        )
    pool = reuse = ""
    if spec.upstream_keepalive:
        idle = IDLE_PER_UPSTREAM * len(spec.upstreams)
        pool = f"        keepalive {idle};\n        keepalive_timeout 4s;\n"
        reuse = '            proxy_set_header Connection "";\n'
        if failover.resend_pooled:
            # A pooled connection can die in the instant before nginx reuses it; such a
            # request never reached the server, so it is passed to the next one.
            retry += " non_idempotent"
    return f"""# Written by llamalab; regenerated on every start.
worker_processes 1;
worker_rlimit_nofile {2 * wc + 64};
pid {quote(str(run / "nginx.pid"))};
error_log {quote(str(run / "nginx-error.log"))} warn;

events {{
    worker_connections {wc};
}}

http {{
    log_format upstream '$remote_addr [$time_local] "$request" $status '
                        'upstream=$upstream_addr ustatus=$upstream_status '
                        'rt=$request_time';
    access_log {quote(str(run / "nginx-access.log"))} upstream;
{temp}
    client_max_body_size 64m;
    client_body_buffer_size 1m;
{session_map}
    upstream llama {{
{method}{servers}
{pool}    }}

    server {{
        listen {_addr(spec.listen_host, spec.listen_port)};
        keepalive_timeout {failover.client_keepalive_s}s;
        location / {{
{auth}            proxy_pass http://llama;
            proxy_http_version 1.1;
{reuse}            proxy_connect_timeout {failover.connect_timeout_s}s;
            proxy_next_upstream {retry};
            proxy_next_upstream_tries {failover.tries};
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_cache off;
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;
            proxy_read_timeout {spec.read_timeout_s}s;
            proxy_send_timeout {spec.read_timeout_s}s;
        }}
    }}
}}
"""
