"""The scoring and suppression policy: `policy.yaml` beside this module, optionally overridden.

`load_policy(None)` gives the documented defaults; `load_policy(path)` overrides them with a
user file holding any subset of the keys (`score` and `suppression_scopes` merged key by key,
lists replaced). Unknown keys, wrong types and out-of-range values raise `PolicyError` naming
the key. What each key means, and where its default comes from, is documented in `policy.yaml`.

A `tenants:` section gives a tenant (a sending team) its own values of the rule keys, merged
the same way over the file's top level; `Policy.for_tenant(name)` is that tenant's policy
(the top level for a tenant without a section).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import yaml

from mailstream.errors import ErrorKind, MailstreamError, TimeFormatError
from mailstream.times import parse_duration_ms

DEFAULT_POLICY_FILE = Path(__file__).with_name("policy.yaml")
_MS_PER_DAY = 86_400_000
# User agents repeat heavily; a cold check of the default lists costs several µs.
_USER_AGENT_VERDICTS_CACHED = 4096


class Scope(enum.StrEnum):
    """Where a suppression holds: for every tenant, or for the tenant whose mail caused it."""

    GLOBAL = "GLOBAL"
    TENANT = "TENANT"


class PolicyError(MailstreamError, ValueError):
    """An unreadable policy file, an unknown key or a bad value; the message says which."""

    default_kind = ErrorKind.INVALID_POLICY


@dataclass(frozen=True, slots=True)
class ScoreWeights:
    """Points per human signal (non-negative, so a score is never negative)."""

    delivered: int
    first_open: int
    third_open_bonus: int
    click: int
    reply: int


RATES = ("complaint_rate", "hard_bounce_rate", "block_rate")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A rate's levels, as fractions (0.001 is 0.10%): at or above `warn` a window is WARN,
    at or above `critical` CRITICAL."""

    warn: float
    critical: float


@dataclass(frozen=True, slots=True)
class DeliverabilityPolicy:
    """How the deliverability windows are counted and judged (`deliverability:` in policy.yaml)."""

    windows: tuple[tuple[str, int], ...]  # (name as written, length in ms), shortest first
    bucket_ms: int
    minimum_volume: int
    recovery_ratio: float
    thresholds: tuple[tuple[str, Thresholds], ...]  # (rate, its thresholds), in RATES order

    @property
    def longest_window_ms(self) -> int:
        return self.windows[-1][1]


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules' parameters (`load_policy` validates them); matchers compiled once, here."""

    machine_window_seconds: float
    machine_user_agents: tuple[str, ...]
    machine_user_agent_patterns: tuple[str, ...]
    unsubscribe_url_patterns: tuple[str, ...]
    score: ScoreWeights
    inactivity_reset_days: float
    soft_bounce_limit: int
    delivery_resets_soft_bounces: bool
    dedupe_window: int
    max_pending_per_message: int
    reorder_window_events: int
    reorder_window_hours: float
    suppression_scopes: tuple[tuple[str, Scope], ...]
    deliverability: DeliverabilityPolicy
    default_tenant: str = "default"
    max_tenants_per_recipient: int = 50
    tenants: tuple[tuple[str, Policy], ...] = ()
    machine_window_ms: int = field(init=False, repr=False, compare=False)
    inactivity_reset_ms: int = field(init=False, repr=False, compare=False)
    reorder_window_ms: int = field(init=False, repr=False, compare=False)
    log_events: int = field(init=False, repr=False, compare=False)
    log_window_ms: int = field(init=False, repr=False, compare=False)
    _tenant_scoped: frozenset[str] = field(init=False, repr=False, compare=False)
    _tenant_policies: dict[str, Policy] = field(init=False, repr=False, compare=False)
    _machine_user_agent: Callable[[str], bool] = field(init=False, repr=False, compare=False)
    _unsubscribe_url: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_derived = functools.partial(object.__setattr__, self)
        set_derived("machine_window_ms", round(self.machine_window_seconds * 1000))
        set_derived("inactivity_reset_ms", round(self.inactivity_reset_days * _MS_PER_DAY))
        set_derived("reorder_window_ms", round(self.reorder_window_hours * 3_600_000))
        tenant_policies = dict(self.tenants)
        set_derived("_tenant_policies", tenant_policies)
        everyone = [self, *tenant_policies.values()]
        # One log per recipient serves every tenant's mail to it: the widest window applies.
        set_derived("log_events", max(each.reorder_window_events for each in everyone))
        set_derived("log_window_ms", max(each.reorder_window_ms for each in everyone))
        set_derived(
            "_tenant_scoped",
            frozenset(r for r, scope in self.suppression_scopes if scope is Scope.TENANT),
        )
        set_derived(
            "_machine_user_agent",
            _user_agent_matcher(self.machine_user_agents, self.machine_user_agent_patterns),
        )
        set_derived("_unsubscribe_url", _substring_matcher(self.unsubscribe_url_patterns))

    def is_machine_user_agent(self, user_agent: str) -> bool:
        return self._machine_user_agent(user_agent)

    def is_unsubscribe_url(self, url: str) -> bool:
        return self._unsubscribe_url.search(url.lower()) is not None

    def for_tenant(self, tenant: str) -> Policy:
        """The policy of `tenant`: its `tenants:` section over the top level, else the top level."""
        return self._tenant_policies.get(tenant, self)

    def scope_of(self, reason: str) -> Scope:
        """Where a suppression for `reason` (a SuppressionReason value) holds under this policy."""
        return Scope.TENANT if reason in self._tenant_scoped else Scope.GLOBAL


def load_policy(path: Path | None = None) -> Policy:
    """The default policy, overridden by the YAML file at `path` when one is given."""
    settings = _read_mapping(DEFAULT_POLICY_FILE)
    source = str(path or DEFAULT_POLICY_FILE)
    if path is not None:
        settings = _merge(settings, _read_mapping(path), source)
    sections = settings.pop("tenants", None) or {}
    if not isinstance(sections, Mapping) or not all(
        isinstance(name, str) and name and isinstance(section, Mapping)
        for name, section in sections.items()
    ):
        raise PolicyError(f"{source}: tenants: expected a mapping of tenant name to policy keys")
    tenants = []
    for name, section in sorted(sections.items()):
        shared = [key for key in section if key in _STREAM_KEYS]
        if shared:
            raise PolicyError(
                f"{source}: tenants.{name}: {', '.join(shared)} cannot differ per tenant "
                f"(one stream serves every tenant)"
            )
        merged = _merge(settings, dict(section), f"{source}: tenants.{name}")
        tenants.append((name, _build(merged, f"{source}: tenants.{name}")))
    return replace(_build(settings, source), tenants=tuple(tenants))


@functools.cache
def default_policy() -> Policy:
    """`load_policy(None)`, read once."""
    return load_policy(None)


def _user_agent_matcher(
    substrings: tuple[str, ...], patterns: tuple[str, ...]
) -> Callable[[str], bool]:
    literal = _substring_matcher(substrings)
    regex = re.compile("|".join(f"(?:{p})" for p in patterns) or "(?!)", re.IGNORECASE)

    @functools.lru_cache(maxsize=_USER_AGENT_VERDICTS_CACHED)
    def is_machine(user_agent: str) -> bool:
        return bool(literal.search(user_agent.lower()) or regex.search(user_agent))

    return is_machine


def _substring_matcher(substrings: tuple[str, ...]) -> re.Pattern[str]:
    """Matches a lower-cased text containing any of `substrings` (a literal alternation is fast)."""
    return re.compile("|".join(re.escape(s.lower()) for s in substrings) or "(?!)")


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise PolicyError(f"{path}: expected a mapping of policy keys, got {type(loaded).__name__}")
    return loaded


def _merge(defaults: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in overrides.items():
        if key not in _CHECKS and key not in _SECTIONS:
            raise PolicyError(f"{source}: unknown key {key!r} (known: {', '.join(_CHECKS)})")
        if key == "score" and isinstance(value, dict):
            value = _merge_weights(defaults["score"], value, source)
        if key == "suppression_scopes" and isinstance(value, dict):
            value = {**defaults["suppression_scopes"], **value}
        merged[key] = value
    return merged


def _merge_weights(
    defaults: dict[str, Any], overrides: dict[str, Any], source: str
) -> dict[str, Any]:
    for key in overrides:
        if key not in _WEIGHT_NAMES:
            raise PolicyError(
                f"{source}: unknown key 'score.{key}' (known: {', '.join(_WEIGHT_NAMES)})"
            )
    return {**defaults, **overrides}


def _build(settings: dict[str, Any], source: str) -> Policy:
    missing = [key for key in _CHECKS if key not in settings]
    if missing:
        raise PolicyError(f"{source}: missing key(s) {', '.join(missing)}")
    try:
        values = {key: check(key, settings[key]) for key, check in _CHECKS.items()}
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None
    return Policy(**values)


def _integer(minimum: int) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if type(value) is not int or value < minimum:
            raise PolicyError(f"{key}: expected an integer >= {minimum}, got {value!r}")
        return value

    return check


def _number(minimum: float, *, exclusive: bool = False) -> Callable[[str, Any], float]:
    def check(key: str, value: Any) -> float:
        if type(value) not in (int, float) or (value <= minimum if exclusive else value < minimum):
            bound = f"> {minimum}" if exclusive else f">= {minimum}"
            raise PolicyError(f"{key}: expected a number {bound}, got {value!r}")
        return cast(float, value)  # an int stays an int

    return check


def _boolean(key: str, value: Any) -> bool:
    if type(value) is not bool:
        raise PolicyError(f"{key}: expected true or false, got {value!r}")
    return value


def _strings(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise PolicyError(f"{key}: expected a list of non-empty strings, got {value!r}")
    return tuple(value)


def _regexes(key: str, value: Any) -> tuple[str, ...]:
    patterns = _strings(key, value)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise PolicyError(
                f"{key}: {pattern!r} is not a valid regular expression: {exc}"
            ) from None
    return patterns


def _scopes(key: str, value: Any) -> tuple[tuple[str, Scope], ...]:
    if not isinstance(value, Mapping):
        raise PolicyError(f"{key}: expected a mapping of {', '.join(SCOPED_REASONS)} to a scope")
    unknown = [reason for reason in value if reason not in SCOPED_REASONS]
    if unknown:
        raise PolicyError(
            f"{key}: unknown reason(s) {', '.join(map(str, unknown))} "
            f"(known: {', '.join(SCOPED_REASONS)})"
        )
    missing = [reason for reason in SCOPED_REASONS if reason not in value]
    if missing:
        raise PolicyError(f"{key}: missing {', '.join(missing)}")
    scopes = []
    for reason in SCOPED_REASONS:
        text = value[reason]
        if not isinstance(text, str) or text.upper() not in Scope.__members__:
            raise PolicyError(f"{key}.{reason}: expected global or tenant, got {text!r}")
        scopes.append((reason, Scope(text.upper())))
    return tuple(scopes)


def _deliverability(key: str, value: Any) -> DeliverabilityPolicy:
    fields = ("windows", "bucket_minutes", "minimum_volume", "recovery_ratio", "thresholds")
    if not isinstance(value, Mapping) or sorted(value) != sorted(fields):
        raise PolicyError(f"{key}: expected a mapping of exactly {', '.join(fields)}")
    bucket_ms = _integer(1)(f"{key}.bucket_minutes", value["bucket_minutes"]) * 60_000
    windows = []
    for text in _strings(f"{key}.windows", value["windows"]):
        try:
            length = parse_duration_ms(text)
        except TimeFormatError as error:
            raise PolicyError(f"{key}.windows: {error}") from None
        if length < bucket_ms or length % bucket_ms:
            raise PolicyError(f"{key}.windows: {text} is not a whole number of buckets")
        windows.append((text, length))
    if not windows or len({name for name, _ in windows}) != len(windows):
        raise PolicyError(f"{key}.windows: expected at least one window, each named once")
    recovery = _number(0, exclusive=True)(f"{key}.recovery_ratio", value["recovery_ratio"])
    if recovery > 1:
        raise PolicyError(f"{key}.recovery_ratio: expected a number in (0, 1], got {recovery!r}")
    levels = value["thresholds"]
    if not isinstance(levels, Mapping) or sorted(levels) != sorted(RATES):
        raise PolicyError(f"{key}.thresholds: expected a mapping of exactly {', '.join(RATES)}")
    thresholds = []
    for rate in RATES:
        level = levels[rate]
        name = f"{key}.thresholds.{rate}"
        if not isinstance(level, Mapping) or sorted(level) != ["critical", "warn"]:
            raise PolicyError(f"{name}: expected a mapping of warn and critical")
        warn = _number(0, exclusive=True)(f"{name}.warn", level["warn"])
        critical = _number(0, exclusive=True)(f"{name}.critical", level["critical"])
        if not warn <= critical <= 1:
            raise PolicyError(f"{name}: expected warn <= critical <= 1, got {warn} and {critical}")
        thresholds.append((rate, Thresholds(warn, critical)))
    return DeliverabilityPolicy(
        windows=tuple(sorted(windows, key=lambda window: window[1])),
        bucket_ms=bucket_ms,
        minimum_volume=_integer(1)(f"{key}.minimum_volume", value["minimum_volume"]),
        recovery_ratio=recovery,
        thresholds=tuple(thresholds),
    )


def _tenant_name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise PolicyError(f"{key}: expected a non-empty tenant name, got {value!r}")
    return value


def _weights(key: str, value: Any) -> ScoreWeights:
    if not isinstance(value, Mapping):
        raise PolicyError(f"{key}: expected a mapping of {', '.join(_WEIGHT_NAMES)}")
    missing = [name for name in _WEIGHT_NAMES if name not in value]
    if missing:
        raise PolicyError(f"{key}: missing {', '.join(missing)}")
    weight = _integer(0)
    return ScoreWeights(**{name: weight(f"{key}.{name}", value[name]) for name in _WEIGHT_NAMES})


_WEIGHT_NAMES = ("delivered", "first_open", "third_open_bonus", "click", "reply")
_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "machine_window_seconds": _number(0),
    "machine_user_agents": _strings,
    "machine_user_agent_patterns": _regexes,
    "unsubscribe_url_patterns": _strings,
    "score": _weights,
    "inactivity_reset_days": _number(0, exclusive=True),
    "soft_bounce_limit": _integer(1),
    "delivery_resets_soft_bounces": _boolean,
    "dedupe_window": _integer(1),
    "max_pending_per_message": _integer(0),
    "reorder_window_events": _integer(1),
    "reorder_window_hours": _number(0),
    "suppression_scopes": _scopes,
    "deliverability": _deliverability,
    "default_tenant": _tenant_name,
    "max_tenants_per_recipient": _integer(1),
}
# The reasons an event causes (an operator's MANUAL suppression takes the scope given with it).
SCOPED_REASONS = ("HARD_BOUNCE", "SOFT_BOUNCE_LIMIT", "COMPLAINT", "UNSUBSCRIBE")
_SECTIONS = ("tenants",)
# Keys of the stream itself, the same for every tenant.
_STREAM_KEYS = (
    "tenants",
    "deliverability",
    "default_tenant",
    "max_tenants_per_recipient",
    "dedupe_window",
    "max_pending_per_message",
)
