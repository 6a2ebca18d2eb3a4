"""Who is asking, and may they decide: principals, authenticators and the authorization rule.

An authenticator is any callable ``authenticate(request) -> Principal | None`` (or a coroutine
function): it gets the Starlette request and returns who made it, or ``None`` (or raises
:class:`~continuations_core.errors.AuthenticationFailed`) to refuse it with HTTP 401. Two ship
here: :class:`TrustedProxyAuth` for an authenticating reverse proxy (oauth2-proxy, IAP,
Pomerium...) and :class:`DevAuth` for ``--dev`` on 127.0.0.1 only.

Nothing here imports Starlette at run time; requests are used through their public attributes.
"""

from __future__ import annotations

import inspect
import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import AuthenticationFailed, ConfigurationError, NotAuthorized

if TYPE_CHECKING:
    from starlette.requests import Request as HTTPRequest

    from ._views import PendingItem

__all__ = [
    "MAX_PRINCIPAL_CHARS",
    "Authenticator",
    "Authorizer",
    "DevAuth",
    "Principal",
    "TrustedProxyAuth",
    "check_may_decide",
    "client_address",
]

#: Longest principal id, role or group name accepted from a header.
MAX_PRINCIPAL_CHARS = 256
#: Most roles or groups accepted from a header.
MAX_GROUPS = 100
# Printable, no control characters: a header value that breaks this is refused, not cleaned.
_NAME = re.compile(r"^[^\x00-\x1f\x7f]+$")


@dataclass(frozen=True)
class Principal:
    """The person (or service) behind a request.

    Attributes:
        id: The stable identity recorded as ``by`` on every decision (a login or an email).
        roles: Roles or groups, matched against a request's ``approvers``.
        name: A display name, if different from ``id``.
        method: How the identity was established, recorded in the audit trail
            (``trusted-proxy``, ``dev``, or your authenticator's name).
    """

    id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    name: str | None = None
    method: str = "app"

    @property
    def names(self) -> frozenset[str]:
        """The id and every role: what an ``approvers`` entry may name."""
        return frozenset({self.id, *self.roles})


Authenticator = Callable[["HTTPRequest"], "Principal | Awaitable[Principal | None] | None"]
Authorizer = Callable[[Principal, "PendingItem"], "bool | Awaitable[bool]"]


def _clean(value: str, what: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_PRINCIPAL_CHARS or not _NAME.match(value):
        raise AuthenticationFailed(
            f"The {what} sent by the proxy is empty, too long or has control characters; "
            "check the proxy's header configuration."
        )
    return value


@dataclass(frozen=True)
class TrustedProxyAuth:
    """Trust an identity header set by an authenticating reverse proxy, and only from it.

    The proxy (oauth2-proxy, Google IAP, Pomerium, an nginx ``auth_request``...) logs the person
    in and forwards the request with their identity in ``header``. A header is believed only on
    a connection from an address in ``proxies``; from anywhere else the request is refused, so a
    client that reaches the inbox directly cannot claim to be someone by sending the header.

    Attributes:
        header: The identity header, named explicitly (e.g. ``X-Forwarded-Email``).
        proxies: Addresses or networks of the proxies (``"127.0.0.1"``, ``"10.0.0.0/8"``).
        groups_header: An optional header with comma-separated groups or roles.
        name_header: An optional header with a display name.
    """

    header: str
    proxies: tuple[str, ...]
    groups_header: str | None = None
    name_header: str | None = None
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.header.strip():
            raise ConfigurationError("TrustedProxyAuth needs the identity header's name.")
        # A bare string would be iterated character by character; refuse it (untyped callers).
        if isinstance(self.proxies, str) or not self.proxies:  # type: ignore[redundant-expr,unreachable]
            raise ConfigurationError(
                "TrustedProxyAuth needs the proxies' addresses as a sequence, e.g. "
                "proxies=('127.0.0.1',); an empty allowlist would trust nobody."
            )
        try:
            networks = tuple(ipaddress.ip_network(p.strip(), strict=False) for p in self.proxies)
        except ValueError as exc:
            raise ConfigurationError(f"Bad proxy address in {self.proxies!r}: {exc}") from exc
        object.__setattr__(self, "_networks", networks)

    def trusts(self, address: str | None) -> bool:
        """Whether a connection from ``address`` comes from one of the trusted proxies."""
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def __call__(self, request: HTTPRequest) -> Principal:
        """Return the principal named by the proxy's header.

        Raises:
            AuthenticationFailed: If the connection is not from a trusted proxy or the header
                is missing or malformed.
        """
        peer = request.client.host if request.client else None
        if not self.trusts(peer):
            raise AuthenticationFailed(
                f"This inbox accepts requests only through its authenticating proxy; the "
                f"connection came from {peer or 'an unknown address'}."
            )
        raw = request.headers.get(self.header)
        if raw is None:
            raise AuthenticationFailed(
                f"The proxy did not send the identity header {self.header!r}; log in again."
            )
        roles: frozenset[str] = frozenset()
        if self.groups_header and (groups := request.headers.get(self.groups_header)):
            parts = [g for g in groups.split(",") if g.strip()]
            if len(parts) > MAX_GROUPS:
                raise AuthenticationFailed(
                    f"More than {MAX_GROUPS} groups in {self.groups_header}."
                )
            roles = frozenset(_clean(g, "group") for g in parts)
        name = None
        if self.name_header and (shown := request.headers.get(self.name_header)):
            name = _clean(shown, "display name")
        return Principal(id=_clean(raw, "identity"), roles=roles, name=name, method="trusted-proxy")


@dataclass(frozen=True)
class DevAuth:
    """Everyone who reaches the server is ``user``: for ``--dev`` on 127.0.0.1 only.

    The inbox refuses to bind to any other address with it, and every page says so.
    """

    user: str = "dev"
    roles: frozenset[str] = frozenset()

    def __call__(self, request: HTTPRequest) -> Principal:
        """Return the development principal."""
        return Principal(id=self.user, roles=self.roles, method="dev")


async def resolve(value: Any) -> Any:
    """Await ``value`` if a callback returned an awaitable."""
    return await value if inspect.isawaitable(value) else value


def client_address(request: HTTPRequest, authenticate: Authenticator) -> dict[str, str]:
    """The addresses to audit: the peer, and the forwarded client when a trusted proxy says so."""
    peer = request.client.host if request.client else "unknown"
    out = {"peer": peer}
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and isinstance(authenticate, TrustedProxyAuth) and authenticate.trusts(peer):
        # The last hop is the one the trusted proxy itself appended.
        out["forwarded_for"] = forwarded.split(",")[-1].strip()[:MAX_PRINCIPAL_CHARS]
    return out


async def check_may_decide(
    principal: Principal,
    item: PendingItem,
    *,
    authorize: Authorizer | None,
    separation_of_duties: bool,
) -> None:
    """Refuse a principal who may not decide ``item``.

    The rules, in order: the person who started the run may not decide its requests (unless
    separation of duties is turned off); when the request names ``approvers``, the principal's
    id or one of its roles must be among them; and the application's ``authorize`` callback,
    when given, must return true.

    Raises:
        NotAuthorized: With the reason, shown to the person.
    """
    for reason in await refusals(
        principal, item, authorize=authorize, separation_of_duties=separation_of_duties
    ):
        raise NotAuthorized(reason, continuation_id=item.continuation_id)


async def refusals(
    principal: Principal,
    item: PendingItem,
    *,
    authorize: Authorizer | None,
    separation_of_duties: bool,
) -> list[str]:
    """Every reason ``principal`` may not decide ``item`` (empty when they may)."""
    out: list[str] = []
    if separation_of_duties and item.started_by is not None and item.started_by == principal.id:
        out.append(
            f"{principal.id} started this run, so someone else must decide its requests "
            "(separation of duties)."
        )
    if item.approvers and not principal.names & set(item.approvers):
        out.append(f"Only {_names(item.approvers)} may decide {item.tool!r}.")
    if not out and authorize is not None and not await resolve(authorize(principal, item)):
        out.append(f"The application's policy does not let {principal.id} decide {item.tool!r}.")
    return out


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))
