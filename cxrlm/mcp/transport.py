"""How `cxrlm mcp` is reached: stdio (one client, the agent that started it) or streamable HTTP.

HTTP listens on loopback unless told otherwise, like `cxrlm serve`: a non-loopback host needs a token in the
environment (CXRLM_MCP_TOKEN), and once a token is set every request must carry `Authorization: Bearer <token>`,
on loopback too. The token never appears on the command line (where `ps` shows it) or in the audit.
"""

import hmac
import os

from cxrlm.errors import ConfigError

TOKEN_ENV = "CXRLM_MCP_TOKEN"
MIN_TOKEN_CHARS = 16
PATH = "/mcp"


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT, or PORT alone on 127.0.0.1)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--http {text}: give HOST:PORT, e.g. 127.0.0.1:8765")
    return host, int(port)


def http_token(host: str) -> str | None:
    """The bearer token from the environment; refuses a public host without one, and a token too short to guess."""
    from cxrlm.serve.security import is_loopback

    token = os.environ.get(TOKEN_ENV, "").strip() or None
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{TOKEN_ENV} has fewer than {MIN_TOKEN_CHARS} characters: use a long random token "
                          "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    if token is None and not is_loopback(host):
        raise ConfigError(f"refusing to listen on {host} without a token: set {TOKEN_ENV} in the environment "
                          "(clients send it as a bearer token), or listen on 127.0.0.1")
    return token


def http_app(server, host: str, token: str | None):
    """The SDK's streamable HTTP app at /mcp, behind the bearer-token check when a token is set."""
    from mcp.server.transport_security import TransportSecuritySettings

    from cxrlm.serve.security import is_loopback

    # On loopback the SDK checks Host/Origin against DNS rebinding by itself. Beyond loopback a token is required,
    # which a rebinding page cannot send, and the names clients use for the host are not known here.
    security = None if is_loopback(host) else TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = server.streamable_http_app(streamable_http_path=PATH, host=host, transport_security=security)
    return app if token is None else BearerToken(app, token)


class BearerToken:
    """ASGI middleware: an HTTP request without `Authorization: Bearer <token>` gets 401 and reaches nothing."""

    def __init__(self, app, token: str):
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            given = dict(scope.get("headers") or ()).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": f"missing or wrong bearer token ({TOKEN_ENV})\n"
                            .encode()})
                return
        await self.app(scope, receive, send)


def run_http(server, listen: str) -> None:
    import uvicorn

    host, port = parse_listen(listen)
    app = http_app(server, host, http_token(host))
    print(f"cxrlm mcp: streamable HTTP on http://{host}:{port}{PATH}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
