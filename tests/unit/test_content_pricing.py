"""Content ids, streaming hashing and chunking; integer pricing."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import pricing
from protocol.content import (
    ContentId,
    StreamingHasher,
    chunk_hashes,
    chunk_spans,
    cid_of,
    hash_stream,
)
from protocol.errors import InvalidField, PricingError


@given(st.binary(max_size=5000), st.integers(1, 700))
def test_streaming_hash_equals_one_shot(data: bytes, step: int) -> None:
    parts = [data[i : i + step] for i in range(0, len(data), step)]
    cid, size = hash_stream(parts)
    assert cid == cid_of(data)
    assert cid.digest == hashlib.sha256(data).digest()
    assert size == len(data)
    assert cid.matches(data)
    assert ContentId.parse(str(cid)) == cid


def test_content_id_text_form() -> None:
    cid = cid_of(b"gpunet")
    text = str(cid)
    assert text == "sha256:" + hashlib.sha256(b"gpunet").hexdigest()
    for bad in ("", text.upper(), text[:-1], "sha512:" + text[7:], "sha256:" + "g" * 64, None):
        with pytest.raises(InvalidField):
            ContentId.parse(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidField):
        ContentId(b"short")


def test_streaming_hasher_enforces_limit() -> None:
    hasher = StreamingHasher(limit=10)
    hasher.update(b"12345")
    with pytest.raises(InvalidField):
        hasher.update(b"123456")
    assert hasher.size == 5


@settings(max_examples=200)
@given(st.integers(0, 10_000), st.integers(1, 3000), st.integers(0, 12_000))
def test_chunk_spans_tile_the_blob(size: int, chunk: int, start: int) -> None:
    spans = list(chunk_spans(size, chunk, start))
    first = (start // chunk) * chunk
    covered = first
    for i, span in enumerate(spans):
        assert span.offset == covered
        assert span.index == first // chunk + i
        assert 0 < span.length <= chunk
        covered += span.length
    assert covered == max(size, first) if spans else first >= size


def test_chunk_hashes() -> None:
    data = bytes(range(256)) * 10
    hashes = chunk_hashes(data, 1000)
    assert len(hashes) == 3
    assert hashes[2] == hashlib.sha256(data[2000:]).digest()


U256 = st.integers(0, 2**256 - 1)


@given(st.integers(0, 2**128), st.integers(0, 2**64), st.integers(0, 2**200))
def test_settlement_conserves_and_caps(price: int, millis: int, max_payment: int) -> None:
    s = pricing.settle(price, millis, max_payment)
    assert s.payment + s.refund == max_payment
    assert s.payment == min(price * millis // 1000, max_payment)
    assert 0 <= s.payment <= max_payment


@given(st.integers(0, 2**128), st.integers(0, 2**64))
def test_max_payment_covers_cost(price: int, millis: int) -> None:
    assert pricing.max_payment_for(price, millis) >= pricing.cost(price, millis)
    assert pricing.max_payment_for(price, millis) - pricing.cost(price, millis) <= 1


def test_pricing_rejects_bad_amounts() -> None:
    for args in [(-1, 1), (1, -1), (2**256, 1), (1.5, 1), (True, 1)]:
        with pytest.raises(PricingError):
            pricing.cost(*args)  # type: ignore[arg-type]
    with pytest.raises(PricingError):
        pricing.cost(2**255, 4)
    with pytest.raises(PricingError):
        pricing.settle(1, 1, -5)
    assert pricing.cost(1500, 999) == 1498  # rounds down, in the client's favour
