"""An independent, plain-Python reading of shared/FEATURE-CONTRACT.md, for comparing the Spark job against.

Written from the contract text alone: the csv module, datetime and dicts, no Spark and
nothing imported from the features package.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

INT = re.compile(r"[+-]?[0-9]+")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def as_int(text: str | None) -> int | None:
    if text is None or not INT.fullmatch(text.strip()):
        return None
    value = int(text.strip())
    return value if -(2**63) <= value < 2**63 else None


def as_date(text: str | None) -> dt.date | None:
    if text is None or not DATE.fullmatch(text.strip()):
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        return None


def as_amount(text: str | None) -> float | None:
    if text is None or not NUMBER.fullmatch(text.strip()):
        return None
    value = float(text.strip())
    return value if math.isfinite(value) else None


def completed_years(start: dt.date | None, end: dt.date) -> int | None:
    if start is None or start > end:
        return None
    return end.year - start.year - (1 if (end.month, end.day) < (start.month, start.day) else 0)


def flag(text: str | None) -> int | None:
    return {"Y": 1, "N": 0}.get((text or "").strip())


@dataclass
class Expected:
    training: dict[int, dict] = field(default_factory=dict)  # by loan_id
    latest: dict[int, dict] = field(default_factory=dict)  # by id
    rejects: Counter = field(default_factory=Counter)
    exact_duplicates_removed: int = 0
    rows_in: int = 0


def row_reason(row: dict) -> str | None:
    if as_int(row["id"]) is None:
        return "bad_id"
    if as_int(row["loan_id"]) is None:
        return "bad_loan_id"
    if as_date(row["loan_date"]) is None:
        return "bad_loan_date"
    amount = as_amount(row["loan_amount"])
    if amount is None or amount < 0:
        return "bad_loan_amount"
    if (row["status"] or "").strip() not in ("0", "1"):
        return "bad_status"
    return None


def compute(csv_path: str, as_of: dt.date) -> Expected:
    expected = Expected()
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [name.strip().lower() for name in next(reader)]
        passed: dict[int, list[tuple]] = defaultdict(list)
        for fields in reader:
            expected.rows_in += 1
            if len(fields) != len(header):
                expected.rejects["malformed_row"] += 1
                continue
            row = {name: (value if value != "" else None) for name, value in zip(header, fields)}
            reason = row_reason(row)
            if reason:
                expected.rejects[reason] += 1
            else:
                passed[as_int(row["loan_id"])].append(tuple(row.items()))

    loans = []
    for loan_id, copies in passed.items():
        if len(set(copies)) > 1:
            expected.rejects["duplicate_loan_id"] += len(copies)
            continue
        expected.exact_duplicates_removed += len(copies) - 1
        row = dict(copies[0])
        loans.append(
            {
                "id": as_int(row["id"]),
                "loan_id": loan_id,
                "loan_date": as_date(row["loan_date"]),
                "loan_amount": as_amount(row["loan_amount"]),
                "birthday": as_date(row.get("birthday")),
                "job_start_date": as_date(row.get("job_start_date")),
                "flag_own_car": flag(row.get("flag_own_car")),
                "status": int(row["status"].strip()),
            }
        )

    by_customer: dict[int, list[dict]] = defaultdict(list)
    for loan in loans:
        by_customer[loan["id"]].append(loan)
    for customer, history in by_customer.items():
        for loan in history:
            earlier = [other["loan_amount"] for other in history if other["loan_date"] < loan["loan_date"]]
            expected.training[loan["loan_id"]] = {
                "id": customer,
                "loan_date": loan["loan_date"],
                "nb_previous_loans": len(earlier),
                "avg_amount_loans_previous": sum(earlier) / len(earlier) if earlier else None,
                "age": completed_years(loan["birthday"], loan["loan_date"]),
                "years_on_the_job": completed_years(loan["job_start_date"], loan["loan_date"]),
                "flag_own_car": loan["flag_own_car"],
                "status": loan["status"],
            }
        before = [loan for loan in history if loan["loan_date"] < as_of]
        if before:
            recent = max(before, key=lambda loan: (loan["loan_date"], loan["loan_id"]))
            expected.latest[customer] = {
                "as_of": as_of,
                "nb_previous_loans": len(before),
                "avg_amount_loans_previous": sum(loan["loan_amount"] for loan in before) / len(before),
                "age": completed_years(recent["birthday"], as_of),
                "years_on_the_job": completed_years(recent["job_start_date"], as_of),
                "flag_own_car": recent["flag_own_car"],
            }
    return expected
