"""Bounce classification, following RFC 3463 and Sisimai's vocabulary.

The class answers "what should the sender do": HARD stop, SOFT retry later, EXPIRED the
provider gave up retrying, BLOCK fix your own sending (policy, reputation, authentication,
spam), UNDETERMINED no evidence. The reason is Sisimai's name for the cause (userunknown,
mailboxfull, spamdetected, ...), or None when the evidence names none; it is never invented.

Evidence is weighed in this order:
1. the provider's own category, when the connector mapped it to a class (it saw the whole
   SMTP dialogue); the reason still comes from the status and text;
2. a specific RFC 3463 enhanced status code (x.1.1, 5.1.2, x.2.2, x.4.7, ...);
3. an expiry notice in the text, which names the cause better than a bare 4.x.x;
4. the class digit: 4.x.x (or a bare 4xx reply) is SOFT, 5.7.x is BLOCK;
5. the diagnostic text on its own (status-less or unspecific 5.x.x bounces);
6. otherwise UNDETERMINED.
Only userunknown, hostunknown and hasmoved are HARD (as in Sisimai): a full mailbox is SOFT
even as 5.2.2, and a policy or spam rejection says nothing about the recipient's address.
"""

from __future__ import annotations

import re

from mailstream.events import BounceClass

HARD, SOFT, BLOCK = BounceClass.HARD, BounceClass.SOFT, BounceClass.BLOCK
EXPIRED = BounceClass.EXPIRED
Verdict = tuple[BounceClass, str | None]

# class.subject.detail, not part of an IP address or version number.
_ENHANCED_STATUS = re.compile(r"(?<![\w.])[245]\.\d{1,3}\.\d{1,3}(?!\.?\d)")
# A basic SMTP reply code such as "smtp;421 ..." or "452-...".
_TRANSIENT_REPLY = re.compile(r"(?:^|[\s;:])4\d\d(?=[\s-]|$)")

# RFC 3463 codes whose meaning depends on the class digit.
_STATUS_EXACT: dict[str, Verdict] = {
    "5.1.2": (HARD, "hostunknown"),  # bad destination system address
    "5.4.4": (HARD, "hostunknown"),  # unable to route
    "5.1.7": (BLOCK, "rejected"),  # bad sender's mailbox address syntax
    "5.1.8": (BLOCK, "rejected"),  # bad sender's system address
}
# RFC 3463 subject.detail pairs that decide on their own, whatever the class digit.
_STATUS_DETAIL: dict[str, Verdict] = {
    "1.0": (HARD, "userunknown"),  # other address status
    "1.1": (HARD, "userunknown"),  # bad destination mailbox address
    "1.3": (HARD, "userunknown"),  # bad destination mailbox address syntax
    "1.6": (HARD, "hasmoved"),  # destination mailbox has moved, no forwarding address
    "2.2": (SOFT, "mailboxfull"),  # mailbox full
    "2.3": (SOFT, "exceedlimit"),  # message length exceeds administrative limit
    "3.4": (SOFT, "mesgtoobig"),  # message too big for system
    "4.7": (EXPIRED, "expired"),  # delivery time expired
}

# Ordered: the first rule with a phrase found in the lower-cased text wins, so specific
# phrases come before the generic ones they contain ("domain does not exist" before
# "does not exist", "spamhaus" before "spam", "spam" before "blocked").
_TEXT_RULES: tuple[tuple[str, BounceClass, tuple[str, ...]], ...] = (
    (
        "expired",
        EXPIRED,
        (
            "message expired",
            "delivery time expired",
            "retry timeout exceeded",
            "retry time exceeded",
            "too long in queue",
        ),
    ),
    # The sender's address was refused: must win over "user unknown" in the same sentence.
    ("rejected", BLOCK, ("sender address rejected", "sender rejected", "sender domain")),
    (
        "hostunknown",
        HARD,
        (
            "host unknown",
            "unknown host",
            "host not found",
            "domain not found",
            "domain name not found",
            "no such domain",
            "domain does not exist",
            "unrouteable address",
            "unroutable address",
            "name or service not known",
            "no mx record",
        ),
    ),
    (
        "userunknown",
        HARD,
        (
            "user unknown",
            "unknown user",
            "no such user",
            "no such recipient",
            "no such mailbox",
            "unknown recipient",
            "recipient unknown",
            "recipient not found",
            "recipientnotfound",
            "user not found",
            "mailbox not found",
            "invalid recipient",
            "invalid mailbox",
            "does not exist",
            "doesn't exist",
            "this user doesn't have",
            "no mailbox here",
            "mailbox unavailable",  # Outlook.com's 5.5.0 for an address that does not exist
            "recipient address rejected: access denied",  # Exchange Online directory check
        ),
    ),
    ("hasmoved", HARD, ("has moved",)),
    (
        "mailboxfull",
        SOFT,
        (
            "mailbox full",
            "mailbox is full",
            "inbox is full",
            "over quota",
            "quota exceeded",
            "exceeded storage",
            "out of storage",
            "insufficient storage",
            "storage space",
            "mailbox size limit",
        ),
    ),
    (
        "suspend",
        SOFT,
        (
            "is disabled",
            "has been disabled",
            "account disabled",
            "suspended",
            "deactivated",
            "inactive",
        ),
    ),
    ("authfailure", BLOCK, ("unauthenticated", "dmarc", "dkim", "spf")),
    ("virusdetected", BLOCK, ("virus", "malware")),
    (
        "blocked",
        BLOCK,
        (
            "spamhaus",
            "blacklist",
            "black list",
            "blocklist",
            "block list",
            "denylist",
            "listed on",
            "listed at",
            "listed in",
        ),
    ),
    ("spamdetected", BLOCK, ("spam", "unsolicited", "junk mail")),
    ("blocked", BLOCK, ("blocked", "banned", "reputation", "not authorized")),
    ("policyviolation", BLOCK, ("policy", "prohibited", "not permitted", "does not allow")),
    ("mesgtoobig", SOFT, ("message too large", "message size exceeds", "too big")),
    ("toomanyconn", SOFT, ("too many connections", "rate limit", "rate that prevents")),
    (
        "networkerror",
        SOFT,
        (
            "connection timed out",
            "connection refused",
            "connection dropped",
            "no route to host",
        ),
    ),
    ("contenterror", BLOCK, ("content rejected",)),
    # The provider refused to send to an address it suppressed earlier: the reason is known,
    # the class of the original failure is not.
    ("suppressed", BounceClass.UNDETERMINED, ("suppression list", "suppressed")),
)


def extract_status(text: str | None) -> str | None:
    """The RFC 3463 enhanced status code in `text` ("5.1.1" from "smtp;550 5.1.1 ..."), or None."""
    if not text:
        return None
    match = _ENHANCED_STATUS.search(text)
    return match.group() if match else None


def classify_bounce(
    category_class: BounceClass | None, status: str | None, diagnostic: str | None
) -> tuple[BounceClass, str | None]:
    """(class, Sisimai-style reason) of a failed delivery; see the module docstring."""
    code = extract_status(status) or extract_status(diagnostic)
    verdict = _specific_status(code) or _weigh_text(code, diagnostic or status or "")
    if category_class is not None:
        return category_class, verdict[1]
    return verdict


def _weigh_text(code: str | None, text: str) -> Verdict:
    # The text is the diagnostic; a status's own text is only the code's generic meaning
    # ("5.7.1 (delivery not authorized, message refused)"), evidence when nothing else is.
    text = text.lower()
    text_verdict = _classify_text(text)
    if text_verdict is not None and text_verdict[0] is EXPIRED:
        return text_verdict
    generic = _generic_status(code, text)
    if generic is not None:
        return generic, text_verdict[1] if text_verdict else None
    return text_verdict or (BounceClass.UNDETERMINED, None)


def _specific_status(code: str | None) -> Verdict | None:
    if code is None or code[0] == "2":
        return None
    return _STATUS_EXACT.get(code) or _STATUS_DETAIL.get(code[2:])


def _generic_status(code: str | None, text: str) -> BounceClass | None:
    if code is not None:
        if code[0] == "4":
            return SOFT
        if code.startswith("5.7."):
            return BLOCK
        return None
    return SOFT if _TRANSIENT_REPLY.search(text) else None


def _classify_text(text: str) -> Verdict | None:
    for reason, bounce_class, phrases in _TEXT_RULES:
        for phrase in phrases:
            if phrase in text:
                return bounce_class, reason
    return None
