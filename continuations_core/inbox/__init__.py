"""The approval inbox: an HTTP API and web pages where people decide (extra ``inbox``).

::

    from continuations_core.inbox import TrustedProxyAuth, create_inbox_app

    app = create_inbox_app(
        open_store("postgresql://app@db/agents"),
        authenticate=TrustedProxyAuth(header="X-Forwarded-Email", proxies=("10.0.0.5",)),
    )

or ``python -m continuations_core inbox --store URL ...``. Principals, authenticators and the
webhook notifier need only the standard library; :func:`create_inbox_app` needs the ``inbox``
extra (FastAPI, Jinja2) and is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._auth import Authenticator, Authorizer, DevAuth, Principal, TrustedProxyAuth
from ._webhook import SIGNATURE_HEADER, WebhookNotifier, sign_webhook, verify_webhook

if TYPE_CHECKING:
    from ._app import create_inbox_app
    from ._views import ContinuationView, PendingItem

__all__ = [
    "SIGNATURE_HEADER",
    "Authenticator",
    "Authorizer",
    "ContinuationView",
    "DevAuth",
    "PendingItem",
    "Principal",
    "TrustedProxyAuth",
    "WebhookNotifier",
    "create_inbox_app",
    "sign_webhook",
    "verify_webhook",
]

_LAZY = {
    "create_inbox_app": "._app",
    "ContinuationView": "._views",
    "PendingItem": "._views",
}


def __getattr__(name: str) -> Any:
    # The app pulls in FastAPI and Jinja2; import it only when asked for, so the notifier and
    # the auth helpers work without the extra.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
