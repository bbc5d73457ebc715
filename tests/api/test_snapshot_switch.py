"""A new feature snapshot is materialized while requests are being answered: no answer mixes two snapshots."""

from __future__ import annotations

import threading

import httpx

from tests.api.conftest import API_KEY, CUSTOMERS, materialize_generation


def generation_of(run_id: str) -> int:
    return int(run_id.rsplit("-", 1)[1])


def test_answers_during_snapshot_switches_come_from_one_snapshot(deployment):
    materialize_generation(deployment.settings, 0, run_id="gen-0")
    stop = threading.Event()
    problems: list[str] = []
    seen_runs: set[str] = set()
    counts = [0]

    def client(offset: int) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        ids = CUSTOMERS[offset : offset + 80]
        with httpx.Client(base_url=deployment.api.url, headers=headers, timeout=30) as http:
            while not stop.is_set():
                batch = http.post("/predict", json={"ids": ids})
                one = http.get(f"/predict/{ids[counts[0] % len(ids)]}")
                counts[0] += 1
                if batch.status_code != 200 or one.status_code != 200:
                    problems.append(
                        f"status {batch.status_code}/{one.status_code}: {batch.text[:200]} {one.text[:200]}"
                    )
                    return
                predictions = batch.json()["predictions"]
                runs = {p["feature_snapshot"]["run_id"] for p in predictions}
                if len(runs) != 1 or len(predictions) != len(ids):
                    problems.append(f"one answer mixed snapshots {sorted(runs)} or lost ids")
                    return
                for p in [*predictions, one.json()]:
                    run_id = p["feature_snapshot"]["run_id"]
                    seen_runs.add(run_id)
                    if p["features"]["nb_previous_loans"] // 1000 != generation_of(run_id):
                        problems.append(f"features of another snapshot answered under {run_id}")
                        return

    threads = [threading.Thread(target=client, args=(offset,)) for offset in (0, 100, 200)]
    for thread in threads:
        thread.start()
    generation = 0
    try:
        # Switch until the clients have answered across many switches (a busy machine runs them slowly).
        while generation < 6 or (counts[0] < 30 and generation < 60 and not problems):
            generation += 1
            materialize_generation(deployment.settings, generation, run_id=f"gen-{generation}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not problems, problems[0]
    assert counts[0] >= 6
    last = f"gen-{generation}"
    assert len(seen_runs) >= 2, f"the clients saw only {seen_runs}: the switch happened outside the requests"
    final = deployment.get(f"/predict/{CUSTOMERS[0]}").json()
    assert final["feature_snapshot"]["run_id"] == last and final["features"]["nb_previous_loans"] == generation * 1000
