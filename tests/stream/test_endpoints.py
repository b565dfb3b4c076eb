"""runner.stream.endpoints: base URL checks, loopback detection, credentials in URLs, and the endpoint pool.

(Joining a base URL with an API path is the client's: tests/stream/test_client.py.
The pool's least-in-flight choice is also exercised end to end in tests/test_scale_out.py.)
"""

from __future__ import annotations

import pytest

from runner.stream.endpoints import EndpointPool, check_base_url, is_loopback, public_url, url_secrets


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/v1",
    "https://api.openai.com/v1",
    "http://[::1]:8000/v1",
    "https://gw.example.com/openai/v1/",
    "http://h:1",  # no /v1: some servers live at the root
])
def test_check_base_url_accepts_base_urls(url):
    assert check_base_url(url) == url
    assert check_base_url(f"  {url}\n") == url  # pasted with blanks around it


@pytest.mark.parametrize("url, message", [
    ("localhost:8000/v1", "has no scheme: did you mean --base-url http://localhost:8000/v1?"),
    ("127.0.0.1:8000", "has no scheme: did you mean --base-url http://127.0.0.1:8000?"),
    ("ftp://h/v1", "must be http:// or https:// with a host"),
    ("http:///v1", "must be http:// or https:// with a host"),
    ("http://h:1/v1/chat/completions", "ends in /chat/completions: give the base, --base-url http://h:1/v1;"),
    ("http://h:1/v1/completions/", "ends in /completions: give the base, --base-url http://h:1/v1;"),
    ("http://h/v1/chat/completions?api-version=1", "--base-url http://h/v1;"),  # the query goes too
    ("http://h/responses", "ends in /responses: give the base, --base-url http://h;"),
    ("https://h/v1/messages", "ends in /messages"),
    ("https://h/v1/embeddings", "ends in /embeddings"),
])
def test_check_base_url_refuses_with_the_fix(url, message):
    with pytest.raises(ValueError) as info:
        check_base_url(url)
    assert message in str(info.value) and repr(url) in str(info.value)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/v1", "http://127.9.9.9/v1", "http://[::1]:8000/v1", "http://localhost/v1",
    "http://LOCALHOST:1/v1", "http://api.localhost/v1",
])
def test_loopback_urls(url):
    assert is_loopback(url)


@pytest.mark.parametrize("url", [
    "http://10.0.0.1/v1", "http://192.168.1.2/v1", "http://0.0.0.0:8000/v1", "https://api.openai.com/v1",
    "http://localhost.example.com/v1", "http://mylocalhost/v1", "http://[2001:db8::1]/v1",
])
def test_other_urls_are_not_loopback(url):
    assert not is_loopback(url)


def test_credentials_in_a_url_are_stripped_and_secret():
    import aiohttp
    from yarl import URL

    url = "https://user:s3cr3t-pass@gw.example.com/v1"
    assert public_url(url) == "https://gw.example.com/v1"
    basic = aiohttp.BasicAuth.from_url(URL(url)).encode().removeprefix("Basic ")  # what the server is sent
    assert url_secrets(url) == ("s3cr3t-pass", basic)
    escaped = "https://user:p%40ss-w0rd@gw.example.com/v1"  # as written, and as sent: p@ss-w0rd
    assert set(url_secrets(escaped)) == {"p@ss-w0rd", "p%40ss-w0rd",
                                         aiohttp.BasicAuth.from_url(URL(escaped)).encode().removeprefix("Basic ")}
    assert public_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"  # untouched without them
    assert url_secrets("http://user@h/v1") == ()


def test_pool_backoff_doubles_per_failure_and_is_capped():
    clock = [0.0]
    pool = EndpointPool(["a", "b"], threshold=1, base_backoff=2, max_backoff=5, now=lambda: clock[0])
    a = pool.endpoints[0]
    downs = []
    for _ in range(4):
        a.in_flight += 1
        pool.release(a, failed=True)
        downs.append(a.down_until)
    assert downs == [2.0, 4.0, 5.0, 5.0]
    assert (a.failures, a.streak) == (4, 4)


def test_pool_uses_the_soonest_back_when_all_are_down():
    clock = [0.0]
    pool = EndpointPool(["a", "b"], threshold=1, base_backoff=10, now=lambda: clock[0])
    a, b = pool.endpoints
    for ep, n in ((a, 2), (b, 1)):  # a: down until 20, b: until 10
        for _ in range(n):
            ep.in_flight += 1
            pool.release(ep, failed=True)
    assert pool.acquire() is b  # a run never stalls on its own bookkeeping


def test_a_single_endpoint_is_never_backed_off():
    pool = EndpointPool(["http://u:pw@only/v1"], threshold=1, now=lambda: 0.0)
    (ep,) = pool.endpoints
    for _ in range(5):
        assert pool.acquire() is ep
        pool.release(ep, failed=True)
    assert ep.down_until == 0.0 and ep.in_flight == 0
    assert pool.stats() == [{"url": "http://only/v1", "requests": 5, "failures": 5}]
    with pytest.raises(ValueError):
        EndpointPool([])
