"""Email addresses as the pipeline keys them: one canonical form everywhere (provider payloads,
operator commands, queries and the downstream suppression list), so a lookup finds the key."""

from __future__ import annotations


def canonical_address(text: str) -> str:
    """Trimmed and lower-cased; "Name <a@b>" gives "a@b"; blank gives ""."""
    if text.endswith(">") and "<" in text:
        text = text[text.rindex("<") + 1 : -1]
    return text.strip().lower()
