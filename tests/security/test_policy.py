"""The egress policy model: the stricter merge, a device that loosens the fleet default, bad keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogline.errors import PolicyError
from fogline.security import (
    DESTINATIONS,
    RAW_LEVELS,
    FieldHasher,
    PrivacyPolicy,
    merge_fleet,
    parse_policy,
    stricter,
)

NAMES = ["label", "score", "image", "position", "item_id", "top_k"]
names = st.lists(st.sampled_from(NAMES), unique=True, max_size=4)


@st.composite
def policies(draw: st.DrawFn) -> PrivacyPolicy:
    fields: dict[str, object] = {"drop": draw(names), "hash": draw(names)}
    if draw(st.booleans()):
        fields["allow"] = draw(names)
    return PrivacyPolicy.model_validate(
        {
            "fields": fields,
            "raw": draw(st.sampled_from(RAW_LEVELS)),
            "redact": draw(st.lists(st.just("faces"), max_size=1)),
            "destinations": draw(st.lists(st.sampled_from(DESTINATIONS), unique=True, min_size=1)),
        }
    )


@given(policies(), policies())
def test_the_merge_lets_out_only_what_both_let_out(a: PrivacyPolicy, b: PrivacyPolicy) -> None:
    merged = stricter(a, b)

    assert merged == stricter(b, a)
    for name in NAMES:
        assert merged.leaves(name) <= (a.leaves(name) and b.leaves(name))
        if merged.leaves(name) and (a.hashed(name) or b.hashed(name)):
            assert merged.hashed(name)  # hashed by either: never in the clear
    assert merged.raw_rank == min(a.raw_rank, b.raw_rank)
    assert set(merged.redact) == set(a.redact) | set(b.redact)
    assert set(merged.destinations) == set(a.destinations) | set(b.destinations)


@given(policies(), policies(), policies())
def test_the_merge_is_associative_and_idempotent(
    a: PrivacyPolicy, b: PrivacyPolicy, c: PrivacyPolicy
) -> None:
    assert stricter(stricter(a, b), c) == stricter(a, stricter(b, c))
    assert stricter(a, a) == a
    assert stricter(a, PrivacyPolicy(destinations=())) == a  # forbids nothing, covers nothing


@given(policies())
def test_a_device_that_only_tightens_gets_the_merge(fleet: PrivacyPolicy) -> None:
    own = PrivacyPolicy.model_validate({"raw": "never", "redact": ["faces"]})

    assert merge_fleet(fleet, own) == stricter(fleet, own)


@pytest.mark.parametrize(
    ("own", "key"),
    [
        ({"raw": "allowed"}, "privacy.raw: 'allowed' is looser than the fleet default 'never'"),
        ({"fields": {"allow": ["image"]}}, "privacy.fields.allow: 'image' is not allowed"),
        ({"fields": {"allow": ["position"]}}, "privacy.fields.allow: 'position' is dropped"),
        ({"destinations": ["mqtt"]}, "privacy.destinations: leaves out 'http'"),
    ],
)
def test_a_device_policy_that_loosens_the_fleet_default_is_refused(
    own: dict[str, object], key: str
) -> None:
    fleet = PrivacyPolicy.model_validate(
        {"raw": "never", "fields": {"allow": ["label", "score"], "drop": ["position"]}}
    )

    with pytest.raises(PolicyError) as refused:
        merge_fleet(fleet, PrivacyPolicy.model_validate(own))

    assert str(refused.value).startswith(key)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"raw": "sometimes"}, "privacy.raw: Input should be 'never', 'captured-only' or"),
        ({"fields": {"keep": ["a"]}}, "privacy.fields.keep: unknown key"),
        ({"redact": ["plates"]}, "privacy.redact.0: Input should be 'faces'"),
        ({"fields": {"drop": ["source"]}}, "privacy.fields.drop: 'source' is part of every"),
    ],
)
def test_a_malformed_policy_names_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        parse_policy(data)


def test_hashing_is_keyed_when_there_is_a_key_and_says_which() -> None:
    keyed, other, plain = FieldHasher(b"a" * 32), FieldHasher(b"b" * 32), FieldHasher(None)

    assert keyed.hash("alice") == keyed.hash("alice") != other.hash("alice")
    assert keyed.hash("alice").startswith("hmac-sha256:")
    assert plain.hash("alice") == (
        "sha256:2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90"
    )
