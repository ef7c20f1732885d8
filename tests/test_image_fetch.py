"""The guarded image fetcher (campaigns/imagefetch.py) against real local servers.

Every refusal is shown twice over: the fetcher says which rule refused, and the
network says nothing was reached (the server counts no accepted connection, and
Python's audit hooks record no socket connect at all). Verdicts on addresses are the
RFCs' (IANA special-purpose registries), written out here by hand.
"""

import ipaddress
import socket

import pytest
import trustme

from campaigns.imagefetch import Limits, address_refusal, fetch_image
from campaigns.images import ImageRefused, verify_image
from tests.image_servers import FIFTY_MB, FILES, PINK, connects, serving, watch_network


def refused(url, **kwargs) -> ImageRefused:
    with pytest.raises(ImageRefused) as caught:
        fetch_image(url, **kwargs)
    return caught.value


@pytest.fixture
def server():
    with serving() as running:
        yield running


@pytest.fixture
def server6():
    with serving("::1") as running:
        yield running


# --- Which addresses are public -----------------------------------------------------------

REFUSED_ADDRESSES = {
    "127.0.0.1": "loopback",
    "127.255.255.254": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "172.31.255.255": "private",
    "192.168.1.1": "private",
    "100.64.0.1": "cgnat",  # carrier-grade NAT, RFC 6598
    "100.127.255.254": "cgnat",
    "169.254.169.254": "metadata",
    "169.254.10.1": "link-local",
    "0.0.0.0": "unspecified",  # noqa: S104 (an address to refuse, not to bind)
    "0.1.2.3": "private",  # "this network"
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "192.0.0.8": "reserved",
    "192.0.2.1": "private",  # documentation
    "198.18.0.1": "private",  # benchmarking
    "::1": "loopback",
    "::": "unspecified",
    "fc00::1": "private",  # unique local
    "fd12:3456::1": "private",
    "fe80::1": "link-local",
    "fe80::1%1": "link-local",
    "fec0::1": "private",  # old site-local
    "ff02::1": "multicast",
    "ff0e::1": "multicast",
    "fd00:ec2::254": "metadata",
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped: judged as 127.0.0.1
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "metadata",
    "64:ff9b::7f00:1": "loopback",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1": "private",  # NAT64 of 10.0.0.1
    "64:ff9b::a9fe:a9fe": "metadata",  # NAT64 of 169.254.169.254
    "64:ff9b:1::1": "private",  # local-use NAT64
    "2002:7f00:1::1": "loopback",  # 6to4 of 127.0.0.1
    "2002:a00:1::1": "private",  # 6to4 of 10.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "private",  # Teredo
    "::127.0.0.1": "reserved",  # old IPv4-compatible form
    "2001:db8::1": "private",  # documentation
}
PUBLIC_ADDRESSES = [
    "8.8.8.8",
    "1.1.1.1",
    "172.32.0.1",  # just past 172.16/12
    "100.128.0.1",  # just past 100.64/10
    "2606:4700:4700::1111",
    "2a00:1450:4001:81c::200e",
    "::ffff:8.8.8.8",  # mapped public IPv4: that address
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
]


@pytest.mark.parametrize(("address", "kind"), sorted(REFUSED_ADDRESSES.items()))
def test_every_non_public_address_is_refused_with_its_kind(address, kind):
    verdict = address_refusal(address)
    assert verdict is not None and verdict[0] == kind, verdict


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_pass(address):
    assert address_refusal(address) is None


def test_ranges_python_calls_global_are_still_refused():
    # ipaddress's is_global says yes to each of these (Python 3.11); the guard says no.
    missed = ["224.0.0.1", "192.0.0.8", "64:ff9b::a00:1", "2002:a00:1::1", "fec0::1", "ff0e::1"]
    for address in missed:
        assert ipaddress.ip_address(address).is_global
        assert address_refusal(address) is not None


# --- Refused before any connection ------------------------------------------------------


def test_loopback_private_metadata_and_ipv6_loopback_are_never_connected(server, server6):
    targets = [
        f"http://127.0.0.1:{server.port}/pink.png",
        "http://10.1.2.3/x.png",
        "http://169.254.169.254/latest/meta-data/",
        f"http://[::1]:{server6.port}/pink.png",
        f"http://localhost:{server.port}/pink.png",  # a name resolving to loopback
        f"http://2130706433:{server.port}/pink.png",  # 127.0.0.1 as one number
        f"http://0x7f.1:{server.port}/pink.png",  # and in hex shorthand
        f"http://[::ffff:127.0.0.1]:{server.port}/pink.png",
        "http://[fe80::1]/x.png",
        "http://100.64.0.1/x.png",
    ]
    with watch_network() as log:
        reasons = [refused(url, allowed_hosts=[]) for url in targets]

    assert [r.code for r in reasons] == ["address"] * len(targets)
    assert "loopback" in reasons[0].message and "127.0.0.1" in reasons[0].message
    assert "metadata" in reasons[2].message
    assert "localhost" in reasons[4].message and "loopback" in reasons[4].message
    assert server.accepted == 0 and server6.accepted == 0
    assert connects(log) == []


def test_with_the_default_setting_nothing_is_allowed(server, settings):
    assert settings.IMAGE_FETCH_ALLOWED_HOSTS == []
    with watch_network() as log:
        reason = refused(f"http://127.0.0.1:{server.port}/pink.png")
    assert reason.code == "address" and server.accepted == 0 and connects(log) == []


def test_an_allowed_host_is_fetched_and_only_on_its_port(server, settings):
    settings.IMAGE_FETCH_ALLOWED_HOSTS = [f"127.0.0.1:{server.port}"]
    fetched = fetch_image(f"http://127.0.0.1:{server.port}/pink.png")
    assert fetched.data == FILES["/pink.png"][1]
    assert server.accepted == 1

    with serving() as other:
        assert refused(f"{other.url}/pink.png").code == "address"
        assert other.accepted == 0


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x.png", "file:///etc/passwd", "gopher://example.com/", "//", "data:,x"],
)
def test_only_http_and_https_are_fetched(url):
    assert refused(url).code in ("scheme", "bad-url")


def test_urls_with_credentials_are_refused_unconnected(server):
    with watch_network() as log:
        reason = refused(
            f"http://user:secret@127.0.0.1:{server.port}/pink.png",
            allowed_hosts=[f"127.0.0.1:{server.port}"],
        )
    assert reason.code == "credentials" and server.accepted == 0 and connects(log) == []


def test_a_name_that_does_not_resolve_is_refused():
    assert refused("http://no-such-host.invalid/x.png").code == "dns"


# --- Redirects --------------------------------------------------------------------------


def test_each_redirect_hop_is_checked_again(server):
    allowed = [f"127.0.0.1:{server.port}"]
    with serving() as second, watch_network() as log:
        hops = {
            "loopback port not allowed": f"http://127.0.0.1:{second.port}/pink.png",
            "private": "http://10.0.0.1/x.png",
            "metadata": "http://169.254.169.254/latest/meta-data/iam/",
            "name of loopback": f"http://localhost:{second.port}/pink.png",
        }
        reasons = {
            why: refused(f"{server.url}/redirect?to={target}", allowed_hosts=allowed)
            for why, target in hops.items()
        }
        assert second.accepted == 0

    assert {why: r.code for why, r in reasons.items()} == dict.fromkeys(hops, "address")
    assert server.accepted == len(hops)  # only the allowed first hop was connected
    assert set(connects(log)) == {("127.0.0.1", server.port)}


def test_a_redirect_within_the_allowed_host_is_followed(server):
    fetched = fetch_image(
        f"{server.url}/redirect?to=/pink.png", allowed_hosts=[f"127.0.0.1:{server.port}"]
    )
    assert fetched.data == FILES["/pink.png"][1]
    assert fetched.url == f"{server.url}/pink.png"


def test_redirect_loops_stop_at_the_limit(server):
    reason = refused(
        f"{server.url}/loop", allowed_hosts=[server.netloc], limits=Limits(redirects=3)
    )
    assert reason.code == "redirects"
    assert server.accepted == 4  # the first request and three redirects


# --- The address checked is the address connected ---------------------------------------


def test_the_name_is_resolved_once_and_the_checked_address_is_connected(server):
    with watch_network() as log:
        fetch_image(f"http://localhost:{server.port}/pink.png", allowed_hosts=["localhost"])

    lookups = [host for kind, host in log if kind == "lookup"]
    assert lookups[0] == "localhost"
    for host in lookups[1:]:  # any later lookup is of an address literal: no DNS
        ipaddress.ip_address(host)
    resolved = {info[4][0] for info in socket.getaddrinfo("localhost", server.port)}
    assert connects(log) and {address[0] for address in connects(log)} <= resolved
    path, headers = server.requests[-1]
    assert path == "/pink.png" and headers["Host"] == f"localhost:{server.port}"
    assert "Cookie" not in headers and "Authorization" not in headers


# --- HTTPS --------------------------------------------------------------------------------


@pytest.fixture
def trusted_ca(tmp_path, monkeypatch):
    """A certificate authority trusted by this process's default TLS context only."""
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    return ca


def tls_server(ca, name):
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(name).configure_cert(context)
    seen = []
    context.sni_callback = lambda sock, server_name, ctx: seen.append(server_name)
    return serving(tls_context=context), seen


def test_https_uses_the_url_s_host_for_sni_host_and_certificate(trusted_ca):
    running, sni = tls_server(trusted_ca, "localhost")
    with running as server:
        url = f"https://localhost:{server.port}/pink.png"
        fetched = fetch_image(url, allowed_hosts=[f"localhost:{server.port}"])
        assert fetched.data == FILES["/pink.png"][1]
        assert sni == ["localhost"]
        assert server.requests[-1][1]["Host"] == f"localhost:{server.port}"


def test_https_with_a_certificate_for_another_name_is_refused(trusted_ca):
    running, _ = tls_server(trusted_ca, "images.example.com")
    with running as server:
        url = f"https://localhost:{server.port}/pink.png"
        reason = refused(url, allowed_hosts=[f"localhost:{server.port}"])
    assert reason.code == "tls"


def test_https_with_an_untrusted_certificate_is_refused(tmp_path):
    running, _ = tls_server(trustme.CA(), "localhost")
    with running as server:
        url = f"https://localhost:{server.port}/pink.png"
        reason = refused(url, allowed_hosts=[f"localhost:{server.port}"])
    assert reason.code == "tls"


# --- Limits and what comes back --------------------------------------------------------------


def test_a_50_mb_image_is_refused_on_its_content_length_without_reading_it(server):
    reason = refused(f"{server.url}/huge.png", allowed_hosts=[server.netloc])
    assert reason.code == "too-big" and "50.0 MB" in reason.message
    assert not server.big_completed
    assert server.big_sent < FIFTY_MB


def test_a_body_without_length_is_cut_off_at_the_limit(server):
    limits = Limits(max_bytes=1_000_000)
    reason = refused(
        f"{server.url}/huge-streamed.png", allowed_hosts=[server.netloc], limits=limits
    )
    assert reason.code == "too-big"
    assert not server.big_completed and server.big_sent < FIFTY_MB


def test_a_server_that_never_answers_times_out(server):
    limits = Limits(total_seconds=1.0)
    reason = refused(f"{server.url}/silent.png", allowed_hosts=[server.netloc], limits=limits)
    assert reason.code == "timeout"


def test_a_trickling_body_meets_the_total_time_limit(server):
    limits = Limits(total_seconds=1.0)
    reason = refused(f"{server.url}/trickle.png", allowed_hosts=[server.netloc], limits=limits)
    assert reason.code == "timeout"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/page.html", "not-image"),
        ("/logo.svg", "svg"),
        ("/missing.png", "http-status"),
    ],
)
def test_responses_that_are_no_image_are_refused_before_decoding(server, path, code):
    reason = refused(f"{server.url}{path}", allowed_hosts=[server.netloc])
    assert reason.code == code


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/bomb.png", "bomb"),  # 30000 × 30000: Pillow's own bomb check
        ("/bomb-8000.png", "bomb"),  # 64 M pixels: under Pillow's, over ours
        ("/corrupt.png", "corrupt"),
        ("/truncated.jpg", "corrupt"),
        ("/svg-as-png.png", "svg"),
    ],
)
def test_fetched_bytes_that_do_not_decode_as_a_safe_image_are_refused(server, path, code):
    fetched = fetch_image(f"{server.url}{path}", allowed_hosts=[server.netloc])
    with pytest.raises(ImageRefused) as caught:
        verify_image(fetched.data)
    assert caught.value.code == code


def test_a_fetched_image_is_decoded_and_re_encoded(server):
    fetched = fetch_image(f"{server.url}/pink.png", allowed_hosts=[server.netloc])
    image = verify_image(fetched.data)
    assert (image.mime, image.width, image.height) == ("image/png", 30, 20)
    assert image.data.startswith(b"\x89PNG")

    from io import BytesIO

    from PIL import Image

    decoded = Image.open(BytesIO(image.data)).convert("RGB")
    assert decoded.getpixel((15, 10)) == PINK
