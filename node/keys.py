"""Keystore files on disk: create (mode 0600), load, and the password source.

The encryption itself is the standard Ethereum v3 keystore from
``protocol.identity``; this module owns the file and the password prompt.
The password comes from ``GPUNET_PASSWORD`` (or a file named by
``GPUNET_PASSWORD_FILE``), otherwise from an interactive prompt.
"""

from __future__ import annotations

import getpass
import json
import os
import stat
from pathlib import Path

from protocol.errors import IdentityError
from protocol.identity import Identity, decrypt_keystore, encrypt_keystore

__all__ = [
    "KEYSTORE_MAX_BYTES",
    "KeystoreError",
    "create_keystore",
    "load_keystore",
    "read_password",
]

KEYSTORE_MAX_BYTES = 16 * 1024
PASSWORD_ENV = "GPUNET_PASSWORD"
PASSWORD_FILE_ENV = "GPUNET_PASSWORD_FILE"


class KeystoreError(Exception):
    """A keystore file is missing, unreadable, unsafe or cannot be decrypted."""


def read_password(*, confirm: bool = False, prompt: str = "Keystore password: ") -> str:
    """Password from the environment, a password file, or the terminal."""
    if (value := os.environ.get(PASSWORD_ENV)) is not None:
        return value
    if path := os.environ.get(PASSWORD_FILE_ENV):
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise KeystoreError(f"cannot read {PASSWORD_FILE_ENV}={path}: {exc}") from None
    password = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat password: ") != password:
        raise KeystoreError("passwords do not match")
    return password


def create_keystore(
    path: Path, password: str, *, identity: Identity | None = None, scrypt_n: int = 262144
) -> Identity:
    """Write a new encrypted keystore to ``path`` with mode 0600; never overwrites."""
    identity = identity or Identity.generate()
    try:
        document = encrypt_keystore(identity, password, scrypt_n=scrypt_n)
    except IdentityError as exc:
        raise KeystoreError(str(exc)) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeystoreError(f"{path} already exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(document, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return identity


def load_keystore(path: Path, password: str) -> Identity:
    """Decrypt the keystore at ``path``; refuse files readable by group or others."""
    try:
        st = path.stat()
    except OSError as exc:
        raise KeystoreError(f"cannot open keystore {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeystoreError(
            f"{path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            "run: chmod 600 " + str(path)
        )
    if st.st_size > KEYSTORE_MAX_BYTES:
        raise KeystoreError(f"{path} is too large to be a keystore")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"{path} is not a JSON keystore: {exc}") from None
    try:
        return decrypt_keystore(document, password)
    except IdentityError as exc:
        raise KeystoreError(str(exc)) from None
