"""Keys, canonical JSON and HMAC-SHA256 signatures (G6).

The signed part of a continuation is its canonical JSON (sorted keys, compact separators,
UTF-8) without the ``signature`` and ``decisions`` fields. Decisions stay outside the signed
part so that an application without the key can attach them; each decision is bound to its
call by path, tool name and a digest of the original args instead.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from .errors import ConfigurationError, ContinuationTampered, UnknownKey

__all__ = ["ALGORITHM", "Keyring", "canonical_json", "digest"]

ALGORITHM: Final = "HMAC-SHA256"
_MIN_KEY_BYTES = 16
_OPEN_TO_OTHERS = stat.S_IRWXG | stat.S_IRWXO  # any permission bit for group or others


def _create_key_file(path: Path, content: str) -> None:
    """Write ``content`` to a new file ``path`` with mode 0600, atomically.

    It is written to a private temporary file first and linked into place, so no reader
    sees a partial file; if another process created ``path`` first, its file is kept.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def canonical_json(value: Any) -> bytes:
    """Return the canonical JSON encoding used for signing and digests.

    Args:
        value: A JSON-compatible value (dicts, lists, str, int, float, bool, None).
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def digest(value: Any) -> str:
    """Return the SHA-256 hex digest of ``value``'s canonical JSON."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


class Keyring:
    """Signing keys addressed by key id (``kid``), with one active key for new signatures.

    Several keys may be held at once so keys can be rotated: sign with the new key, keep the
    old one for verification until every continuation it signed has been resumed or expired.

    Args:
        keys: Mapping of key id to secret bytes (at least 16 bytes each).
        active: The key id used to sign. Defaults to the first key given.
    """

    def __init__(self, keys: Mapping[str, bytes], active: str | None = None) -> None:
        if not keys:
            raise ConfigurationError("A Keyring needs at least one key.")
        for kid, secret in keys.items():
            if not kid or any(c in kid for c in ",=: "):
                raise ConfigurationError(f"Invalid key id {kid!r}: use letters, digits, - or _.")
            if len(secret) < _MIN_KEY_BYTES:
                raise ConfigurationError(
                    f"Key {kid!r} is {len(secret)} bytes; use at least {_MIN_KEY_BYTES} random bytes."
                )
        self._keys = dict(keys)
        self.active = active if active is not None else next(iter(self._keys))
        if self.active not in self._keys:
            raise ConfigurationError(f"Active key id {self.active!r} is not in the keyring.")

    @property
    def kids(self) -> list[str]:
        """The key ids held, active first."""
        return [self.active, *(k for k in self._keys if k != self.active)]

    @classmethod
    def generate(cls, kid: str = "k1") -> Keyring:
        """Return a keyring with one fresh random 32-byte key."""
        return cls({kid: secrets.token_bytes(32)})

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """Parse ``"kid=base64secret,oldkid=base64secret"``; the first key is active.

        Raises:
            ConfigurationError: If the text is not of that form.
        """
        keys: dict[str, bytes] = {}
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            kid, sep, encoded = item.partition("=")
            if not sep:
                raise ConfigurationError(
                    "Signing keys must look like 'kid=base64secret[,kid2=base64secret]'."
                )
            try:
                keys[kid.strip()] = base64.b64decode(encoded.strip() + "==", validate=False)
            except ValueError as exc:
                raise ConfigurationError(f"Key {kid!r} is not valid base64.") from exc
        return cls(keys)

    @classmethod
    def from_env(cls, var: str = "CONTINUATIONS_SIGNING_KEYS") -> Keyring:
        """Load keys from an environment variable in :meth:`parse` format.

        Raises:
            ConfigurationError: If the variable is unset or malformed.
        """
        spec = os.environ.get(var)
        if not spec:
            raise ConfigurationError(
                f"${var} is not set. Generate a key with "
                "`python -m continuations_core keygen` and export it."
            )
        return cls.parse(spec)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str], kid: str = "local") -> Keyring:
        """Load a keyring file, creating it with one random key and mode 0600 if missing.

        Meant for zero-configuration local use (the demo); production should use
        :meth:`from_env` or construct the keyring from a secrets manager. Like ssh with a
        private key, an existing file that group or others may read or write is refused.
        Processes racing to create the file all end up with the same key.

        Raises:
            ConfigurationError: If the file is open to group or others (run ``chmod 600`` on
                it), or does not hold keys in :meth:`parse` format.
        """
        p = Path(path)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            _create_key_file(p, f"{kid}={base64.b64encode(secrets.token_bytes(32)).decode()}\n")
        return cls._from_key_file(p)

    @classmethod
    def _from_key_file(cls, path: Path) -> Keyring:
        fd = os.open(path, os.O_RDONLY)
        with os.fdopen(fd, "r", encoding="utf-8") as fh:
            # The mode of the file actually opened (after any symlink), not of a path that
            # could be swapped between a check and the read.
            mode = os.fstat(fh.fileno()).st_mode
            if os.name == "posix" and mode & _OPEN_TO_OTHERS:
                raise ConfigurationError(
                    f"The key file {path} is open to group or others (mode "
                    f"{stat.S_IMODE(mode):04o}), so it is refused, as ssh refuses such a key. "
                    f"Run `chmod 600 {path}`, and rotate the key if others may have read it."
                )
            text = fh.read().strip()
        try:
            return cls.parse(text)
        except ConfigurationError as exc:
            raise ConfigurationError(f"The key file {path} is not usable: {exc}") from None

    def export(self) -> str:
        """Return the keyring in :meth:`parse` format, active key first."""
        return ",".join(f"{k}={base64.b64encode(self._keys[k]).decode()}" for k in self.kids)

    def sign(self, payload: bytes) -> tuple[str, str]:
        """Sign ``payload`` with the active key; return ``(kid, hex mac)``."""
        mac = hmac.new(self._keys[self.active], payload, hashlib.sha256).hexdigest()
        return self.active, mac

    def verify(self, payload: bytes, kid: str, mac: str, *, continuation_id: str | None) -> None:
        """Check ``mac`` over ``payload`` with key ``kid``.

        Raises:
            UnknownKey: If ``kid`` is not held.
            ContinuationTampered: If the MAC does not match.
        """
        secret = self._keys.get(kid)
        if secret is None:
            raise UnknownKey(
                f"Signed with key id {kid!r}, which this keyring does not hold "
                f"(it holds {', '.join(self.kids)}). Add the old key to rotate safely.",
                continuation_id=continuation_id,
            )
        expected = hmac.new(secret, payload, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), mac.encode("utf-8", "surrogatepass")):
            raise ContinuationTampered(
                "The continuation's signed state does not match its signature; it was "
                "modified or signed with another key. Do not resume it.",
                continuation_id=continuation_id,
            )
