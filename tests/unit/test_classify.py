"""The bounce classifier against real-world diagnostics (Gmail, Outlook, Yahoo, MTAs)."""

from __future__ import annotations

import pytest

from mailstream.classify import classify_bounce, extract_status
from mailstream.events import BounceClass

HARD, SOFT, BLOCK = BounceClass.HARD, BounceClass.SOFT, BounceClass.BLOCK
EXPIRED, UNDETERMINED = BounceClass.EXPIRED, BounceClass.UNDETERMINED

REAL_DIAGNOSTICS: list[tuple[str, BounceClass, str | None]] = [
    # Gmail
    (
        "550-5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces. "
        "Learn more at https://support.google.com/mail/?p=NoSuchUser",
        HARD,
        "userunknown",
    ),
    (
        "452-4.2.2 The email account that you tried to reach is over quota. Please direct the "
        "recipient to https://support.google.com/mail/?p=OverQuotaTemp",
        SOFT,
        "mailboxfull",
    ),
    (
        "552-5.2.2 The email account that you tried to reach is over quota and inactive.",
        SOFT,
        "mailboxfull",
    ),
    ("550-5.2.1 The email account that you tried to reach is disabled.", SOFT, "suspend"),
    (
        "550-5.7.1 [203.0.113.7] Our system has detected that this message is likely unsolicited "
        "mail. To reduce the amount of spam sent to Gmail, this message has been blocked.",
        BLOCK,
        "spamdetected",
    ),
    (
        "550-5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail "
        "requires all senders to authenticate with either SPF or DKIM.",
        BLOCK,
        "authfailure",
    ),
    (
        "421-4.7.0 [203.0.113.7] Our system has detected an unusual rate of unsolicited mail "
        "originating from your IP address.",
        SOFT,
        "spamdetected",
    ),
    (
        "550-5.7.1 The user or domain that you are sending to (or from) has a policy that "
        "prohibited the mail that you sent.",
        BLOCK,
        "policyviolation",
    ),
    ("552-5.2.3 Your message exceeded Google's message size limits.", SOFT, "exceedlimit"),
    ("421-4.4.5 Server busy, try again later.", SOFT, None),
    (
        "550-5.7.1 [203.0.113.7] The IP you're using to send mail is not authorized to send email "
        "directly to our servers.",
        BLOCK,
        "blocked",
    ),
    (
        "450-4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
        "additional messages from being delivered.",
        SOFT,
        "toomanyconn",
    ),
    # Outlook / Exchange Online
    (
        "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302)",
        HARD,
        "userunknown",
    ),
    (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        HARD,
        "userunknown",
    ),
    ("550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", HARD, "userunknown"),
    (
        "550 5.7.1 Unfortunately, messages from [203.0.113.7] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list (S3150).",
        BLOCK,
        "blocked",
    ),
    ("550 5.7.606 Access denied, banned sending IP [203.0.113.7].", BLOCK, "blocked"),
    (
        "554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException",
        SOFT,
        "mailboxfull",
    ),
    (
        "550 5.7.509 Access denied, sending domain example.com does not pass DMARC verification "
        "and has a DMARC policy of reject.",
        BLOCK,
        "authfailure",
    ),
    ("550 5.4.4 SMTPSEND.DNS.NonExistentDomain; nonexistent domain", HARD, "hostunknown"),
    ("451 4.7.500 Server busy. Please try again later from [203.0.113.7]. (S77714)", SOFT, None),
    # Yahoo / AOL
    (
        "554 delivery error: dd This user doesn't have a yahoo.com account (someone@yahoo.com) "
        "[0] - mta1234.mail.bf1.yahoo.com",
        HARD,
        "userunknown",
    ),
    (
        "554 delivery error: dd Sorry your message to someone@yahoo.com cannot be delivered. "
        "This mailbox is disabled (554.30)",
        SOFT,
        "suspend",
    ),
    (
        "421 4.7.0 [TSS04] Messages from 203.0.113.7 temporarily deferred due to unexpected "
        "volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        SOFT,
        None,
    ),
    (
        "553 5.7.1 [BL21] Connections will not be accepted from 203.0.113.7, because the ip is "
        "in Spamhaus's list; see https://postmaster.yahooinc.com/error-codes",
        BLOCK,
        "blocked",
    ),
    (
        "554 5.7.9 Message not accepted for policy reasons.  See "
        "https://postmaster.yahooinc.com/error-codes",
        BLOCK,
        "policyviolation",
    ),
    ("552 1 Requested mail action aborted, mailbox not found", HARD, "userunknown"),
    # Postfix, Sendmail, Exim, PowerMTA
    (
        "smtp; 550 5.1.1 <someone@example.org>: Recipient address rejected: User unknown in "
        "virtual mailbox table",
        HARD,
        "userunknown",
    ),
    ("550 5.0.0 <someone@example.org>... User unknown", HARD, "userunknown"),
    (
        "Host or domain name not found. Name service error for name=example.invalid type=MX: "
        "Host not found, try again",
        HARD,
        "hostunknown",
    ),
    ("connect to mx.example.org[203.0.113.9]:25: Connection timed out", SOFT, "networkerror"),
    (
        "smtp;554 4.4.7 Message expired: unable to deliver in 840 minutes.<421 4.4.0 Unable to "
        "lookup DNS for example.org>",
        EXPIRED,
        "expired",
    ),
    ("retry timeout exceeded", EXPIRED, "expired"),
    ("smtp;421 Service not available, closing transmission channel", SOFT, None),
    (
        "554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using zen.spamhaus.org",
        BLOCK,
        "blocked",
    ),
    ("MAIL REFUSED - IP (17.99.99.99) is in black list", BLOCK, "blocked"),
    ("552 5.3.4 Message size exceeds fixed limit", SOFT, "mesgtoobig"),
    ("550 5.1.6 Recipient addresses in this domain have moved", HARD, "hasmoved"),
    ("550 5.7.1 Message rejected due to virus", BLOCK, "virusdetected"),
    ("550 Sender address rejected: User unknown in local recipient table", BLOCK, "rejected"),
    (
        "553 5.1.8 <bounce@sender.example>: Sender address rejected: Domain not found",
        BLOCK,
        "rejected",
    ),
    ("Delivery failed", UNDETERMINED, None),
    ("", UNDETERMINED, None),
]


@pytest.mark.parametrize(("diagnostic", "expected_class", "expected_reason"), REAL_DIAGNOSTICS)
def test_real_world_diagnostics(
    diagnostic: str, expected_class: BounceClass, expected_reason: str | None
) -> None:
    assert classify_bounce(None, None, diagnostic) == (expected_class, expected_reason)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("5.1.1", (HARD, "userunknown")),
        ("4.1.1", (HARD, "userunknown")),
        ("5.1.0", (HARD, "userunknown")),
        ("5.1.3", (HARD, "userunknown")),
        ("5.1.2 (bad destination system: no such domain)", (HARD, "hostunknown")),
        ("5.4.4", (HARD, "hostunknown")),
        ("4.4.4", (SOFT, None)),
        ("5.2.2", (SOFT, "mailboxfull")),
        ("4.2.2", (SOFT, "mailboxfull")),
        ("4.4.7", (EXPIRED, "expired")),
        ("4.4.1", (SOFT, None)),
        ("4.7.1", (SOFT, None)),
        ("5.7.1", (BLOCK, None)),
        ("5.7.26", (BLOCK, None)),
        ("5.1.7", (BLOCK, "rejected")),
        ("5.0.0", (UNDETERMINED, None)),
        ("2.0.0", (UNDETERMINED, None)),
        (None, (UNDETERMINED, None)),
    ],
)
def test_status_codes_alone(status: str | None, expected: tuple[BounceClass, str | None]) -> None:
    assert classify_bounce(None, status, "") == expected


def test_status_text_counts_only_without_a_diagnostic() -> None:
    status = "5.7.1 (delivery not authorized, message refused)"
    assert classify_bounce(None, status, None) == (BLOCK, "blocked")
    assert classify_bounce(None, status, "Relay access denied") == (BLOCK, None)


def test_a_specific_status_beats_the_text() -> None:
    assert classify_bounce(None, "5.1.1", "mailbox full") == (HARD, "userunknown")


def test_an_expiry_notice_beats_a_generic_transient_status() -> None:
    assert classify_bounce(None, "4.4.1", "Connection timed out; message expired") == (
        EXPIRED,
        "expired",
    )


def test_a_transient_status_keeps_its_class_whatever_the_text() -> None:
    assert classify_bounce(None, "4.3.0", "450 user unknown") == (SOFT, "userunknown")


@pytest.mark.parametrize(
    ("category", "status", "diagnostic", "expected"),
    [
        (HARD, "4.2.2", "mailbox full", (HARD, "mailboxfull")),
        (SOFT, None, None, (SOFT, None)),
        (BLOCK, "5.1.1", "user unknown", (BLOCK, "userunknown")),
        (EXPIRED, "4.4.7", None, (EXPIRED, "expired")),
    ],
)
def test_the_provider_category_decides_the_class(
    category: BounceClass,
    status: str | None,
    diagnostic: str | None,
    expected: tuple[BounceClass, str | None],
) -> None:
    assert classify_bounce(category, status, diagnostic) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5.1.1 (bad destination mailbox address)", "5.1.1"),
        ("550-5.1.1 The email account that you tried to reach does not exist.", "5.1.1"),
        ("smtp;550 5.1.1 <a@b.c>: Recipient address rejected", "5.1.1"),
        ("2.0.0 (success)", "2.0.0"),
        ("#5.1.10 RESOLVER.ADR.RecipientNotFound", "5.1.10"),
        ("550 5.7.26 unauthenticated", "5.7.26"),
        ("dsn=4.4.1, status=deferred", "4.4.1"),
        ("blocked by [5.45.67.89]", None),
        ("client 203.0.113.9 refused", None),
        ("Mozilla/5.0 (Windows NT 10.0)", None),
        ("version 2.10.3.4", None),
        ("550 Requested action not taken", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_status(text: str | None, expected: str | None) -> None:
    assert extract_status(text) == expected
