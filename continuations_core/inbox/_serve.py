"""``python -m continuations_core inbox``: serve the inbox with uvicorn, refusing unsafe setups.

The server does not start without an authenticator: either a trusted proxy's identity header
(with the proxies' addresses), or ``--authenticate module:callable``. ``--dev`` is the one
exception: it binds to 127.0.0.1 only, and every page says so.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import ipaddress
import logging
import os
from typing import Any

from .._signing import Keyring
from ..errors import ConfigurationError, MissingExtra
from ..stores import open_store
from ._auth import Authenticator, DevAuth, TrustedProxyAuth

__all__ = ["DEFAULT_PORT", "add_arguments", "serve"]

DEFAULT_PORT = 8700
LOOPBACK = "127.0.0.1"
KEYS_ENV = "CONTINUATIONS_SIGNING_KEYS"

log = logging.getLogger("continuations.inbox")


def add_arguments(cmd: argparse.ArgumentParser) -> None:
    """The ``inbox`` command's options."""
    cmd.add_argument("--host", default=LOOPBACK, help="address to bind (default: 127.0.0.1)")
    cmd.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: 8700)")
    auth = cmd.add_argument_group("authentication (one is required)")
    auth.add_argument(
        "--trusted-proxy-header",
        metavar="NAME",
        help="trust this identity header, set by an authenticating proxy (e.g. X-Forwarded-Email)",
    )
    auth.add_argument(
        "--trusted-proxies",
        metavar="ADDRS",
        help="comma-separated addresses or networks of that proxy (required with the header)",
    )
    auth.add_argument("--groups-header", metavar="NAME", help="header with the person's groups")
    auth.add_argument("--name-header", metavar="NAME", help="header with a display name")
    auth.add_argument(
        "--authenticate", metavar="MODULE:ATTR", help="your authenticate(request) callable"
    )
    auth.add_argument(
        "--dev",
        action="store_true",
        help="no login, on 127.0.0.1 only: everyone who reaches it acts as --dev-user",
    )
    auth.add_argument("--dev-user", help="who you are with --dev (default: your login name)")
    cmd.add_argument(
        "--authorize", metavar="MODULE:ATTR", help="your authorize(principal, item) callable"
    )
    cmd.add_argument(
        "--no-separation-of-duties",
        action="store_true",
        help="let the person who started a run decide its requests",
    )
    cmd.add_argument(
        "--secure-cookies", action="store_true", help="mark cookies Secure (serve behind HTTPS)"
    )


def _load(spec: str) -> Any:
    import importlib

    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigurationError(f"Expected 'package.module:attribute', not {spec!r}.")
    try:
        target: Any = importlib.import_module(module)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"Cannot load {spec!r}: {exc}") from exc
    if not callable(target):
        raise ConfigurationError(f"{spec!r} is not callable.")
    return target


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def authenticator(args: argparse.Namespace) -> Authenticator:
    """The authenticator the options ask for.

    Raises:
        ConfigurationError: If none, or more than one, is configured, or ``--dev`` is asked to
            bind anywhere but loopback.
    """
    chosen = [
        name
        for name, on in (
            ("--dev", args.dev),
            ("--trusted-proxy-header", args.trusted_proxy_header),
            ("--authenticate", args.authenticate),
        )
        if on
    ]
    if not chosen:
        raise ConfigurationError(
            "The inbox will not start without authentication. Put it behind an authenticating "
            "proxy (--trusted-proxy-header X-Forwarded-Email --trusted-proxies 127.0.0.1), pass "
            "--authenticate module:callable, or use --dev on this machine only."
        )
    if len(chosen) > 1:
        raise ConfigurationError(f"Choose one way to authenticate, not {' and '.join(chosen)}.")
    if args.dev:
        if args.host != LOOPBACK:
            raise ConfigurationError(
                f"--dev has no login, so it binds to {LOOPBACK} only (not {args.host!r})."
            )
        return DevAuth(user=args.dev_user or _login())
    if args.trusted_proxy_header:
        if not args.trusted_proxies:
            raise ConfigurationError(
                "--trusted-proxy-header needs --trusted-proxies: the addresses the header may "
                "come from. From anywhere else it is refused."
            )
        proxies = tuple(p.strip() for p in args.trusted_proxies.split(",") if p.strip())
        return TrustedProxyAuth(
            header=args.trusted_proxy_header,
            proxies=proxies,
            groups_header=args.groups_header,
            name_header=args.name_header,
        )
    found: Authenticator = _load(args.authenticate)
    return found


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "dev"


def serve(args: argparse.Namespace, url: str) -> None:
    """Run the inbox until interrupted."""
    authenticate = authenticator(args)
    try:
        import uvicorn
    except ImportError as exc:
        raise MissingExtra("uvicorn", "inbox") from exc
    from ..cli import bind_engine
    from ._app import create_inbox_app

    keys = Keyring.from_env(KEYS_ENV) if os.environ.get(KEYS_ENV) else None
    authorize = _load(args.authorize) if args.authorize else None
    if not _is_loopback(args.host) and not args.secure_cookies:
        log.warning("serving on %s without --secure-cookies; put HTTPS in front", args.host)

    async def main() -> None:
        async with bind_engine(open_store(url), url, args) as store:  # --engine's dispatcher
            app = create_inbox_app(
                store,
                authenticate=authenticate,
                authorize=authorize,
                keys=keys,
                separation_of_duties=not args.no_separation_of_duties,
                secure_cookies=True if args.secure_cookies else None,
                dev=args.dev,
            )
            # proxy_headers stays off: the trusted-proxy check needs the real peer address,
            # and the inbox reads X-Forwarded-For itself, only from a trusted proxy.
            config = uvicorn.Config(
                app, host=args.host, port=args.port, proxy_headers=False, log_level="info"
            )
            server = uvicorn.Server(config)
            mode = " (development mode: no login, 127.0.0.1 only)" if args.dev else ""
            print(f"inbox: http://{args.host}:{args.port}/inbox{mode}", flush=True)
            await server.serve()

    asyncio.run(main())
