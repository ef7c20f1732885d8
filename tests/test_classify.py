"""Bot and scanner classification of clicks and opens, and device classes."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracking.classify import (
    ClickFacts,
    Reason,
    Thresholds,
    classify_clicks,
    classify_open,
    device_class,
    load_user_agent_rules,
    request_reason,
    user_agent_reason,
    verdict_reach,
)

DELIVERED = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)

# --- real user agents ---------------------------------------------------------------

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
EDGE_WINDOWS = CHROME_WINDOWS + " Edg/126.0.2592.68"
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15"
)
FIREFOX_UBUNTU = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"
CHROME_OS = (
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.0.0 Safari/537.36"
)
OUTLOOK_WINDOWS = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"
OUTLOOK_WINDOWS_MSOFFICE = (
    "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; .NET4.0E; "
    "Microsoft Outlook 16.0.5422; ms-office; MSOffice 16)"
)
OUTLOOK_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Microsoft Outlook 16.83"
)
# Apple Mail: WebKit without a Safari token.
APPLE_MAIL = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)
THUNDERBIRD_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.10.1"
THUNDERBIRD_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"
)
IPHONE_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
# Links opened from the Gmail app on iPhone land in the Google app's browser.
IPHONE_GOOGLE_APP = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) GSA/318.0.636488831 Mobile/15E148 Safari/604.1"
)
OUTLOOK_IOS = "Outlook-iOS/735.7392963.prod.iphone (4.2418.0)"
OUTLOOK_ANDROID = "Outlook-Android/2.0"
# Gmail for Android renders mail and opens links in an Android System WebView.
ANDROID_GMAIL_WEBVIEW = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240805.005; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/127.0.6533.103 Mobile Safari/537.36"
)
ANDROID_CHROME = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
SAMSUNG_INTERNET = (
    "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36"
)
CUBOT_PHONE = (
    "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)
WINDOWS_PHONE = (
    "Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/52.0.2743.116 Mobile Safari/537.36 Edge/15.15063"
)
IPAD_MAIL = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148"
)
GALAXY_TAB = (
    "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
LENOVO_TAB = (
    "Mozilla/5.0 (Linux; Android 12; Lenovo TB-J606F) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
PIXEL_TABLET = (
    "Mozilla/5.0 (Linux; Android 14; Pixel Tablet) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
KINDLE_SILK = (
    "Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Silk/126.4.1 like Chrome/126.0.6478.153 Safari/537.36"
)

GMAIL_IMAGE_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
YAHOO_MAIL_PROXY = (
    "Mozilla/5.0 (compatible; YahooMailProxy; "
    "https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html)"
)
APPLE_MPP = "Mozilla/5.0"

BARRACUDA = "Barracuda Sentinel (EE)"
BING_PREVIEW = (
    "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/534+ (KHTML, like Gecko) BingPreview/1.0b"
)
PALO_ALTO_EXPANSE = (
    "Expanse, a Palo Alto Networks company, searches across the global IPv4 space multiple "
    "times per day to identify customers' presences on the Internet. If you would like to be "
    "excluded from our scans, please send IP addresses/domains to: scaninfo@paloaltonetworks.com"
)
HEADLESS_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/125.0.6422.60 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
PYTHON_REQUESTS = "python-requests/2.31.0"

HUMANS = [
    CHROME_WINDOWS,
    EDGE_WINDOWS,
    SAFARI_MAC,
    FIREFOX_UBUNTU,
    CHROME_OS,
    OUTLOOK_WINDOWS,
    OUTLOOK_WINDOWS_MSOFFICE,
    OUTLOOK_MAC,
    APPLE_MAIL,
    THUNDERBIRD_LINUX,
    THUNDERBIRD_WINDOWS,
    IPHONE_MAIL,
    IPHONE_SAFARI,
    IPHONE_GOOGLE_APP,
    OUTLOOK_IOS,
    OUTLOOK_ANDROID,
    ANDROID_GMAIL_WEBVIEW,
    ANDROID_CHROME,
    SAMSUNG_INTERNET,
    CUBOT_PHONE,
    WINDOWS_PHONE,
    IPAD_MAIL,
    GALAXY_TAB,
    LENOVO_TAB,
    PIXEL_TABLET,
    KINDLE_SILK,
]

# Security gateways mostly fetch with plain browser user agents (Safe Links, Proofpoint,
# Mimecast…): timing, bursts and honeypots catch those. These rows are for the times
# they name themselves. Barracuda's, BingPreview's and Expanse's strings are as
# observed in the wild; the other vendors publish no exact string, so their rows carry
# the product token inside a typical compatible-style agent.
SCANNERS = [
    BARRACUDA,
    BING_PREVIEW,
    PALO_ALTO_EXPANSE,
    "Mozilla/5.0 (compatible; Proofpoint URL Defense)",
    "Mozilla/5.0 (compatible; Mimecast URL Protect)",
    "Mozilla/5.0 (compatible; Cisco-IronPort-ESA)",
    "Mozilla/5.0 (compatible; Cisco Secure Email)",
    "Mozilla/5.0 (compatible; Symantec Click-time URL Protection)",
    "Mozilla/5.0 (compatible; MessageLabs)",
    "Mozilla/5.0 (compatible; Trend Micro Email Security)",
    "Mozilla/5.0 (compatible; TMUFE)",
    "Mozilla/5.0 (compatible; Sophos Time-of-Click)",
    "Mozilla/5.0 (compatible; FortiGuard)",
    "Mozilla/5.0 (compatible; FortiMail)",
    "Mozilla/5.0 (compatible; Check Point Harmony Email)",
    "Mozilla/5.0 (compatible; Avanan)",
    "Mozilla/5.0 (compatible; Zscaler)",
]
BOTS = [
    "",
    "   ",
    APPLE_MPP,  # as a click: no browser sends a bare Mozilla/5.0
    HEADLESS_CHROME,
    "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 "
    "Safari/538.1",
    PYTHON_REQUESTS,
    "Python/3.11 aiohttp/3.9.5",
    "python-urllib3/2.2.3",
    "curl/8.4.0",
    "Wget/1.21.4",
    "Go-http-client/1.1",
    "Go-http-client/2.0",
    "Java/17.0.2",
    "Apache-HttpClient/4.5.13 (Java/11.0.15)",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "axios/1.7.2",
    "lua-resty-http/0.10 (Lua) ngx_lua/10019",
    "Microsoft Office Existence Discovery",
    "Microsoft Office Protocol Discovery",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Twitterbot/1.0",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "WhatsApp/2.23.20.0 A",
    "TelegramBot (like TwitterBot)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5",
    GOOGLEBOT,
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
    "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; NewFeedCrawler/0.3; +https://example.org/about-our-crawler)",
    "W3C-checklink/5.0.0 libwww-perl/6.72",
    "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
]


@pytest.mark.parametrize("user_agent", SCANNERS)
def test_security_scanner_user_agents_are_scanners(user_agent):
    assert user_agent_reason(user_agent) == Reason.SCANNER_UA


@pytest.mark.parametrize("user_agent", BOTS)
def test_bot_user_agents_are_bots(user_agent):
    assert user_agent_reason(user_agent) == Reason.BOT_UA


@pytest.mark.parametrize("user_agent", [GMAIL_IMAGE_PROXY, YAHOO_MAIL_PROXY])
def test_webmail_image_proxies_are_proxies(user_agent):
    assert user_agent_reason(user_agent) == Reason.PROXY_OPEN


@pytest.mark.parametrize("user_agent", HUMANS)
def test_browsers_and_mail_clients_are_people(user_agent):
    assert user_agent_reason(user_agent) == Reason.NONE


def test_crawlers_missing_from_our_list_are_caught_by_ua_parser():
    # ia_archiver has no row in bot_user_agents.tsv; ua-parser knows it.
    assert user_agent_reason("ia_archiver") == Reason.BOT_UA


def test_user_agent_matching_ignores_case():
    assert user_agent_reason("BARRACUDA SENTINEL (EE)") == Reason.SCANNER_UA
    assert user_agent_reason("Python-Requests/2.31.0") == Reason.BOT_UA


def test_first_matching_rule_wins_so_a_named_scanner_is_not_a_generic_bot():
    assert user_agent_reason("Mozilla/5.0 (compatible; Mimecast bot; +https://x.test)") == (
        Reason.SCANNER_UA
    )


def test_very_long_user_agent_is_judged_on_its_start():
    assert user_agent_reason(PYTHON_REQUESTS + " " + "x" * 100_000) == Reason.BOT_UA
    assert user_agent_reason(CHROME_WINDOWS + " " + "x" * 100_000) == Reason.NONE


# --- the rules file -----------------------------------------------------------------

HEADER = "pattern\treason\tproduct\tnote\n"


@pytest.mark.parametrize(
    "row",
    [
        "barracuda\tscanner\tBarracuda\t\n",  # unknown reason
        "Barracuda\tscanner_ua\tBarracuda\t\n",  # upper case pattern
        "barracuda(\tscanner_ua\tBarracuda\t\n",  # not a regex
        "barracuda\tscanner_ua\tBarracuda\n",  # three columns
        "\tscanner_ua\tBarracuda\t\n",  # empty pattern
    ],
)
def test_malformed_rule_rows_fail_loudly_with_their_line(tmp_path, row):
    path = tmp_path / "rules.tsv"
    path.write_text("# comment\n" + HEADER + row)

    with pytest.raises(ValueError, match=r"rules\.tsv:3"):
        load_user_agent_rules(path)


def test_rules_file_without_header_is_refused(tmp_path):
    path = tmp_path / "rules.tsv"
    path.write_text("barracuda\tscanner_ua\tBarracuda\t\n")

    with pytest.raises(ValueError, match="header"):
        load_user_agent_rules(path)


def test_rules_file_rows_load_in_order(tmp_path):
    path = tmp_path / "rules.tsv"
    path.write_text(HEADER + "b\\w+\tbot_ua\tB\tnote b\n\n# c\na\tscanner_ua\tA\t\n")

    rules = load_user_agent_rules(path)

    assert [(r.pattern.pattern, r.reason, r.product, r.note) for r in rules] == [
        ("b\\w+", Reason.BOT_UA, "B", "note b"),
        ("a", Reason.SCANNER_UA, "A", ""),
    ]


def test_shipped_rules_file_loads():
    assert len(load_user_agent_rules()) >= 30


# --- device classes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "expected"),
    [
        (OUTLOOK_WINDOWS, "desktop"),
        (OUTLOOK_WINDOWS_MSOFFICE, "desktop"),
        ("Mozilla/4.0 (compatible; ms-office; MSOffice 16)", "desktop"),
        (OUTLOOK_MAC, "desktop"),
        (APPLE_MAIL, "desktop"),
        (THUNDERBIRD_LINUX, "desktop"),
        (THUNDERBIRD_WINDOWS, "desktop"),
        (CHROME_WINDOWS, "desktop"),
        (EDGE_WINDOWS, "desktop"),
        (SAFARI_MAC, "desktop"),
        (FIREFOX_UBUNTU, "desktop"),
        (CHROME_OS, "desktop"),
        (IPHONE_MAIL, "mobile"),
        (IPHONE_SAFARI, "mobile"),
        (IPHONE_GOOGLE_APP, "mobile"),
        (OUTLOOK_IOS, "mobile"),
        (OUTLOOK_ANDROID, "mobile"),
        (ANDROID_GMAIL_WEBVIEW, "mobile"),
        (ANDROID_CHROME, "mobile"),
        (SAMSUNG_INTERNET, "mobile"),
        (CUBOT_PHONE, "mobile"),
        (WINDOWS_PHONE, "mobile"),
        (IPAD_MAIL, "tablet"),
        (GALAXY_TAB, "tablet"),
        (LENOVO_TAB, "tablet"),
        (PIXEL_TABLET, "tablet"),
        (KINDLE_SILK, "tablet"),
        (GOOGLEBOT, "bot"),
        (HEADLESS_CHROME, "bot"),
        (PYTHON_REQUESTS, "bot"),
        (BARRACUDA, "bot"),
        ("", "bot"),
        (GMAIL_IMAGE_PROXY, "unknown"),
        (YAHOO_MAIL_PROXY, "unknown"),
        (APPLE_MPP, "unknown"),
        ("okhttp/4.12.0", "unknown"),
    ],
)
def test_device_class(user_agent, expected):
    assert device_class(user_agent) == expected


@pytest.mark.parametrize("user_agent", HUMANS + SCANNERS + BOTS)
def test_device_class_is_bot_exactly_when_the_user_agent_is_a_scanner_or_bot(user_agent):
    is_machine = user_agent_reason(user_agent) in (Reason.SCANNER_UA, Reason.BOT_UA)

    assert (device_class(user_agent) == "bot") == (is_machine and user_agent != APPLE_MPP)


# --- request reasons ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {}, Reason.NONE),
        ("HEAD", {}, Reason.HEAD),
        ("head", {}, Reason.HEAD),
        ("GET", {"Purpose": "prefetch"}, Reason.PREFETCH),
        ("GET", {"Sec-Purpose": "prefetch"}, Reason.PREFETCH),
        ("GET", {"Sec-Purpose": "prefetch;prerender"}, Reason.PREFETCH),
        ("GET", {"sec-purpose": "Prefetch;anonymous-client-ip"}, Reason.PREFETCH),
        ("GET", {"X-Purpose": "preview"}, Reason.PREFETCH),
        ("GET", {"X-Moz": "prefetch"}, Reason.PREFETCH),
        ("GET", {"HTTP_SEC_PURPOSE": "prefetch"}, Reason.PREFETCH),
        ("GET", {"Referer": "https://example.com/prefetch"}, Reason.NONE),
        ("GET", {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}, Reason.NONE),
        ("POST", {}, Reason.METHOD),  # a reader's click is a GET; link checkers vary
        ("OPTIONS", {}, Reason.METHOD),
        ("options", {"Purpose": "prefetch"}, Reason.METHOD),
    ],
)
def test_request_reason(method, headers, expected):
    assert request_reason(method, headers) == expected


# --- clicks -------------------------------------------------------------------------


def click(event_id, link_id, seconds, delivery_id=1, user_agent=CHROME_WINDOWS, **fields):
    """A click `seconds` after delivery."""
    return ClickFacts(
        event_id=event_id,
        delivery_id=delivery_id,
        link_id=link_id,
        at=DELIVERED + timedelta(seconds=seconds),
        delivered_at=DELIVERED,
        user_agent=user_agent,
        **fields,
    )


DEFAULTS = Thresholds()


def test_a_persons_clicks_minutes_apart_are_all_reliable():
    clicks = [
        click("a", 1, 8 * 60, user_agent=CHROME_WINDOWS),
        click("b", 2, 11 * 60, user_agent=CHROME_WINDOWS),
        click("c", 3, 25 * 60, user_agent=CHROME_WINDOWS),
        click("d", 1, 3 * 3600, delivery_id=2, user_agent=SAFARI_MAC),
        click("e", 4, 3 * 3600 + 90, delivery_id=2, user_agent=SAFARI_MAC),
        click("f", 2, 2 * 86400, delivery_id=3, user_agent=IPHONE_SAFARI),
        # Outlook desktop opens links in the default browser; Edge here.
        click("g", 1, 40 * 60, delivery_id=4, user_agent=EDGE_WINDOWS),
    ]

    assert classify_clicks(clicks, DEFAULTS) == dict.fromkeys("abcdefg", Reason.NONE)


def test_sub_second_click_after_delivery_is_too_soon():
    # A scanner posing as Chrome: only its timing gives it away.
    result = classify_clicks(
        [click("scan", 1, 0.4), click("person", 1, 600, delivery_id=2)], DEFAULTS
    )

    assert result == {"scan": Reason.TOO_SOON, "person": Reason.NONE}


def test_too_soon_boundary_is_exclusive():
    clicks = [click("early", 1, 1.999), click("on-time", 1, 2, delivery_id=2)]

    assert classify_clicks(clicks, DEFAULTS) == {"early": Reason.TOO_SOON, "on-time": Reason.NONE}


def test_click_before_the_recorded_delivery_time_is_too_soon():
    assert classify_clicks([click("skewed", 1, -5)], DEFAULTS) == {"skewed": Reason.TOO_SOON}


def test_click_with_unknown_delivery_time_is_never_too_soon():
    early = ClickFacts("x", 1, 1, DELIVERED, None, CHROME_WINDOWS)

    assert classify_clicks([early], DEFAULTS) == {"x": Reason.NONE}


def test_honeypot_click_flags_itself_and_the_deliverys_clicks_around_it():
    clicks = [
        click("before", 1, 99.0),
        click("trap", 0, 100.0, honeypot=True),
        click("after", 2, 101.5),
        click("edge", 3, 102.0),
        click("later", 1, 110.0),
        click("other-delivery", 1, 100.2, delivery_id=2),
    ]

    assert classify_clicks(clicks, DEFAULTS) == {
        "before": Reason.HONEYPOT,
        "trap": Reason.HONEYPOT,
        "after": Reason.HONEYPOT,
        "edge": Reason.HONEYPOT,
        "later": Reason.NONE,
        "other-delivery": Reason.NONE,
    }


def test_honeypot_click_in_history_flags_the_next_batch():
    history = [click("trap", 0, 100.0, honeypot=True)]

    result = classify_clicks([click("next", 1, 101.0)], DEFAULTS, history=history)

    assert result == {"next": Reason.HONEYPOT}


def test_three_distinct_links_within_two_seconds_are_a_burst_including_the_first():
    clicks = [click("first", 1, 300.0), click("second", 2, 300.7), click("third", 3, 301.5)]

    assert classify_clicks(clicks, DEFAULTS) == dict.fromkeys(
        ["first", "second", "third"], Reason.BURST
    )


def test_every_click_inside_a_burst_window_is_flagged_repeats_included():
    clicks = [
        click("a", 1, 300.0),
        click("a-again", 1, 300.3),
        click("b", 2, 300.6),
        click("c", 3, 301.0),
        click("calm", 1, 400.0),
    ]

    result = classify_clicks(clicks, DEFAULTS)

    assert result == {
        "a": Reason.BURST,
        "a-again": Reason.BURST,
        "b": Reason.BURST,
        "c": Reason.BURST,
        "calm": Reason.NONE,
    }


def test_two_distinct_links_are_not_a_burst_of_three():
    clicks = [click("a", 1, 300.0), click("b", 2, 300.5)]

    assert classify_clicks(clicks, DEFAULTS) == {"a": Reason.NONE, "b": Reason.NONE}


def test_same_link_clicked_five_times_quickly_is_not_a_burst_of_distinct_links():
    clicks = [click(f"c{n}", 7, 300 + n * 0.2) for n in range(5)]

    assert set(classify_clicks(clicks, DEFAULTS).values()) == {Reason.NONE}


def test_burst_window_includes_its_end():
    clicks = [click("a", 1, 300.0), click("b", 2, 301.0), click("c", 3, 302.0)]

    assert set(classify_clicks(clicks, DEFAULTS).values()) == {Reason.BURST}


def test_three_links_spread_over_more_than_the_window_are_not_a_burst():
    clicks = [click("a", 1, 300.0), click("b", 2, 301.0), click("c", 3, 302.5)]

    assert set(classify_clicks(clicks, DEFAULTS).values()) == {Reason.NONE}


def test_burst_spanning_two_ingestion_batches_is_found_through_history():
    history = [click("old-1", 1, 300.0), click("old-2", 2, 300.5)]

    result = classify_clicks([click("new", 3, 301.0)], DEFAULTS, history=history)

    assert result == {"new": Reason.BURST}


def test_bursts_are_judged_per_delivery():
    clicks = [click("a", 1, 300.0, delivery_id=1), click("b", 2, 300.3, delivery_id=2)]
    clicks.append(click("c", 3, 300.6, delivery_id=3))

    assert set(classify_clicks(clicks, DEFAULTS).values()) == {Reason.NONE}


def test_thresholds_are_per_workspace_settings():
    clicks = [
        click("a", 1, 30.0),
        click("b", 2, 33.0),
        click("c", 3, 34.0),
    ]

    assert set(classify_clicks(clicks, DEFAULTS).values()) == {Reason.NONE}
    assert classify_clicks(clicks, Thresholds(burst_seconds=5)) == dict.fromkeys(
        "abc", Reason.BURST
    )
    assert set(classify_clicks(clicks, Thresholds(burst_seconds=5, burst_links=4)).values()) == {
        Reason.NONE
    }
    assert classify_clicks(clicks, Thresholds(min_seconds_after_delivery=60)) == dict.fromkeys(
        "abc", Reason.TOO_SOON
    )


def test_wider_burst_window_widens_the_honeypot_neighbourhood():
    clicks = [click("trap", 0, 100.0, honeypot=True), click("near", 1, 104.0)]

    assert classify_clicks(clicks, DEFAULTS)["near"] == Reason.NONE
    assert classify_clicks(clicks, Thresholds(burst_seconds=5))["near"] == Reason.HONEYPOT


@pytest.mark.parametrize(
    "thresholds",
    [
        {"min_seconds_after_delivery": -1},
        {"burst_seconds": -1},
        {"burst_links": 1},
    ],
)
def test_nonsensical_thresholds_are_refused(thresholds):
    with pytest.raises(ValueError):
        Thresholds(**thresholds)


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        # honeypot beats everything
        ({"honeypot": True, "method": "HEAD", "user_agent": BARRACUDA}, Reason.HONEYPOT),
        # HEAD beats prefetch, user agent, timing and bursts
        ({"method": "HEAD", "headers": {"Purpose": "prefetch"}}, Reason.HEAD),
        ({"method": "HEAD", "user_agent": BARRACUDA}, Reason.HEAD),
        ({"headers": {"Sec-Purpose": "prefetch"}, "user_agent": BARRACUDA}, Reason.PREFETCH),
        ({"user_agent": BARRACUDA}, Reason.SCANNER_UA),
        ({"user_agent": PYTHON_REQUESTS}, Reason.BOT_UA),
        ({}, Reason.TOO_SOON),
    ],
)
def test_precedence_of_reasons(facts, expected):
    # A click 0.5 s after delivery, inside a burst of three links.
    subject = click("subject", 1, 0.5, **facts)
    others = [click("x", 2, 0.7), click("y", 3, 0.9)]

    assert classify_clicks([subject, *others], DEFAULTS)["subject"] == expected


def test_burst_is_reported_when_nothing_stronger_applies():
    clicks = [click("a", 1, 60.0), click("b", 2, 60.5, user_agent=BARRACUDA), click("c", 3, 61)]

    assert classify_clicks(clicks, DEFAULTS) == {
        "a": Reason.BURST,
        "b": Reason.SCANNER_UA,
        "c": Reason.BURST,
    }


def test_only_the_batchs_clicks_get_a_result():
    history = [click("old", 1, 300.0)]

    assert classify_clicks([click("new", 2, 900.0)], DEFAULTS, history=history).keys() == {"new"}


def test_an_event_delivered_twice_counts_once():
    twice = click("dup", 1, 300.0)

    assert classify_clicks([twice, twice, click("b", 2, 300.5)], DEFAULTS) == {
        "dup": Reason.NONE,
        "b": Reason.NONE,
    }


def test_an_event_id_with_conflicting_facts_is_refused():
    with pytest.raises(ValueError, match="dup"):
        classify_clicks([click("dup", 1, 300.0), click("dup", 2, 300.0)], DEFAULTS)


_random_clicks = st.lists(
    st.builds(
        lambda n, delivery, link, tenths, honeypot, ua: click(
            f"e{n}", link, tenths / 10, delivery_id=delivery, honeypot=honeypot, user_agent=ua
        ),
        n=st.integers(0, 10**6),
        delivery=st.integers(1, 3),
        link=st.integers(1, 5),
        tenths=st.integers(-20, 200),
        honeypot=st.integers(0, 9).map(lambda n: n == 0),
        ua=st.sampled_from([CHROME_WINDOWS, IPHONE_SAFARI, BARRACUDA]),
    ),
    max_size=25,
    unique_by=lambda c: c.event_id,
)


@given(clicks=_random_clicks, split=st.integers(0, 25), seed=st.integers(0, 2**32))
def test_classification_is_independent_of_order_and_batching(clicks, split, seed):
    shuffled = list(clicks)
    random.Random(seed).shuffle(shuffled)
    whole = classify_clicks(clicks, DEFAULTS)

    assert classify_clicks(shuffled, DEFAULTS) == whole
    # Judging a later batch against the earlier one as history gives the same answers.
    ordered = sorted(clicks, key=lambda c: (c.at, c.event_id))
    earlier, later = ordered[:split], ordered[split:]
    assert classify_clicks(later, DEFAULTS, history=earlier) == {
        c.event_id: whole[c.event_id] for c in later
    }


@settings(deadline=None)  # the first call loads the user agent parser
@given(
    clicks=_random_clicks,
    limits=st.builds(Thresholds, burst_links=st.integers(2, 4), burst_seconds=st.integers(0, 4)),
)
def test_a_verdict_depends_only_on_the_clicks_within_its_reach(clicks, limits):
    whole = classify_clicks(clicks, limits)
    reach = verdict_reach(limits)
    for subject in clicks:
        near = [c for c in clicks if abs(c.at - subject.at) <= reach]
        assert classify_clicks(near, limits)[subject.event_id] == whole[subject.event_id]
    # …and reaches that far: clicks exactly `reach` apart can make a burst.
    pair = [click("a", 1, 100.0), click("b", 2, 100.0 + reach.total_seconds())]
    pair_limits = Thresholds(burst_links=2, burst_seconds=limits.burst_seconds)
    assert set(classify_clicks(pair, pair_limits).values()) == {Reason.BURST}


# --- opens --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "ip", "expected"),
    [
        (APPLE_MPP, "17.58.101.23", Reason.APPLE_MPP),
        (APPLE_MPP, None, Reason.APPLE_MPP),
        (APPLE_MPP, "104.28.55.12", Reason.APPLE_MPP),  # MPP also egresses via partner CDNs
        (APPLE_MAIL, "17.58.101.23", Reason.APPLE_MPP),
        (APPLE_MAIL, "17.58.101.0", Reason.APPLE_MPP),  # stored truncated to /24
        (APPLE_MAIL, "17.58.x.0", Reason.APPLE_MPP),
        (APPLE_MAIL, "17.58.101.0/24", Reason.APPLE_MPP),
        (APPLE_MAIL, "::ffff:17.58.101.23", Reason.APPLE_MPP),
        ("", "17.58.101.23", Reason.APPLE_MPP),
        (APPLE_MAIL, "203.0.113.5", Reason.NONE),
        (APPLE_MAIL, "117.58.101.23", Reason.NONE),
        (APPLE_MAIL, "170.58.101.23", Reason.NONE),
        (APPLE_MAIL, "2001:db8::17", Reason.NONE),
        (APPLE_MAIL, "17.999.1.1", Reason.NONE),
        (APPLE_MAIL, "not an address", Reason.NONE),
        (APPLE_MAIL, None, Reason.NONE),
        (IPHONE_MAIL, "198.51.100.7", Reason.NONE),
        (OUTLOOK_WINDOWS, "198.51.100.7", Reason.NONE),
        (THUNDERBIRD_LINUX, None, Reason.NONE),
        (GMAIL_IMAGE_PROXY, "66.249.84.1", Reason.PROXY_OPEN),
        (GMAIL_IMAGE_PROXY, "17.58.101.23", Reason.PROXY_OPEN),
        (YAHOO_MAIL_PROXY, "98.136.1.1", Reason.PROXY_OPEN),
        (BARRACUDA, "64.235.144.1", Reason.SCANNER_UA),
        (PYTHON_REQUESTS, "198.51.100.7", Reason.BOT_UA),
        ("", None, Reason.BOT_UA),
    ],
)
def test_classify_open(user_agent, ip, expected):
    assert classify_open(user_agent, ip) == expected
