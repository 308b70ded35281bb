"""The API's bearer token: a 0600 file, created on first start, compared in constant time."""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Final

__all__ = ["TokenError", "check_bearer", "load_or_create_token"]

_MAX_TOKEN_FILE: Final = 1024
_MIN_TOKEN_CHARS: Final = 32


class TokenError(Exception):
    """The token file is unsafe, unreadable or holds no usable token."""


def load_or_create_token(path: Path) -> str:
    """The token in ``path``; a new random one (mode 0600) if the file does not exist."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise TokenError(f"cannot create API token file {path}: {exc.strerror}") from None
    else:
        token = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(token + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return token
    try:
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise TokenError(
                f"{path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):o}); "
                f"run: chmod 600 {path}"
            )
        with path.open("rb") as fh:
            raw = fh.read(_MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise TokenError(f"cannot read API token file {path}: {exc.strerror}") from None
    if len(raw) > _MAX_TOKEN_FILE:
        raise TokenError(f"{path} is too large to be a token file")
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TokenError(f"{path} does not hold an ASCII token") from None
    if len(token) < _MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TokenError(
            f"{path}: the token must be one word of at least {_MIN_TOKEN_CHARS} characters"
        )
    return token


def check_bearer(header: str | None, token: str) -> bool:
    """True when ``header`` is ``Bearer <token>`` (constant-time comparison)."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8", "replace"), token.encode("ascii"))
