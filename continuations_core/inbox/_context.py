"""What every inbox route needs: the store, the auth hooks, CSRF and the shared queries."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._signing import Keyring
from ..errors import AuthenticationFailed, ContinuationError
from ..stores import Store, StoredContinuation
from ._auth import Authenticator, Authorizer, Principal, client_address, refusals, resolve
from ._security import CSRF_FIELD, CSRF_HEADER, Csrf
from ._service import InboxError, http_error
from ._views import MAX_PENDING, ContinuationView, PendingItem, continuation_view, matches
from ._views import pending_items as items_of

if TYPE_CHECKING:
    from starlette.requests import Request as HTTPRequest

__all__ = ["Filters", "InboxContext"]


@dataclass(frozen=True)
class Filters:
    """The list filters: tool, agent (anywhere in the chain), run and assignee.

    ``assignee="me"`` keeps what the requesting principal may decide; any other value keeps
    requests whose ``approvers`` name it.
    """

    tool: str | None = None
    agent: str | None = None
    run: str | None = None
    assignee: str | None = None

    def keep(self, item: PendingItem) -> bool:
        """Whether ``item`` (annotated for the principal) passes these filters."""
        assignee = None if self.assignee == "me" else self.assignee
        if not matches(item, tool=self.tool, agent=self.agent, run=self.run, assignee=assignee):
            return False
        return self.assignee != "me" or bool(item.may_decide)

    def query(self) -> dict[str, str]:
        """The filters that are set, as query parameters."""
        return {k: v for k, v in vars(self).items() if v}


@dataclass
class InboxContext:
    """The configuration of one inbox app, shared by its API and its pages."""

    store: Store
    authenticate: Authenticator
    authorize: Authorizer | None
    keys: Keyring | None
    separation_of_duties: bool
    csrf: Csrf
    dev: bool

    async def principal(self, request: HTTPRequest) -> Principal:
        """Authenticate ``request`` (cached on it).

        Raises:
            InboxError: 401 when the authenticator refuses or returns nothing.
        """
        cached = getattr(request.state, "principal", None)
        if isinstance(cached, Principal):
            return cached
        try:
            found = await resolve(self.authenticate(request))
        except AuthenticationFailed as exc:
            raise InboxError(401, "unauthenticated", str(exc)) from exc
        if not isinstance(found, Principal):
            raise InboxError(401, "unauthenticated", "You are not logged in.")
        request.state.principal = found
        return found

    def csrf_token(self, request: HTTPRequest, principal: Principal) -> str:
        """The CSRF token for this request's nonce and principal."""
        return self.csrf.token(request.state.csrf_nonce, principal.id)

    def check_csrf(
        self, request: HTTPRequest, principal: Principal, form_token: str | None
    ) -> None:
        """Refuse a state-changing request without a valid CSRF token (403)."""
        sent = request.headers.get(CSRF_HEADER) or form_token
        why = self.csrf.check(request, principal.id, sent)
        if why is not None:
            raise InboxError(403, "csrf", why, field=CSRF_FIELD, header=CSRF_HEADER)

    def client(self, request: HTTPRequest) -> dict[str, str]:
        """The client addresses to audit."""
        return client_address(request, self.authenticate)

    async def annotate(self, principal: Principal, item: PendingItem) -> PendingItem:
        """``item`` with whether ``principal`` may decide it, and why not."""
        why = await refusals(
            principal,
            item,
            authorize=self.authorize,
            separation_of_duties=self.separation_of_duties,
        )
        return item.model_copy(update={"may_decide": not why, "refused": tuple(why)})

    async def get(self, continuation_id: str) -> StoredContinuation:
        """The stored record (404 when unknown)."""
        try:
            return await self.store.get(continuation_id)
        except ContinuationError as exc:
            raise http_error(exc) from exc

    async def pending(
        self, principal: Principal, filters: Filters, *, limit: int = MAX_PENDING
    ) -> builtins.list[PendingItem]:
        """Undecided requests of waiting continuations, newest first, filtered."""
        try:
            records = await self.store.list(status="waiting", limit=MAX_PENDING)
        except ContinuationError as exc:
            raise http_error(exc) from exc
        out: builtins.list[PendingItem] = []
        for stored in records:
            for item in items_of(stored):
                if item.decision is not None:
                    continue
                item = await self.annotate(principal, item)
                if not filters.keep(item):
                    continue
                out.append(item)
                if len(out) >= limit:
                    return out
        return out

    async def view(self, principal: Principal, continuation_id: str) -> ContinuationView:
        """The detail view of one continuation, for ``principal``."""
        stored = await self.get(continuation_id)
        try:
            audit = await self.store.audit(stored.run_id)
        except ContinuationError as exc:
            raise http_error(exc) from exc
        items = [await self.annotate(principal, i) for i in items_of(stored)]
        return continuation_view(stored, audit, keys=self.keys, items=items)
