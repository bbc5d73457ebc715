"""The credit-risk feature contract (shared/FEATURE-CONTRACT.md) as data.

Every component imports names from here instead of spelling them again.
"""

from __future__ import annotations

# Section 1: the raw file. Order is the real file's; the job matches columns by name.
RAW_COLUMNS: tuple[str, ...] = (
    "loan_id",
    "id",
    "code_gender",
    "flag_own_car",
    "flag_own_realty",
    "cnt_children",
    "amt_income_total",
    "name_income_type",
    "name_education_type",
    "name_family_status",
    "name_housing_type",
    "days_birth",
    "days_employed",
    "flag_mobil",
    "flag_work_phone",
    "flag_phone",
    "flag_email",
    "occupation_type",
    "cnt_fam_members",
    "status",
    "birthday",
    "job_start_date",
    "loan_date",
    "loan_amount",
)
REQUIRED_COLUMNS: tuple[str, ...] = (
    "loan_id",
    "id",
    "loan_date",
    "loan_amount",
    "birthday",
    "job_start_date",
    "flag_own_car",
    "status",
)

# Section 2: reject reasons, in the order they are checked. `malformed_row` is this
# project's addition to the contract: a line whose field count differs from the header
# cannot be read column by column, so it is rejected before any other rule.
REJECT_REASONS: tuple[str, ...] = (
    "malformed_row",
    "bad_id",
    "bad_loan_id",
    "bad_loan_date",
    "bad_loan_amount",
    "bad_status",
    "duplicate_loan_id",
)

# Section 3 and 4: the model inputs, in the order the model records them.
FEATURE_COLUMNS: tuple[str, ...] = (
    "nb_previous_loans",
    "avg_amount_loans_previous",
    "age",
    "years_on_the_job",
    "flag_own_car",
)
LABEL_COLUMN = "status"
KEY_COLUMNS: tuple[str, ...] = ("id", "loan_id", "loan_date")  # keys and event time, never inputs
TRAINING_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, *FEATURE_COLUMNS, LABEL_COLUMN)
LATEST_COLUMNS: tuple[str, ...] = ("id", "as_of", *FEATURE_COLUMNS)

# Section 5: the outputs of one run.
OUTPUTS: tuple[str, ...] = ("training", "latest", "rejects")
