"""Generate a credit CSV that behaves like the real `dataset_credit_risk.csv`, with a known signal.

    python -m features.sample_data --rows 777715 --seed 7 --out data/dataset_credit_risk.csv

Writes the CSV (contract section 1: 24 columns, ~21 loans per customer, ties on
loan_date, the 3021 job-start sentinel for pensioners, ~30 % empty occupation_type,
~1.5 % status = 1) and `<out without .csv>.truth.parquet` with the true probability
`p_true` each row's status was drawn from. That probability is a function of the
point-in-time features of contract section 3 only, so the AUC of `p_true` is the
ceiling any model trained on those features can reach.

`--dirty SHARE` plants that share of rows breaking each validation rule (bad ids,
impossible dates, negative amounts, duplicate loan ids, exact copies) so the
validation stage has something to do; their truth rows are absent.

Deterministic for a seed: numpy's PCG64 stream drives every choice.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from configuration.errors import UserError, run_cli
from features.contract import RAW_COLUMNS

ROWS_DEFAULT = 777_715
LOANS_PER_CUSTOMER = 777_715 / 36_500
EXTRACTION_DATE = np.datetime64("2021-09-18")  # the day the original data was pulled
SENTINEL_DAYS = 365_243  # days_employed of people without a job, turned into a date in the real file
FIRST_LOAN = np.datetime64("2015-01-01")
LOAN_SPAN_DAYS = int((np.datetime64("2021-09-01") - FIRST_LOAN).astype(int))
TARGET_POSITIVE_RATE = 0.015

INCOME_TYPES = np.array(["Working", "Commercial associate", "Pensioner", "State servant", "Student"])
INCOME_P = np.array([0.515, 0.23, 0.17, 0.08, 0.005])
EDUCATION = np.array(
    ["Secondary / secondary special", "Higher education", "Incomplete higher", "Lower secondary", "Academic degree"]
)
EDUCATION_P = np.array([0.68, 0.27, 0.035, 0.014, 0.001])
FAMILY = np.array(["Married", "Single / not married", "Civil marriage", "Separated", "Widow"])
FAMILY_P = np.array([0.69, 0.13, 0.08, 0.06, 0.04])
HOUSING = np.array(
    [
        "House / apartment",
        "With parents",
        "Municipal apartment",
        "Rented apartment",
        "Office apartment",
        "Co-op apartment",
    ]
)
HOUSING_P = np.array([0.89, 0.05, 0.03, 0.015, 0.01, 0.005])
OCCUPATIONS = np.array(
    [
        "Laborers",
        "Core staff",
        "Sales staff",
        "Managers",
        "Drivers",
        "High skill tech staff",
        "Accountants",
        "Medicine staff",
        "Cooking staff",
        "Security staff",
        "Cleaning staff",
    ]
)


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def risk_logit(
    nb_previous: np.ndarray,
    avg_previous: np.ndarray,
    age: np.ndarray,
    years_on_job: np.ndarray,
    flag_own_car: np.ndarray,
) -> np.ndarray:
    """The planted signal: log-odds of a bad loan from the five point-in-time features only (NaN = missing),
    so a model given exactly those features can in principle reach the truth's AUC."""
    first_loan = (nb_previous == 0).astype(float)
    big_borrower = np.where(np.isnan(avg_previous), 0.0, np.log(np.maximum(avg_previous, 1.0) / 5_000.0))
    young = np.where(np.isnan(age), 0.0, np.clip((35.0 - age) / 10.0, -1.5, 2.0))
    no_job = np.isnan(years_on_job).astype(float)
    new_job = np.where(np.isnan(years_on_job), 0.0, (years_on_job < 2).astype(float))
    car = np.where(np.isnan(flag_own_car), 0.0, flag_own_car)
    return (
        1.1 * first_loan
        - 0.25 * np.log1p(nb_previous)
        + 0.9 * big_borrower
        + 0.6 * young
        + 0.7 * no_job
        + 0.8 * new_job
        - 0.5 * car
    )


def _ymd(dates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Year, month, day of datetime64[D] values (numpy only: year 3021 is out of pandas' range)."""
    years = dates.astype("datetime64[Y]")
    months = dates.astype("datetime64[M]")
    return (
        years.astype(int) + 1970,
        (months - years.astype("datetime64[M]")).astype(int) + 1,
        (dates - months.astype("datetime64[D]")).astype(int) + 1,
    )


def _completed_years(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Contract rule on datetime64[D] arrays; NaN where start is NaT or after end."""
    start, end = start.astype("datetime64[D]"), end.astype("datetime64[D]")
    sy, sm, sd = _ymd(start)
    ey, em, ed = _ymd(end)
    years = (ey - sy - ((em < sm) | ((em == sm) & (ed < sd)))).astype(float)
    return np.where(np.isnat(start) | (start > end), np.nan, years)


def _point_in_time(frame: pd.DataFrame) -> pd.DataFrame:
    """nb_previous_loans and avg_amount_loans_previous per loan, strictly earlier dates only."""
    ordered = frame.sort_values(["id", "loan_date", "loan_id"])
    day_totals = ordered.groupby(["id", "loan_date"], sort=False)["loan_amount"].agg(["count", "sum"])
    cumulative = day_totals.groupby(level=0).cumsum() - day_totals
    cumulative.columns = ["nb_previous", "sum_previous"]
    merged = ordered.join(cumulative, on=["id", "loan_date"])
    return merged.sort_index()


def generate(
    rows: int, seed: int, dirty: float = 0.0, positive_rate: float = TARGET_POSITIVE_RATE
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (raw rows as strings in contract column order, truth with loan_id and p_true).

    `positive_rate` other than the real file's 1.5 % gives small test files enough positives to judge a model on.
    """
    if rows < 1:
        raise UserError("--rows must be at least 1")
    rng = np.random.default_rng(seed)
    customers = max(1, round(rows / LOANS_PER_CUSTOMER))
    ids = 5_008_804 + np.sort(rng.choice(141_684, size=min(customers, 141_684), replace=False))
    customers = len(ids)

    # Customers: static attributes and the dates behind days_birth / days_employed.
    income_type = rng.choice(INCOME_TYPES, size=customers, p=INCOME_P)
    pensioner = income_type == "Pensioner"
    age_days = np.where(
        pensioner, rng.integers(56 * 365, 69 * 365, customers), rng.integers(21 * 365, 60 * 365, customers)
    )
    birthday = EXTRACTION_DATE - age_days.astype("timedelta64[D]")
    # Some customers were born on a leap day, as people are.
    leap = rng.random(customers) < 0.002
    birthday[leap] = np.array(
        [np.datetime64(f"{y}-02-29") for y in rng.choice([1960, 1964, 1972, 1980, 1988, 1996], leap.sum())]
    )
    tenure_days = rng.integers(30, 25 * 365, customers)
    job_start = EXTRACTION_DATE - tenure_days.astype("timedelta64[D]")
    job_start = np.maximum(job_start, birthday + np.timedelta64(18 * 365, "D"))
    job_start[pensioner] = EXTRACTION_DATE + np.timedelta64(SENTINEL_DAYS, "D")
    gender = rng.choice(np.array(["F", "M"]), size=customers, p=[0.67, 0.33])
    own_car = rng.random(customers) < 0.38
    own_realty = rng.random(customers) < 0.67
    children = rng.choice(np.arange(5), size=customers, p=[0.69, 0.2, 0.09, 0.015, 0.005])
    income = np.round(rng.lognormal(np.log(160_000), 0.5, customers), -3)
    education = rng.choice(EDUCATION, size=customers, p=EDUCATION_P)
    family = rng.choice(FAMILY, size=customers, p=FAMILY_P)
    housing = rng.choice(HOUSING, size=customers, p=HOUSING_P)
    occupation = np.where(pensioner | (rng.random(customers) < 0.15), "", rng.choice(OCCUPATIONS, size=customers))
    fam_members = children + np.where(np.isin(family, ["Married", "Civil marriage"]), 2, 1)

    # Loans: a skewed number per customer, dates drawn from a few "busy days" so ties happen.
    weights = rng.gamma(1.2, 1.0, customers)
    per_customer = rng.multinomial(rows - customers, weights / weights.sum()) + 1  # every customer has a loan
    owner = np.repeat(np.arange(customers), per_customer)
    n = len(owner)
    first_day = rng.integers(0, LOAN_SPAN_DAYS // 2, customers)
    busy_days = 40
    day_choice = rng.integers(0, busy_days, n)
    spread = (LOAN_SPAN_DAYS - first_day[owner]) // busy_days
    loan_date = FIRST_LOAN + (
        first_day[owner] + day_choice * spread + rng.integers(0, 3, n) * (rng.random(n) < 0.3)
    ).astype("timedelta64[D]")
    base_amount = rng.lognormal(np.log(5_000), 0.6, customers)
    loan_amount = np.round(base_amount[owner] * rng.lognormal(0, 0.35, n), 2)
    loan_id = rng.permutation(n) + 1

    frame = pd.DataFrame({"id": ids[owner], "loan_id": loan_id, "loan_date": loan_date, "loan_amount": loan_amount})
    history = _point_in_time(frame)
    nb_previous = history["nb_previous"].to_numpy(float)
    avg_previous = np.where(
        nb_previous > 0, history["sum_previous"].to_numpy(float) / np.maximum(nb_previous, 1), np.nan
    )
    age = _completed_years(birthday[owner], loan_date)
    years_on_job = _completed_years(job_start[owner], loan_date)
    logits = risk_logit(nb_previous, avg_previous, age, years_on_job, own_car[owner].astype(float))
    p_true = _calibrated(logits, positive_rate)
    status = (rng.random(n) < p_true).astype(int)

    def days_before(date: np.ndarray) -> np.ndarray:
        return (date - loan_date).astype(int)

    raw = pd.DataFrame(
        {
            "loan_id": loan_id,
            "id": ids[owner],
            "code_gender": gender[owner],
            "flag_own_car": np.where(own_car[owner], "Y", "N"),
            "flag_own_realty": np.where(own_realty[owner], "Y", "N"),
            "cnt_children": children[owner],
            "amt_income_total": income[owner],
            "name_income_type": income_type[owner],
            "name_education_type": education[owner],
            "name_family_status": family[owner],
            "name_housing_type": housing[owner],
            "days_birth": days_before(birthday[owner]),
            "days_employed": np.where(pensioner[owner], SENTINEL_DAYS, days_before(job_start[owner])),
            "flag_mobil": 1,
            "flag_work_phone": (rng.random(n) < 0.22).astype(int),
            "flag_phone": (rng.random(n) < 0.29).astype(int),
            "flag_email": (rng.random(n) < 0.09).astype(int),
            "occupation_type": occupation[owner],
            "cnt_fam_members": fam_members[owner].astype(float),
            "status": status,
            "birthday": _iso(birthday[owner]),
            "job_start_date": _iso(job_start[owner]),
            "loan_date": _iso(loan_date),
            "loan_amount": loan_amount,
        }
    )[list(RAW_COLUMNS)].astype(str)
    truth = pd.DataFrame({"loan_id": loan_id.astype("int64"), "p_true": p_true})
    if dirty > 0:
        raw = _plant_dirty_rows(raw, rng, dirty)
        truth = truth[truth["loan_id"].isin(pd.to_numeric(raw["loan_id"], errors="coerce"))]
    return raw, truth


def _iso(dates: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(dates.astype("datetime64[D]"), unit="D")


def _calibrated(logits: np.ndarray, rate: float) -> np.ndarray:
    """Shift the log-odds so the mean probability is `rate` (bisection on the intercept)."""
    low, high = -20.0, 20.0
    for _ in range(60):
        mid = (low + high) / 2
        if (1 / (1 + np.exp(-(logits + mid)))).mean() > rate:
            high = mid
        else:
            low = mid
    return 1 / (1 + np.exp(-(logits + (low + high) / 2)))


def _plant_dirty_rows(raw: pd.DataFrame, rng: np.random.Generator, share: float) -> pd.DataFrame:
    """Break `share` of the rows, spread over every rule, and add duplicate rows."""
    raw = raw.copy()
    n = len(raw)
    k = max(1, int(n * share / 8))
    picks = rng.choice(n, size=min(n, 6 * k), replace=False)
    groups = np.array_split(picks, 6)
    raw.loc[raw.index[groups[0]], "id"] = "not-an-id"
    raw.loc[raw.index[groups[1]], "loan_id"] = ""
    raw.loc[raw.index[groups[2]], "loan_date"] = "2019-02-30"
    raw.loc[raw.index[groups[3]], "loan_amount"] = "-" + raw.loc[raw.index[groups[3]], "loan_amount"]
    raw.loc[raw.index[groups[4]], "status"] = "2"
    raw.loc[raw.index[groups[5]], "birthday"] = "1990-13-45"  # not a reject: age becomes NULL
    copies = raw.iloc[rng.choice(n, size=k)]
    conflicting = raw.iloc[rng.choice(n, size=k)].copy()
    conflicting["loan_amount"] = (pd.to_numeric(conflicting["loan_amount"], errors="coerce") + 1).astype(str)
    combined = pd.concat([raw, copies, conflicting])
    return combined.iloc[rng.permutation(len(combined))]


def truth_path(csv_path: Path) -> Path:
    name = csv_path.name[:-4] if csv_path.name.endswith(".csv") else csv_path.name
    return csv_path.with_name(f"{name}.truth.parquet")


def write(raw: pd.DataFrame, truth: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    raw.to_csv(tmp, index=False)
    tmp.replace(out)
    pq.write_table(pa.Table.from_pandas(truth, preserve_index=False), truth_path(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m features.sample_data",
        description="Write a synthetic loans CSV shaped like dataset_credit_risk.csv, plus the true probabilities.",
    )
    parser.add_argument("--rows", type=int, default=ROWS_DEFAULT, help=f"loan rows (default {ROWS_DEFAULT:,})")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument(
        "--dirty", type=float, default=0.0, help="share of rows that break a validation rule, e.g. 0.002 (default 0)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="CSV path; the truth goes beside it as <name>.truth.parquet"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.dirty < 0.5:
        raise UserError("--dirty must be a share between 0 and 0.5")
    started = time.perf_counter()
    raw, truth = generate(args.rows, args.seed, args.dirty)
    write(raw, truth, args.out)
    print(
        f"wrote {len(raw):,} rows for {raw['id'].nunique():,} customers to {args.out} "
        f"and {truth_path(args.out)} in {time.perf_counter() - started:.1f} s "
        f"(status = 1: {pd.to_numeric(raw['status'], errors='coerce').eq(1).mean():.2%})"
    )
    return 0


if __name__ == "__main__":
    run_cli(main, "features.sample_data")
