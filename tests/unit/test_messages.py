"""Message round-trips and strict rejection of bad input (property-based)."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocol.errors import (
    BadSignature,
    DecodeError,
    GarbageInput,
    InvalidField,
    MessageTooLarge,
    NonCanonicalEncoding,
    UnknownMessageType,
    UnsupportedVersion,
)
from protocol.messages import (
    MESSAGE_TYPES,
    Attestation,
    JobDecline,
    JobRequest,
    Message,
    Offer,
    ResultManifest,
    decode,
    decode_as,
    encode,
)
from tests import strategies as S

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _raw(message: Message) -> dict[str, Any]:
    raw: dict[str, Any] = msgspec.msgpack.decode(encode(message))
    return raw


def _pack(raw: dict[str, Any]) -> bytes:
    return msgspec.msgpack.encode(raw)


@SETTINGS
@given(S.any_message)
def test_round_trip_is_identity_and_canonical(message: Message) -> None:
    data = encode(message)
    again = decode(data)
    assert again == message
    assert type(again) is type(message)
    assert encode(again) == data
    assert len(data) <= type(message).MAX_BYTES


@SETTINGS
@given(S.any_message)
def test_header_comes_first(message: Message) -> None:
    keys = list(_raw(message))
    assert keys[:2] == ["t", "v"]
    assert _raw(message)["v"] == 1


@SETTINGS
@given(S.any_message, st.data())
def test_every_truncation_is_rejected(message: Message, data: st.DataObject) -> None:
    full = encode(message)
    cut = data.draw(st.integers(0, len(full) - 1))
    with pytest.raises(DecodeError):
        decode(full[:cut])


@SETTINGS
@given(S.any_message)
def test_trailing_bytes_are_rejected(message: Message) -> None:
    with pytest.raises(DecodeError):
        decode(encode(message) + b"\x00")


@pytest.mark.parametrize("tag", sorted(MESSAGE_TYPES))
def test_oversized_input_is_rejected_before_parsing(tag: str) -> None:
    cls = MESSAGE_TYPES[tag]
    header = _pack({"t": tag, "v": 1})
    blob = header + b"\xc0" * (cls.MAX_BYTES + 1 - len(header))
    with pytest.raises(MessageTooLarge) as info:
        decode(blob)
    assert info.value.limit == cls.MAX_BYTES
    with pytest.raises(MessageTooLarge):
        decode(b"\x00" * (max(c.MAX_BYTES for c in MESSAGE_TYPES.values()) + 1))


@SETTINGS
@given(S.any_message, st.integers(2, 2**32))
def test_unknown_version_is_rejected(message: Message, version: int) -> None:
    raw = _raw(message)
    raw["v"] = version
    with pytest.raises(UnsupportedVersion) as info:
        decode(_pack(raw))
    assert info.value.version == version


@SETTINGS
@given(S.any_message, st.text(min_size=1, max_size=30))
def test_unknown_type_is_rejected(message: Message, tag: str) -> None:
    assume(tag not in MESSAGE_TYPES)
    raw = _raw(message)
    raw["t"] = tag
    with pytest.raises(UnknownMessageType):
        decode(_pack(raw))


@SETTINGS
@given(S.any_message, st.from_regex(r"\A[a-z_]{1,12}\Z"))
def test_unknown_field_is_rejected(message: Message, field: str) -> None:
    raw = _raw(message)
    assume(field not in raw)
    raw[field] = 1
    with pytest.raises(InvalidField):
        decode(_pack(raw))


_WRONG_VALUES = [None, True, -1, 2.5, "x", b"\x01", [1], {"k": 1}, 2**63]


@SETTINGS
@given(S.any_message, st.data())
def test_wrong_type_in_any_field_is_rejected(message: Message, data: st.DataObject) -> None:
    raw = _raw(message)
    field = data.draw(st.sampled_from([k for k in raw if k not in ("t", "v")]))
    value = data.draw(st.sampled_from(_WRONG_VALUES))
    assume(type(value) is not type(raw[field]) or value != raw[field])
    raw[field] = value
    try:
        decoded = decode(_pack(raw))
    except DecodeError:
        return
    # The only way a changed value may decode is as a valid value of that field's type.
    assert getattr(decoded, field) == value


@SETTINGS
@given(S.any_message)
def test_missing_field_is_rejected_unless_defaulted(message: Message) -> None:
    raw = _raw(message)
    for field in [k for k in raw if k not in ("t", "v")]:
        partial = {k: v for k, v in raw.items() if k != field}
        try:
            decoded = decode(_pack(partial))
        except DecodeError:
            continue
        # decoding succeeded: the field has a default and the value equals it
        default = type(message).__struct_defaults__
        assert getattr(decoded, field) == getattr(type(message)(**_defaults_probe(message)), field)
        assert default  # only structs with defaults can get here


def _defaults_probe(message: Message) -> dict[str, Any]:
    """Field values of ``message`` without the defaulted ones (to build a default instance)."""
    cls = type(message)
    fields = msgspec.structs.fields(cls)
    return {f.name: getattr(message, f.name) for f in fields if f.required}


@SETTINGS
@given(st.binary(max_size=512))
def test_garbage_never_crashes(blob: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(blob)


@SETTINGS
@given(S.any_message, st.data())
def test_random_byte_flips_never_crash(message: Message, data: st.DataObject) -> None:
    blob = bytearray(encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        decode(bytes(blob))


def test_non_canonical_key_order_is_rejected() -> None:
    decline = JobDecline(request_id=b"r" * 16, reason="price", message="too low")  # type: ignore[arg-type]
    raw = _raw(decline)
    reordered = {"t": raw["t"], "v": raw["v"], **dict(reversed(list(raw.items())[2:]))}
    with pytest.raises(NonCanonicalEncoding):
        decode(_pack(reordered))


def test_non_canonical_integer_width_is_rejected() -> None:
    data = encode(JobDecline(request_id=b"r" * 16, reason="price"))  # type: ignore[arg-type]
    widened = data.replace(b"\xa1v\x01", b"\xa1v\xcc\x01", 1)
    assert widened != data
    with pytest.raises(NonCanonicalEncoding):
        decode(widened)


def test_not_a_map_is_garbage() -> None:
    for blob in (b"", b"\x01", _pack([1, 2]), _pack("offer"), _pack({"t": 1, "v": 1})):
        with pytest.raises(GarbageInput):
            decode(blob)


@SETTINGS
@given(S.offers())
def test_decode_as_enforces_type(offer: Offer) -> None:
    data = encode(offer)
    assert decode_as(data, Offer) == offer
    with pytest.raises(UnknownMessageType):
        decode_as(data, Attestation)
    with pytest.raises(UnknownMessageType):
        decode(data, expect=("attestation",))


@SETTINGS
@given(S.offers(client=bytes(20)), S.job_accepts())
def test_job_accept_requires_client_bound_offer(open_offer: Offer, accept: Any) -> None:
    raw = _raw(accept)
    raw["offer"] = _raw(open_offer)
    with pytest.raises(InvalidField, match="bound to the client"):
        decode(_pack(raw))


@SETTINGS
@given(S.job_accepts(), st.integers(2, 1000))
def test_nested_message_version_is_checked(accept: Any, version: int) -> None:
    raw = _raw(accept)
    raw["offer"]["v"] = version
    with pytest.raises(InvalidField, match="version"):
        decode(_pack(raw))


@SETTINGS
@given(S.result_manifests(), S.HASH)
def test_result_manifest_must_match_its_attestation(manifest: Any, other: bytes) -> None:
    assume(other != manifest.output)
    raw = _raw(manifest)
    raw["output"] = other
    with pytest.raises(InvalidField, match="another output"):
        decode(_pack(raw))


@SETTINGS
@given(S.result_manifests(), st.binary(min_size=1, max_size=1100))
def test_result_manifest_inline_output_must_be_the_output(manifest: Any, data: bytes) -> None:
    raw = _raw(manifest)
    raw["inline"] = data  # almost surely neither the size nor the content id of `output`
    with pytest.raises((InvalidField, MessageTooLarge)):
        decode(_pack(raw))


@SETTINGS
@given(S.job_requests, st.binary(min_size=1, max_size=1100))
def test_job_request_inline_inputs_must_be_the_inputs(request: Any, data: bytes) -> None:
    assume(hashlib.sha256(data).digest() != request.spec.inputs)
    raw = _raw(request)
    raw["inputs_inline"] = data
    with pytest.raises((InvalidField, MessageTooLarge)):
        decode(_pack(raw))


@SETTINGS
@given(S.job_requests)
def test_job_request_carries_small_inputs_inline(request: Any) -> None:
    data = b"safetensors bytes of small inputs"
    spec = msgspec.structs.replace(
        request.spec, inputs=hashlib.sha256(data).digest(), inputs_size=len(data)
    )
    inline = msgspec.structs.replace(request, spec=spec, inputs_inline=data)
    assert decode(encode(inline)) == inline
    with pytest.raises(ValueError, match="inline inputs"):
        JobRequest(
            request_id=request.request_id,
            client=request.client,
            spec=spec,
            max_price_per_gpu_second=request.max_price_per_gpu_second,
            max_payment=request.max_payment,
            deadline=request.deadline,
            inputs_inline=data + b"!",
        )


_SMALL = b"safetensors bytes of a small output"


@SETTINGS
@given(S.attestations(job_id=7, output=hashlib.sha256(_SMALL).digest()))
def test_result_manifest_carries_a_small_output_inline(att: Any) -> None:
    data, digest = _SMALL, hashlib.sha256(_SMALL).digest()
    manifest = ResultManifest(
        job_id=7, output=digest, output_size=len(data), attestation=att, inline=data
    )
    assert decode(encode(manifest)) == manifest
    with pytest.raises(ValueError, match="inline output"):
        ResultManifest(
            job_id=7, output=digest, output_size=len(data) + 1, attestation=att, inline=data
        )


@SETTINGS
@given(S.attestations(job_id=7, output=hashlib.sha256(_SMALL).digest()))
def test_result_manifest_names_a_whole_transaction_hash_or_none(att: Any) -> None:
    digest = hashlib.sha256(_SMALL).digest()
    named = ResultManifest(
        job_id=7, output=digest, output_size=len(_SMALL), attestation=att, submit_tx=b"\x01" * 32
    )
    assert decode(encode(named)) == named
    for bad in (b"\x01", b"\x01" * 31):
        with pytest.raises(ValueError, match="submit_tx"):
            ResultManifest(
                job_id=7, output=digest, output_size=len(_SMALL), attestation=att, submit_tx=bad
            )
    # too long is refused by the decoder's bound, before the struct exists
    wire = encode(named).replace(b"\xc4\x20" + b"\x01" * 32, b"\xc4\x21" + b"\x01" * 33)
    assert wire != encode(named)
    with pytest.raises(DecodeError):
        decode(wire)


@SETTINGS
@given(S.offers())
def test_offer_signature_verifies_and_tampering_breaks_it(offer: Offer) -> None:
    offer.verify()
    for field, value in [
        ("price_per_gpu_second", (offer.price_per_gpu_second + 1) % 2**64),
        ("nonce", (offer.nonce + 1) % 2**64),
        ("expiry", (offer.expiry + 1) % 2**64),
        ("chain_id", (offer.chain_id + 1) % 2**64),
        ("client", bytes(b ^ 1 for b in offer.client)),
        ("contract", bytes(b ^ 1 for b in offer.contract)),
        (
            "capabilities",
            msgspec.structs.replace(
                offer.capabilities, gpu_count=(offer.capabilities.gpu_count + 1) % 65
            ),
        ),
    ]:
        tampered = msgspec.structs.replace(offer, **{field: value})
        with pytest.raises(BadSignature):
            tampered.verify()


@SETTINGS
@given(S.attestations())
def test_attestation_signature_verifies_and_tampering_breaks_it(att: Attestation) -> None:
    att.verify()
    for field, value in [
        ("job_id", (att.job_id + 1) % 2**64),
        ("output_hash", bytes(b ^ 1 for b in att.output_hash)),
        ("spec_hash", bytes(b ^ 1 for b in att.spec_hash)),
        ("runtime", att.runtime + "x" if len(att.runtime) < 200 else "x"),
        ("metered_millis", (att.metered_millis + 1) % 2**64),
        ("determinism", (int(att.determinism) + 1) % 3),
        ("provider", bytes(b ^ 1 for b in att.provider)),
    ]:
        tampered = msgspec.structs.replace(att, **{field: value})
        with pytest.raises(BadSignature):
            tampered.verify()
