"""Person or machine? Reason codes for click and open events, and the reader's device class.

Pure functions over plain facts: no database, no request objects, so ingestion workers,
the rollups' exact recomputation and the tests all judge events the same way.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

import ua_parser

USER_AGENT_RULES_PATH = Path(__file__).parent / "data" / "bot_user_agents.tsv"
# Real user agents stay far below this; matching only a prefix bounds the work and the cache.
MAX_USER_AGENT_LENGTH = 1024
APPLE_NETWORK = ipaddress.IPv4Network("17.0.0.0/8")
# The whole user agent Apple Mail Privacy Protection's proxy sends when it fetches images.
APPLE_MPP_USER_AGENT = "Mozilla/5.0"


class Reason(StrEnum):
    """Why an event is not counted as a person's; NONE means reliable."""

    NONE = ""
    SCANNER_UA = "scanner_ua"
    BOT_UA = "bot_ua"
    TOO_SOON = "too_soon"
    HONEYPOT = "honeypot"
    BURST = "burst"
    PREFETCH = "prefetch"
    HEAD = "head"
    METHOD = "method"  # OPTIONS, POST, …: link checkers and scanners, never a reader
    APPLE_MPP = "apple_mpp"
    PROXY_OPEN = "image_proxy"


@dataclass(frozen=True)
class Thresholds:
    """A workspace's classification settings."""

    min_seconds_after_delivery: int = 2
    burst_links: int = 3
    burst_seconds: int = 2

    def __post_init__(self):
        if self.min_seconds_after_delivery < 0 or self.burst_seconds < 0:
            raise ValueError("classification thresholds cannot be negative")
        if self.burst_links < 2:
            raise ValueError("a burst needs at least two distinct links")


@dataclass(frozen=True)
class ClickFacts:
    """What classification needs to know about one click event (aware datetimes)."""

    event_id: str
    delivery_id: int
    link_id: int
    at: datetime
    delivered_at: datetime | None
    user_agent: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    honeypot: bool = False


@dataclass(frozen=True)
class UserAgentRule:
    pattern: re.Pattern[str]
    reason: Reason
    product: str
    note: str


_RULE_REASONS = {Reason.SCANNER_UA, Reason.BOT_UA, Reason.PROXY_OPEN}
_RULES_HEADER = ["pattern", "reason", "product", "note"]


def load_user_agent_rules(path: Path = USER_AGENT_RULES_PATH) -> tuple[UserAgentRule, ...]:
    """The rules of a TSV file (pattern, reason, product, note), in file order.

    Patterns are lower-case regexes searched in the lower-cased user agent: case
    blind like re.IGNORECASE, several times faster. Lines starting with '#' are
    comments. Raises ValueError naming the line of any malformed row, so a bad edit
    fails at import instead of misclassifying quietly.
    """
    rules: list[UserAgentRule] = []
    header_seen = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        columns = line.split("\t")
        if not header_seen:
            if columns != _RULES_HEADER:
                raise ValueError(f"{path}:{number}: expected header {_RULES_HEADER}")
            header_seen = True
            continue
        if len(columns) != 4 or not columns[0] or columns[1] not in _RULE_REASONS:
            raise ValueError(f"{path}:{number}: expected pattern, reason, product, note")
        if columns[0] != columns[0].lower():
            raise ValueError(f"{path}:{number}: write the pattern in lower case")
        try:
            pattern = re.compile(columns[0])
        except re.error as error:
            raise ValueError(f"{path}:{number}: bad pattern: {error}") from error
        rules.append(UserAgentRule(pattern, Reason(columns[1]), columns[2], columns[3]))
    return tuple(rules)


_RULES = load_user_agent_rules()


@lru_cache(maxsize=1)
def _ua_parser() -> ua_parser.Parser:
    # Own parser, built on first use, so settings elsewhere cannot change our answers.
    return ua_parser.Parser.from_matchers(ua_parser.load_lazy_builtins())


def _clip(user_agent: str) -> str:
    return user_agent[:MAX_USER_AGENT_LENGTH].strip() if isinstance(user_agent, str) else ""


def user_agent_reason(user_agent: str) -> Reason:
    """SCANNER_UA, PROXY_OPEN or BOT_UA when the user agent names a known security
    scanner, webmail image proxy or bot; NONE otherwise.

    The first matching row of tracking/data/bot_user_agents.tsv decides; then
    ua-parser's crawler list; an empty user agent is a bot (browsers always send one).
    Scanners that pose as browsers pass as NONE here: timing, bursts and honeypots
    catch them.
    """
    return _user_agent_reason(_clip(user_agent))


@lru_cache(maxsize=4096)
def _user_agent_reason(user_agent: str) -> Reason:
    if not user_agent:
        return Reason.BOT_UA
    lowered = user_agent.lower()
    for rule in _RULES:
        if rule.pattern.search(lowered):
            return rule.reason
    device = _ua_parser().parse_device(user_agent)
    if device is not None and device.family == "Spider":
        return Reason.BOT_UA
    return Reason.NONE


_DESKTOP_OS = {
    "Windows",
    "Mac OS X",
    "Linux",
    "Ubuntu",
    "Chrome OS",
    "Debian",
    "Fedora",
    "Red Hat",
    "SUSE",
    "Linux Mint",
    "Gentoo",
    "Arch Linux",
    "FreeBSD",
    "OpenBSD",
    "NetBSD",
    "Solaris",
}
_MOBILE_OS = {
    "Windows Phone",
    "BlackBerry OS",
    "BlackBerry Tablet OS",
    "Symbian OS",
    "KaiOS",
    "Firefox OS",
    "HarmonyOS",
}
_OUTLOOK_DESKTOP = re.compile(r"\bMSOffice\b|Microsoft Outlook|ms-office", re.IGNORECASE)
_MOBILE_TOKEN = re.compile(r"\bMobile\b")


def device_class(user_agent: str) -> str:
    """The device class of a user agent: "desktop", "mobile", "tablet", "bot" or "unknown".

    "bot" exactly when user_agent_reason names a scanner or bot, except Apple Mail
    Privacy Protection's bare "Mozilla/5.0", which like webmail image proxies hides
    the reader's device: "unknown". Results are cached: user agents repeat.
    """
    return _device_class(_clip(user_agent))


@lru_cache(maxsize=4096)
def _device_class(user_agent: str) -> str:
    if user_agent == APPLE_MPP_USER_AGENT:
        return "unknown"
    reason = _user_agent_reason(user_agent)
    if reason in (Reason.SCANNER_UA, Reason.BOT_UA):
        return "bot"
    if reason == Reason.PROXY_OPEN:
        return "unknown"
    parsed = _ua_parser()(user_agent, ua_parser.Domain.OS | ua_parser.Domain.DEVICE)
    os_family = parsed.os.family if parsed.os else ""
    device = parsed.device
    family, brand, model = (
        (device.family, device.brand or "", device.model or "") if device else ("", "", "")
    )
    if os_family == "iOS":
        return "tablet" if family.startswith("iPad") else "mobile"
    if os_family == "Android":
        if model == "Smartphone":  # ua-parser's generic phone, e.g. "Outlook-Android/2.0"
            return "mobile"
        if brand == "Generic_Android_Tablet" or "Tablet" in family or family.startswith("Kindle"):
            return "tablet"
        if _MOBILE_TOKEN.search(user_agent):
            return "mobile"
        # Android browsers omit "Mobile" on tablets; app user agents omit it everywhere.
        return "tablet" if user_agent.startswith("Mozilla/") else "mobile"
    if os_family in _MOBILE_OS or model in ("Smartphone", "Feature Phone"):
        return "mobile"
    if os_family in _DESKTOP_OS or family == "Mac" or _OUTLOOK_DESKTOP.search(user_agent):
        return "desktop"
    return "unknown"


_PREFETCH_HEADERS = {"purpose", "sec-purpose", "x-purpose", "x-moz"}
_PREFETCH_VALUES = ("prefetch", "prerender", "preview")


def request_reason(method: str, headers: Mapping[str, str]) -> Reason:
    """HEAD for a HEAD request, METHOD for any other but GET; PREFETCH when a header says
    the browser is prefetching or previewing (Purpose / Sec-Purpose: prefetch, X-Purpose:
    preview, X-Moz: prefetch); NONE otherwise. Header names match in any case, also in
    WSGI form (HTTP_SEC_PURPOSE).
    """
    if method.upper() == "HEAD":
        return Reason.HEAD
    if method.upper() != "GET":
        return Reason.METHOD
    for name, value in headers.items():
        name = name.lower().replace("_", "-")
        name = name.removeprefix("http-")
        if name in _PREFETCH_HEADERS and any(word in value.lower() for word in _PREFETCH_VALUES):
            return Reason.PREFETCH
    return Reason.NONE


def classify_clicks(
    clicks: Sequence[ClickFacts],
    thresholds: Thresholds,
    history: Sequence[ClickFacts] = (),
) -> dict[str, Reason]:
    """event_id -> Reason for every click in `clicks` (Reason.NONE: reliable).

    `history` holds earlier, already classified clicks of the same deliveries: bursts
    and honeypot neighbourhoods are judged over history and clicks together, so a
    burst split across ingestion batches is still found, but only `clicks` get a
    result. Precedence when several reasons apply: HONEYPOT, HEAD, PREFETCH,
    SCANNER_UA / BOT_UA / PROXY_OPEN, TOO_SOON, BURST.

    - honeypot: a click on the invisible honeypot link, and every click of the same
      delivery within burst_seconds of it (scanners click everything);
    - burst: burst_links or more distinct links of one delivery clicked within
      burst_seconds: every click in that window, the first one too;
    - too soon: clicked less than min_seconds_after_delivery after delivery.

    Deterministic and independent of input order. A repeated event_id (at-least-once
    delivery) counts once; ValueError if its copies disagree.
    """
    current = _unique_by_event_id(clicks)
    deliveries = {event.delivery_id for event in current.values()}
    events = {e.event_id: e for e in history if e.delivery_id in deliveries} | current
    by_delivery: dict[int, list[ClickFacts]] = defaultdict(list)
    for event in events.values():
        by_delivery[event.delivery_id].append(event)

    window = timedelta(seconds=thresholds.burst_seconds)
    near_honeypot: set[str] = set()
    in_burst: set[str] = set()
    for sequence in by_delivery.values():
        sequence.sort(key=lambda event: (event.at, event.event_id))
        near_honeypot |= _near_honeypot(sequence, window)
        in_burst |= _in_bursts(sequence, thresholds.burst_links, window)

    too_soon = timedelta(seconds=thresholds.min_seconds_after_delivery)
    return {
        event.event_id: _click_reason(event, near_honeypot, in_burst, too_soon)
        for event in sorted(current.values(), key=lambda event: (event.at, event.event_id))
    }


def verdict_reach(thresholds: Thresholds) -> timedelta:
    """How far in time one click's verdict reaches: the longest distance between two
    clicks of one delivery at which one's presence can change the other's verdict.

    Every rule that looks at other clicks (burst, honeypot neighbourhood) looks only at
    clicks of the same delivery within burst_seconds, both ends included. So a click's
    verdict is classify_clicks over the delivery's clicks within this reach of it, and
    new clicks can change only the verdicts of clicks within this reach of one of them.
    Keep it in step with the rules above: ingestion relies on it.
    """
    return timedelta(seconds=thresholds.burst_seconds)


def _click_reason(
    event: ClickFacts, near_honeypot: set[str], in_burst: set[str], too_soon: timedelta
) -> Reason:
    """The strongest reason that applies, in the documented precedence."""
    if event.honeypot or event.event_id in near_honeypot:
        return Reason.HONEYPOT
    reason = request_reason(event.method, event.headers) or user_agent_reason(event.user_agent)
    if reason:
        return reason
    if event.delivered_at is not None and event.at - event.delivered_at < too_soon:
        return Reason.TOO_SOON
    if event.event_id in in_burst:
        return Reason.BURST
    return Reason.NONE


def _unique_by_event_id(clicks: Sequence[ClickFacts]) -> dict[str, ClickFacts]:
    unique: dict[str, ClickFacts] = {}
    for click in clicks:
        seen = unique.setdefault(click.event_id, click)
        if seen != click:
            raise ValueError(f"event {click.event_id!r} given twice with different facts")
    return unique


def _near_honeypot(sequence: list[ClickFacts], window: timedelta) -> set[str]:
    """Event ids within `window` of a honeypot click (the honeypot clicks included)."""
    traps = [event.at for event in sequence if event.honeypot]
    if not traps:
        return set()
    return {
        event.event_id
        for event in sequence
        if any(abs(event.at - trap) <= window for trap in traps)
    }


def _in_bursts(sequence: list[ClickFacts], min_links: int, window: timedelta) -> set[str]:
    """Event ids of a time-sorted sequence inside some span of at most `window` that
    holds `min_links` or more distinct links.

    Every such span lies inside the longest span starting at its first event, so
    checking those n spans (two pointers, O(n)) finds them all.
    """
    links: Counter[int] = Counter()
    marks = [0] * (len(sequence) + 1)
    end = 0
    for start, first in enumerate(sequence):
        while end < len(sequence) and sequence[end].at - first.at <= window:
            links[sequence[end].link_id] += 1
            end += 1
        if len(links) >= min_links:
            marks[start] += 1
            marks[end] -= 1
        links[first.link_id] -= 1
        if not links[first.link_id]:
            del links[first.link_id]
    flagged, depth = set(), 0
    for index, event in enumerate(sequence):
        depth += marks[index]
        if depth:
            flagged.add(event.event_id)
    return flagged


def classify_open(user_agent: str, ip: str | None) -> Reason:
    """Reason for an open (pixel fetch); NONE when a person's mail client fetched it.

    APPLE_MPP: Apple Mail Privacy Protection's proxy, known by its bare "Mozilla/5.0"
    user agent (whatever the address: it also egresses through partner CDNs), or by
    an address in Apple's 17.0.0.0/8 (full, or truncated like "17.58.12.0" or
    "17.58.x.0"). PROXY_OPEN: a webmail image proxy (Gmail's GoogleImageProxy, Yahoo);
    SCANNER_UA / BOT_UA as user_agent_reason says.
    """
    agent = _clip(user_agent)
    if agent == APPLE_MPP_USER_AGENT:
        return Reason.APPLE_MPP
    reason = _user_agent_reason(agent)
    if reason in (Reason.SCANNER_UA, Reason.PROXY_OPEN):
        return reason
    if _in_apple_network(ip):
        return Reason.APPLE_MPP
    return reason


def _in_apple_network(ip: str | None) -> bool:
    if not isinstance(ip, str):
        return False
    text = ip.strip().split("/", 1)[0]
    parts = text.split(".")
    if len(parts) == 4 and all(_octet_or_wildcard(part) for part in parts):
        # Dotted IPv4, possibly truncated with x or * for the dropped octets.
        return parts[0] == "17"
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address in APPLE_NETWORK


def _octet_or_wildcard(part: str) -> bool:
    return part in ("x", "X", "*") or (part.isascii() and part.isdigit() and int(part) <= 255)
