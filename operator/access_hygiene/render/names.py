"""Deterministic Kubernetes names and label values."""

import hashlib
import re

_INVALID = re.compile(r"[^a-z0-9-]+")
_HASH_LENGTH = 8


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()[:_HASH_LENGTH]


def object_name(*parts: str, max_length: int = 63) -> str:
    """A DNS-1123 label joined from parts.

    A name that is already valid and short enough is used as is. Otherwise (too long, or characters
    had to be replaced, which could make two inputs collide) a prefix is kept and a stable hash added.
    """
    raw = "-".join(part for part in parts if part)
    cleaned = re.sub(r"-{2,}", "-", _INVALID.sub("-", raw.lower())).strip("-")
    if cleaned == raw and 0 < len(cleaned) <= max_length:
        return cleaned
    prefix = cleaned[: max_length - _HASH_LENGTH - 1].rstrip("-")
    return f"{prefix}-{_digest(raw)}" if prefix else _digest(raw)


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars) for any object name."""
    if len(value) <= 63:
        return value
    return f"{value[: 63 - _HASH_LENGTH - 1].rstrip('-.')}-{_digest(value)}"
