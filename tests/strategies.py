"""Hypothesis strategies that build valid protocol messages (shared by the test suites)."""

from __future__ import annotations

from hypothesis import strategies as st

from protocol.identity import Identity
from protocol.messages import (
    Attestation,
    BlobRequest,
    BlobResponse,
    BlobStatus,
    Capabilities,
    DeclineReason,
    Determinism,
    JobAccept,
    JobDecline,
    JobFormat,
    JobRequest,
    JobSpec,
    Message,
    ModelRef,
    Offer,
    ResultManifest,
)

U64 = st.integers(min_value=0, max_value=2**64 - 1)
U32 = st.integers(min_value=0, max_value=2**32 - 1)
ADDRESS = st.binary(min_size=20, max_size=20)
NONZERO_ADDRESS = ADDRESS.filter(lambda a: a != bytes(20))
HASH = st.binary(min_size=32, max_size=32)
REQUEST_ID = st.binary(min_size=16, max_size=16)
NAME = st.from_regex(r"\A[A-Za-z0-9._:@+/-]{1,64}\Z")
TEXT = st.text(max_size=80)

# A handful of fixed keys: key generation is not what these tests exercise.
IDENTITIES = [Identity.from_private_key(bytes([i + 1]) * 32) for i in range(4)]
identities = st.sampled_from(IDENTITIES)

capabilities = st.builds(
    Capabilities,
    device_class=NAME,
    gpu_model=st.text(max_size=64),
    gpu_memory_mib=U32,
    gpu_count=st.integers(0, 64),
    sandbox_tier=st.integers(0, 3),
    formats=st.lists(st.sampled_from(JobFormat), min_size=1, max_size=2).map(tuple),
    determinism=st.lists(st.sampled_from(Determinism), min_size=1, max_size=3).map(tuple),
    runtimes=st.lists(NAME, min_size=1, max_size=8).map(tuple),
    max_job_bytes=U64,
    max_concurrent_jobs=st.integers(0, 2**16 - 1),
)


@st.composite
def offers(draw: st.DrawFn, client: bytes | None = None) -> Offer:
    return Offer.create(
        draw(identities),
        chain_id=draw(U64),
        contract=draw(ADDRESS),
        price_per_gpu_second=draw(U64),
        nonce=draw(U64),
        expiry=draw(U64),
        capabilities=draw(capabilities),
        client=client if client is not None else draw(ADDRESS),
    )


model_refs = st.builds(
    ModelRef,
    arch=NAME,
    config=st.dictionaries(
        st.from_regex(r"\A[a-z][a-z0-9_]{0,31}\Z"),
        st.integers(-(2**31), 2**31 - 1),
        max_size=8,
    ),
    weights=HASH,
    weights_size=U64,
)

job_specs = st.builds(
    JobSpec,
    format=st.sampled_from(JobFormat),
    model=model_refs,
    inputs=HASH,
    inputs_size=U64,
    determinism=st.sampled_from(Determinism),
    min_sandbox_tier=st.integers(0, 3),
    max_output_bytes=U64,
    max_gpu_millis=U64,
)

job_requests = st.builds(
    JobRequest,
    request_id=REQUEST_ID,
    client=ADDRESS,
    spec=job_specs,
    max_price_per_gpu_second=U64,
    max_payment=U64,
    deadline=U64,
)


@st.composite
def job_accepts(draw: st.DrawFn) -> JobAccept:
    return JobAccept(
        request_id=draw(REQUEST_ID),
        spec_hash=draw(HASH),
        offer=draw(offers(client=draw(NONZERO_ADDRESS))),
        estimated_gpu_millis=draw(U64),
        queue_position=draw(U32),
    )


job_declines = st.builds(
    JobDecline,
    request_id=REQUEST_ID,
    reason=st.sampled_from(DeclineReason),
    message=st.text(max_size=256),
    retry_after=U32,
)


@st.composite
def attestations(
    draw: st.DrawFn, job_id: int | None = None, output: bytes | None = None
) -> Attestation:
    return Attestation.create(
        draw(identities),
        chain_id=draw(U64),
        contract=draw(ADDRESS),
        job_id=draw(U64) if job_id is None else job_id,
        spec_hash=draw(HASH),
        output_hash=draw(HASH) if output is None else output,
        runtime=draw(st.text(min_size=1, max_size=200)),
        determinism=draw(st.sampled_from(Determinism)),
        metered_millis=draw(U64),
    )


@st.composite
def result_manifests(draw: st.DrawFn) -> ResultManifest:
    job_id, output = draw(U64), draw(HASH)
    return ResultManifest(
        job_id=job_id,
        output=output,
        output_size=draw(U64),
        attestation=draw(attestations(job_id=job_id, output=output)),
        peak_memory_bytes=draw(U64),
        wall_millis=draw(U64),
        challenge_end=draw(U64),
        submit_tx=draw(st.one_of(st.just(b""), HASH)),
    )


blob_requests = st.builds(
    BlobRequest,
    cid=HASH,
    offset=U64,
    length=st.integers(1, 1 << 20),
    job_id=U64,
)


@st.composite
def blob_responses(draw: st.DrawFn) -> BlobResponse:
    status = draw(st.sampled_from(BlobStatus))
    if status is not BlobStatus.OK:
        return BlobResponse(cid=draw(HASH), status=status)
    data = draw(st.binary(max_size=4096))
    offset = draw(st.integers(0, 2**40))
    total = draw(st.integers(offset + len(data), 2**63))
    return BlobResponse(cid=draw(HASH), status=status, offset=offset, total_size=total, data=data)


any_message: st.SearchStrategy[Message] = st.one_of(
    offers(),
    job_requests,
    job_accepts(),
    job_declines,
    attestations(),
    result_manifests(),
    blob_requests,
    blob_responses(),
)
