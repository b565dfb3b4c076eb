"""The headers every request carries, and the secrets that come with them (runner/headers.py)."""

from __future__ import annotations

import re

import pytest

from runner.stream.headers import OPENAI, HeaderError, check_env_name, parse_header, resolve_credentials


def test_json_in_sse_out_and_who_we_are():
    h = resolve_credentials((), key_envs={OPENAI: "K"}, environ={}).for_api(OPENAI)
    assert h["Content-Type"] == "application/json"  # the bug: bytes bodies went out as octet-stream
    assert h["Accept"] == "text/event-stream"
    assert re.fullmatch(r"streamrun/\S+", h["User-Agent"])
    assert "Authorization" not in h


def test_bearer_key_from_the_environment_only_when_asked():
    creds = resolve_credentials((), key_envs={OPENAI: "K"}, environ={"K": "sk-secret"})
    assert creds.for_api(OPENAI)["Authorization"] == "Bearer sk-secret" and creds.secrets == ("sk-secret",)
    assert "Authorization" not in creds.headers  # the key goes only with its own API's requests
    none = resolve_credentials((), key_envs={OPENAI: None}, environ={"K": "sk-secret"})  # --no-auth
    assert "Authorization" not in none.for_api(OPENAI) and none.secrets == ()


def test_user_headers_fill_env_references_and_count_them_as_secrets():
    creds = resolve_credentials(("OpenAI-Organization: ${ORG}", "X-Route: pool-${POOL}-a", "X-Plain: 1"),
                                key_envs={OPENAI: "K"}, environ={"ORG": "org-123", "POOL": "7"})
    assert creds.headers["OpenAI-Organization"] == "org-123"
    assert creds.headers["X-Route"] == "pool-7-a" and creds.headers["X-Plain"] == "1"
    assert set(creds.secrets) == {"org-123", "7"}


def test_a_user_header_may_replace_a_default():
    h = resolve_credentials(("User-Agent: my-pipeline/2",), key_envs={OPENAI: "K"}, environ={}).headers
    assert h["User-Agent"] == "my-pipeline/2"


@pytest.mark.parametrize("text, fragment", [
    ("no-colon", "is not 'Name: value'"),
    (": value", "is not 'Name: value'"),
    ("Bad Name: v", "not a valid HTTP field name"),
    ("X-A: one\r\nX-Injected: two", "line break"),
])
def test_malformed_headers_are_refused(text, fragment):
    with pytest.raises(HeaderError, match=re.escape(fragment)):
        parse_header(text)


def test_a_missing_variable_is_named():
    with pytest.raises(HeaderError, match="ORG_ID is not set"):
        resolve_credentials(("OpenAI-Organization: ${ORG_ID}",), key_envs={OPENAI: "K"}, environ={})


@pytest.mark.parametrize("name, ok", [("OPENAI_API_KEY", True), ("my_key2", True),
                                      ("sk-proj-abc123", False), ("1KEY", False), ("A KEY", False)])
def test_api_key_env_takes_a_variable_name_not_a_key(name, ok):
    if ok:
        assert check_env_name(name) == name
    else:
        with pytest.raises(HeaderError, match="name of an environment variable"):
            check_env_name(name)
