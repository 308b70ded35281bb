"""Keystore files on disk: create (mode 0600), load, and the password source.

The encryption itself is the standard Ethereum v3 keystore from
``protocol.identity``; this module owns the file and the password prompt.
The password comes from ``GPUNET_PASSWORD`` (or a file named by
``GPUNET_PASSWORD_FILE``), otherwise from an interactive prompt.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from protocol.errors import IdentityError
from protocol.identity import Identity, decrypt_keystore, encrypt_keystore

__all__ = [
    "KEYSTORE_MAX_BYTES",
    "KeystoreError",
    "create_keystore",
    "load_keystore",
    "open_keystore",
    "read_keystore",
    "read_password",
    "refuse_existing",
    "unlock_keystore",
]

KEYSTORE_MAX_BYTES = 16 * 1024
PASSWORD_ENV = "GPUNET_PASSWORD"
PASSWORD_FILE_ENV = "GPUNET_PASSWORD_FILE"


class KeystoreError(Exception):
    """A keystore file is missing, unreadable, unsafe or cannot be decrypted.

    ``hint`` says what the user can do about it.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


_PASSWORD_HINT = f"set {PASSWORD_ENV} or {PASSWORD_FILE_ENV}, or type it at the prompt"


def read_password(*, confirm: bool = False, prompt: str = "Keystore password: ") -> str:
    """Password from the environment, a password file, or the terminal."""
    if (value := os.environ.get(PASSWORD_ENV)) is not None:
        return value
    if path := os.environ.get(PASSWORD_FILE_ENV):
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise KeystoreError(
                f"cannot read {PASSWORD_FILE_ENV}={path}: {exc.strerror or exc}",
                f"point {PASSWORD_FILE_ENV} at a readable file, or set {PASSWORD_ENV}",
            ) from None
    try:
        password = getpass.getpass(prompt)
        if confirm and getpass.getpass("Repeat password: ") != password:
            raise KeystoreError("passwords do not match", "run the command again")
    except EOFError:  # no terminal to ask (a service, a pipe): say where else it can come from
        sys.stderr.write("\n")  # end the prompt's line
        raise KeystoreError("no keystore password: the input ended", _PASSWORD_HINT) from None
    return password


def create_keystore(
    path: Path, password: str, *, identity: Identity | None = None, scrypt_n: int = 262144
) -> Identity:
    """Write a new encrypted keystore to ``path`` with mode 0600; never overwrites.

    The file appears whole or not at all: it is written and synced under a
    temporary name in the same directory, then hard-linked to ``path`` (which
    fails if ``path`` exists), so a full disk or a kill leaves no half-written key.
    """
    refuse_existing(path)
    identity = identity or Identity.generate()
    try:
        document = encrypt_keystore(identity, password, scrypt_n=scrypt_n)
    except IdentityError as exc:
        raise KeystoreError(str(exc), f"choose a non-empty password ({_PASSWORD_HINT})") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise KeystoreError(
            f"cannot create a keystore in {path.parent}: {exc.strerror or exc}",
            "use --keystore for a path in a writable directory",
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:  # mkstemp: mode 0600
            json.dump(document, fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            refuse_existing(path)  # a file system without hard links: rename instead
            os.rename(tmp, path)
    except FileExistsError:
        refuse_existing(path)
        raise
    except OSError as exc:
        raise KeystoreError(
            f"cannot write {path}: {exc.strerror or exc}", "free space, or use another --keystore"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return identity


def refuse_existing(path: Path) -> None:
    """A :class:`KeystoreError` if something is at ``path`` (a key is never overwritten)."""
    if os.path.lexists(path):
        raise KeystoreError(
            f"{path} already exists; refusing to overwrite a key", "use --keystore for another path"
        )


def read_keystore(path: Path) -> dict[str, Any]:
    """The keystore document at ``path``, checked before any password is asked for:
    it exists, only its owner can read it, it is small JSON."""
    missing_hint = "create a key with: gpunet keys new (or give --keystore)"
    try:
        st = path.stat()
    except OSError as exc:
        raise KeystoreError(f"cannot open keystore {path}: {exc.strerror}", missing_hint) from None
    if not stat.S_ISREG(st.st_mode):
        raise KeystoreError(f"keystore {path} is not a file", missing_hint)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeystoreError(
            f"{path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            "run: chmod 600 " + str(path),
            f"run: chmod 600 {path}",
        )
    if st.st_size > KEYSTORE_MAX_BYTES:
        raise KeystoreError(f"{path} is too large to be a keystore", missing_hint)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"{path} is not a JSON keystore: {exc}", missing_hint) from None
    if not isinstance(document, dict):
        raise KeystoreError(f"{path} is not a JSON keystore: not an object", missing_hint)
    return document


def unlock_keystore(path: Path, document: dict[str, Any], password: str) -> Identity:
    """Decrypt a document from :func:`read_keystore`; a wrong password says so."""
    try:
        return decrypt_keystore(document, password)
    except IdentityError as exc:
        if "MAC mismatch" in str(exc):  # eth-keyfile's word for a wrong password
            raise KeystoreError(
                f"wrong password for keystore {path}",
                f"check {PASSWORD_ENV} / {PASSWORD_FILE_ENV} (or what you typed)",
            ) from None
        raise KeystoreError(
            f"{path}: {exc}", "restore the keystore from a backup, or give --keystore"
        ) from None


def load_keystore(path: Path, password: str) -> Identity:
    """Decrypt the keystore at ``path``; refuse files readable by group or others."""
    return unlock_keystore(path, read_keystore(path), password)


def open_keystore(path: Path) -> Identity:
    """Check the file at ``path``, then ask for its password and decrypt it
    (no prompt for a keystore that is missing or unsafe)."""
    document = read_keystore(path)
    return unlock_keystore(path, document, read_password())
