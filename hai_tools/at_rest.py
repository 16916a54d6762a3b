"""Encryption at rest for patient data: AES-256-GCM with the data key (`$HAI_DATA_KEY`, or a key file), for the
workflow's checkpoints (a LangGraph serializer) and for each case's data in the record store, where every case
has its own key wrapped by the data key, so erasing a case's key makes its data unrecoverable (crypto-shredding)
even from copies of the database file."""

from __future__ import annotations

import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hai_tools.errors import HaiError

_NONCE = 12


class DecryptionFailed(HaiError):
    """Ciphertext that does not decrypt under the key: altered, or encrypted under another key."""


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key[:32]).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, blob: bytes, aad: bytes, what: str) -> bytes:
    try:
        return AESGCM(key[:32]).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
    except (InvalidTag, ValueError):
        raise DecryptionFailed(
            f"{what} does not decrypt: altered, or encrypted under another data key"
        ) from None


class AesGcmCipher:
    """LangGraph's CipherProtocol on AES-256-GCM."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        return "aesgcm", encrypt(self._key, plaintext, b"checkpoint")

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        if ciphername != "aesgcm":
            raise DecryptionFailed(f"checkpoint encrypted with unknown cipher {ciphername!r}")
        return decrypt(self._key, ciphertext, b"checkpoint", "a checkpoint")


def encrypted_serializer(key: bytes) -> Any:
    """A checkpoint serializer that encrypts every value and refuses any that is not encrypted (LangGraph's own
    reads plaintext values as they are, which would let a hand-written checkpoint in)."""
    from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    class Strict(EncryptedSerializer):
        def loads_typed(self, data: tuple[str, bytes]) -> Any:
            if "+" not in data[0]:
                raise DecryptionFailed("an unencrypted checkpoint value was found: refused")
            return super().loads_typed(data)

    return Strict(AesGcmCipher(key), JsonPlusSerializer())
