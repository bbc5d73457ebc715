"""api.model_batching: the predictions of one event-loop turn share one model call, and nobody can tell.

Against the real model server (the answers of a shared call equal XGBoost's own and those of
calls made alone), and against the byte-level servers of test_http_client (what went over the
wire, and every way a shared call can fail).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from api.model_batching import BatchingEndpoint
from api.model_endpoint import (
    HttpModelEndpoint,
    ModelFailed,
    ModelTimeout,
    ModelUnavailable,
    open_model_endpoint,
)
from configuration.network import free_port
from features.contract import FEATURE_COLUMNS
from tests.api.conftest import (
    API_KEY,
    CUSTOMERS,
    MODEL_VERSION,
    THRESHOLD,
    deploy,
    expected_features,
    read_metric,
    reference_probabilities,
    teardown_deployment,
)
from tests.api.test_http_client import Server, ok, run

VERSION = b"X-Amzn-SageMaker-Custom-Attributes: model_version=3; threshold=0.25\r\n"


def batching(url: str, max_rows: int = 32, timeout: float = 2.0, on_shared=None) -> BatchingEndpoint:
    return BatchingEndpoint(HttpModelEndpoint(url, timeout, pool_size=8), max_rows, on_shared)


def scores(body: bytes) -> bytes:
    """A model's answer giving each row its first field / 100: every caller's rows are recognizable."""
    rows = body.decode().splitlines()
    return ok("".join(f"{int(r.split(',')[0]) / 100}\n" for r in rows).encode(), VERSION)


def scoring_server(refuse: bytes | None = None) -> Server:
    """A server answering each request with `scores` of its body; a 400 for a body holding `refuse`."""
    server = Server(None)

    def answer(n, head):
        body = server.bodies[-1]
        if refuse is not None and refuse in body:
            return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 9\r\n\r\nbad row!\n"
        return scores(body)

    server.answer = answer
    return server


def rows_of(*firsts: int) -> list[list]:
    return [[first, 1000.0, 30, 2, 1] for first in firsts]


def test_the_calls_of_one_turn_go_out_as_one_request_and_each_caller_gets_its_own_rows():
    async def main():
        async with scoring_server() as server:
            shared: list[int] = []
            model = batching(f"http://127.0.0.1:{server.port}", on_shared=shared.append)
            calls = [rows_of(1), rows_of(2, 3), rows_of(4), rows_of(5, 6, 7)]
            answers = await asyncio.gather(*(model.predict(rows) for rows in calls))
            await model.aclose()
        assert shared == [4]  # what the API's metrics are told: one shared call, four callers
        assert server.requests == 1
        assert server.bodies[0].decode().splitlines() == [
            f"{first},1000.0,30,2,1" for first in (1, 2, 3, 4, 5, 6, 7)
        ]  # in the order the callers came
        assert [a.probabilities for a in answers] == [[0.01], [0.02, 0.03], [0.04], [0.05, 0.06, 0.07]]
        assert {(a.model_version, a.threshold) for a in answers} == {("3", 0.25)}

    run(main())


def test_a_caller_alone_makes_an_ordinary_call_and_callers_one_after_the_other_never_share():
    async def main():
        async with scoring_server() as server:
            shared: list[int] = []
            model = batching(f"http://127.0.0.1:{server.port}", on_shared=shared.append)
            first = await model.predict(rows_of(8))
            second = await model.predict(rows_of(9))
            await model.aclose()
        assert (first.probabilities, second.probabilities) == ([0.08], [0.09])
        assert server.bodies == [b"8,1000.0,30,2,1\n", b"9,1000.0,30,2,1\n"]
        assert shared == []  # no shared call was made

    run(main())


def test_a_batch_holds_at_most_max_rows_and_a_larger_call_goes_alone():
    async def main():
        async with scoring_server() as server:
            model = batching(f"http://127.0.0.1:{server.port}", max_rows=4)
            calls = [rows_of(1, 2), rows_of(3, 4), rows_of(5, 6), rows_of(7), rows_of(10, 11, 12, 13, 14)]
            answers = await asyncio.gather(*(model.predict(rows) for rows in calls))
            await model.aclose()
        assert sorted(len(body.decode().splitlines()) for body in server.bodies) == [3, 4, 5]
        assert all(len(body.decode().splitlines()) <= 4 for body in server.bodies if b"10," not in body)
        assert [a.probabilities for a in answers] == [
            [0.01, 0.02],
            [0.03, 0.04],
            [0.05, 0.06],
            [0.07],
            [0.1, 0.11, 0.12, 0.13, 0.14],
        ]

    run(main())


def test_explanations_are_never_batched():
    async def main():
        server = Server(lambda n, head: ok(b"0.5\n", VERSION))
        async with server:
            model = batching(f"http://127.0.0.1:{server.port}")
            # The explained answer is not CSV: each call fails to parse, but each was its own request.
            results = await asyncio.gather(
                *(model.predict(rows_of(i), explain=True) for i in range(3)), return_exceptions=True
            )
            await model.aclose()
        assert server.requests == 3
        assert all(isinstance(r, ModelFailed) for r in results)

    run(main())


def test_a_model_error_on_a_shared_call_is_asked_again_alone_so_only_the_bad_rows_fail():
    async def main():
        async with scoring_server(refuse=b"666,") as server:
            model = batching(f"http://127.0.0.1:{server.port}")
            results = await asyncio.gather(
                *(model.predict(rows) for rows in (rows_of(1), rows_of(666), rows_of(2, 3))), return_exceptions=True
            )
            await model.aclose()
        assert results[0].probabilities == [0.01]
        assert isinstance(results[1], ModelFailed) and "400" in str(results[1])
        assert results[2].probabilities == [0.02, 0.03]
        assert server.requests == 4  # the shared call, then each caller alone

    run(main())


def test_a_timeout_or_an_unreachable_model_fails_every_caller_each_with_its_own_error():
    async def main():
        async def slow(n, head):
            await asyncio.sleep(1.0)
            return ok(b"0.5\n")

        async with Server(slow) as server:
            model = batching(f"http://127.0.0.1:{server.port}", timeout=0.2)
            timed_out = await asyncio.gather(*(model.predict(rows_of(i)) for i in range(3)), return_exceptions=True)
            await model.aclose()
        assert server.requests == 1
        assert all(isinstance(r, ModelTimeout) for r in timed_out)
        assert len({id(r) for r in timed_out}) == 3

        model = batching(f"http://127.0.0.1:{free_port()}")  # nothing listens there
        refused = await asyncio.gather(*(model.predict(rows_of(i)) for i in range(3)), return_exceptions=True)
        await model.aclose()
        assert all(isinstance(r, ModelUnavailable) for r in refused)

    run(main())


def test_a_cancelled_caller_leaves_the_call_to_the_others():
    async def main():
        async with scoring_server() as server:
            model = batching(f"http://127.0.0.1:{server.port}")
            # The first caller leads the batch and is cancelled during its turn; the second, while waiting.
            leader = asyncio.ensure_future(model.predict(rows_of(1)))
            await asyncio.sleep(0)  # the leader is in its turn, the batch open
            joiners = [asyncio.ensure_future(model.predict(rows_of(i))) for i in (2, 3, 4)]
            leader.cancel()
            await asyncio.sleep(0)
            joiners[1].cancel()
            done = await asyncio.gather(leader, *joiners, return_exceptions=True)
            await model.aclose()
        assert isinstance(done[0], asyncio.CancelledError) and isinstance(done[2], asyncio.CancelledError)
        assert (done[1].probabilities, done[3].probabilities) == ([0.02], [0.04])
        assert server.requests == 1  # still one shared call, the cancelled callers' rows in it

    run(main())


def test_shared_calls_to_the_real_model_server_answer_xgboosts_own_probabilities(model_server, model_dir):
    rng = np.random.default_rng(5)
    features = [
        {
            "nb_previous_loans": int(rng.integers(0, 30)),
            "avg_amount_loans_previous": None if i % 7 == 0 else float(rng.gamma(2.0, 1500.0)),
            "age": int(rng.integers(20, 70)),
            "years_on_the_job": None if i % 5 == 0 else int(rng.integers(0, 40)),
            "flag_own_car": int(rng.integers(0, 2)),
        }
        for i in range(40)
    ]
    calls = [[[f[name] for name in FEATURE_COLUMNS] for f in features[i : i + 1 + i % 3]] for i in range(0, 40, 4)]

    shared: list[int] = []

    async def main():
        model = batching(model_server.url, on_shared=shared.append)
        together = await asyncio.gather(*(model.predict(rows) for rows in calls))
        await model.aclose()
        alone_endpoint = HttpModelEndpoint(model_server.url, 5.0)
        alone = [await alone_endpoint.predict(rows) for rows in calls]
        await alone_endpoint.aclose()
        return together, alone

    together, alone = run(main())
    assert shared == [len(calls)]  # one shared call, every caller in it
    reference = reference_probabilities(
        model_dir, [features[j] for i in range(0, 40, 4) for j in range(i, i + 1 + i % 3)]
    ).astype(np.float32)
    flat = [p for answer in together for p in answer.probabilities]
    assert np.array_equal(np.array(flat, dtype=np.float32), reference)
    assert [a.probabilities for a in together] == [a.probabilities for a in alone]
    assert {(a.model_version, a.threshold) for a in together} == {(MODEL_VERSION, THRESHOLD)}


@pytest.mark.parametrize("rows, batching_expected", [(32, True), (1, False)])
def test_the_setting_turns_batching_on_or_off(rows, batching_expected, tmp_path):
    from configuration.settings import Settings

    settings = Settings(api={"model_url": "http://127.0.0.1:1", "model_batch_rows": rows})
    endpoint = open_model_endpoint(settings)
    assert isinstance(endpoint, BatchingEndpoint) is batching_expected
    assert endpoint.describe() == "model server http://127.0.0.1:1"


def test_concurrent_requests_to_the_api_share_calls_and_each_gets_its_own_answer(
    request, tmp_path, model_server, model_dir
):
    """Through the API: 32 requests at once, until the metrics show a shared call (the first round, as a rule)."""
    import httpx

    deployed = deploy(tmp_path, request, "sqlite", "sqlite", model_server.url)
    features = expected_features()
    customers = CUSTOMERS[:32]
    reference = dict(zip(customers, reference_probabilities(model_dir, [features[c] for c in customers])))

    async def one_round() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=32)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=deployed.api.url, limits=limits, headers=headers) as client:
            return await asyncio.gather(*(client.get(f"/predict/{c}") for c in customers))

    try:
        for _ in range(10):
            responses = run(one_round())
            for customer, response in zip(customers, responses):
                assert response.status_code == 200, response.text
                assert response.json()["id"] == customer
                assert response.json()["probability"] == pytest.approx(float(reference[customer]), abs=1e-6)
            metrics = deployed.get("/metrics").text
            if read_metric(metrics, "api_model_shared_calls_total") > 0:
                break
        calls = read_metric(metrics, "api_model_shared_calls_total")
        predictions = read_metric(metrics, "api_model_shared_predictions_total")
        assert calls > 0, "32 requests at once, 10 times, and never a shared model call"
        assert 2 * calls <= predictions <= read_metric(metrics, "api_predictions_total")
    finally:
        teardown_deployment(deployed)
