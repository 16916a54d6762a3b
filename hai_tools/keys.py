"""Keys: ed25519 key pairs (PEM; a private key optionally wrapped by a passphrase) and 32-byte secrets (the
audit log's HMAC key, the data-at-rest key) read from an environment variable or a file, never from argv.

Who holds which key is the point of them: the release key signs releases (a build machine), each reviewer's key
signs that reviewer's decisions (the reviewer's own profile), the admin key signs changes to the reviewer
registry, the workflow service's key seals final records, the audit key keys the audit log's hashes and chain.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hai_tools.errors import ConfigError, HaiError


class SignatureInvalid(HaiError):
    """A signature does not verify with the key it claims."""


class KeyExists(ConfigError):
    """A key file is already there: keys are never overwritten."""


def write_private_once(path: Path, data: bytes) -> None:
    """Write a secret file with mode 600 through a temp file; refuse to overwrite an existing key, also one that
    another process writes at the same moment (the file is linked into place, which fails if the name exists,
    where a rename would replace it), so it appears whole or not at all."""
    if path.exists():
        raise KeyExists(f"{path} exists: refusing to overwrite a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    except FileExistsError:
        raise KeyExists(f"{path} exists: refusing to overwrite a key") from None
    finally:
        tmp.unlink(missing_ok=True)


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def keygen(prefix: Path, passphrase: str | None = None) -> tuple[Path, Path]:
    """PREFIX.key (private, mode 600, wrapped by `passphrase` when given) and PREFIX.pub."""
    key = Ed25519PrivateKey.generate()
    private, public = prefix.with_suffix(".key"), prefix.with_suffix(".pub")
    wrap = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    write_private_once(
        private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, wrap)
    )
    public.write_bytes(public_pem(key.public_key()))
    return private, public


def load_private(path: Path, passphrase: str | None = None) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(
            Path(path).read_bytes(), password=passphrase.encode() if passphrase else None
        )
    except FileNotFoundError:
        raise ConfigError(f"no private key at {path}") from None
    except TypeError:
        raise ConfigError(f"{path} is wrapped by a passphrase: set it in the environment") from None
    except ValueError:
        raise ConfigError(f"{path}: wrong passphrase or not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an ed25519 private key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (FileNotFoundError, ValueError):
        raise ConfigError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an ed25519 public key")
    return key


def public_from_text(text: str) -> Ed25519PublicKey:
    """A public key from its PEM text or the base64 of its 32 raw bytes (what a browser exports)."""
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError:
        raise ConfigError("not an ed25519 public key (PEM or base64 of 32 raw bytes)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("not an ed25519 public key")
    return key


def raw_public(key: Ed25519PublicKey) -> str:
    return base64.b64encode(
        key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, payload: bytes) -> str:
    return base64.b64encode(key.sign(payload)).decode()


def verify(public: Ed25519PublicKey, signature: str, payload: bytes, what: str) -> None:
    try:
        public.verify(base64.b64decode(signature), payload)
    except (InvalidSignature, ValueError):
        raise SignatureInvalid(f"{what}: signature does not verify") from None


def load_or_create_private(path: Path) -> Ed25519PrivateKey:
    """A service's own signing key (PEM, mode 600), created on first use; its public half beside it."""
    if not path.exists():
        with contextlib.suppress(KeyExists):  # another process created it first: use theirs
            keygen(path.with_suffix(""))
    return load_private(path)


def secret(env: str, file: str | Path | None, default: Path, purpose: str) -> bytes:
    """A 32-byte secret: `$env` (hex or base64), else the file (`file`, or `default`, created with mode 600 on
    first use). The value never appears in a message."""
    value = os.environ.get(env)
    if value:
        return _decode_secret(value.strip(), f"${env}")
    path = Path(file).expanduser() if file else default
    if not path.exists():
        if file:
            raise ConfigError(f"{purpose} key file {path} does not exist")
        # another process may create it first (two servers starting on one home): then theirs is read
        with contextlib.suppress(KeyExists):
            write_private_once(path, secrets.token_hex(32).encode() + b"\n")
    return _decode_secret(path.read_text().strip(), str(path))


def _decode_secret(text: str, where: str) -> bytes:
    for decode in (bytes.fromhex, lambda t: base64.b64decode(t, validate=True)):
        try:
            raw = decode(text)
        except ValueError:
            continue
        if len(raw) >= 32:
            return raw
    raise ConfigError(f"{where}: a key must be at least 32 bytes, hex or base64")
