"""The one settings object: precedence of defaults, files and environment, and one-line errors."""

from __future__ import annotations

import pytest

from configuration.errors import UserError
from configuration.settings import REPO_ROOT, ConfigurationError, load_settings


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("SPARKMAKER_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_then_file_then_environment(clean_env, tmp_path):
    config = tmp_path / "site.toml"
    config.write_text('[spark]\nshuffle_partitions = 16\nmaster = "local[3]"\n[features]\nmax_reject_share = 0.2\n')
    clean_env.setenv("SPARKMAKER_CONFIG", str(config))
    clean_env.setenv("SPARKMAKER_SPARK__MASTER", "spark://example:7077")
    settings = load_settings()
    assert settings.spark.shuffle_partitions == 16  # from the file
    assert settings.spark.master == "spark://example:7077"  # the environment wins over the file
    assert settings.features.max_reject_share == 0.2
    assert settings.features.database == "credit_risk"  # untouched default


def test_relative_paths_resolve_against_the_repository(clean_env):
    clean_env.setenv("SPARKMAKER_PATHS__LAKE", "somewhere/lake")
    assert load_settings().paths.lake == str(REPO_ROOT / "somewhere" / "lake")
    clean_env.setenv("SPARKMAKER_PATHS__LAKE", "s3a://bucket/lake")
    assert load_settings().paths.lake == "s3a://bucket/lake"


def test_the_dag_python_may_be_a_command_on_path(clean_env):
    """The compose image's python3 is in /usr/local/bin (official image) or /usr/bin (the local stand-in)."""
    clean_env.setenv("SPARKMAKER_AIRFLOW__PROJECT_PYTHON", "python3")
    assert load_settings().airflow.project_python == "python3"
    clean_env.setenv("SPARKMAKER_AIRFLOW__PROJECT_PYTHON", "venv/bin/python")
    assert load_settings().airflow.project_python == str(REPO_ROOT / "venv" / "bin" / "python")


@pytest.mark.parametrize(
    "name, value, message",
    [
        (
            "SPARKMAKER_FEATURES__MAX_REJECT_SHARE",
            "1.5",
            r"features\.max_reject_share: Input should be less than or equal to 1",
        ),
        ("SPARKMAKER_SPARK__SHUFFLE_PARTITIONS", "many", r"spark\.shuffle_partitions: Input should be a valid integer"),
        ("SPARKMAKER_METASTORE__KIND", "jdbc", r"metastore.*jdbc_url is empty"),
        ("SPARKMAKER_ONLINE_STORE__KIND", "cassandra", r"online_store\.kind"),
    ],
)
def test_invalid_values_are_one_line_errors(clean_env, name, value, message):
    clean_env.setenv(name, value)
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_settings()
    assert isinstance(caught.value, UserError)
    assert "\n" not in str(caught.value)


def test_unknown_keys_in_a_file_are_refused(clean_env, tmp_path):
    config = tmp_path / "typo.toml"
    config.write_text("[spark]\nshufle_partitions = 3\n")
    clean_env.setenv("SPARKMAKER_CONFIG", str(config))
    with pytest.raises(ConfigurationError, match="spark.shufle_partitions: Extra inputs are not permitted"):
        load_settings()


def test_missing_or_malformed_config_file(clean_env, tmp_path):
    clean_env.setenv("SPARKMAKER_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigurationError, match="not a file"):
        load_settings()
    broken = tmp_path / "broken.toml"
    broken.write_text("[spark\nmaster = \n")
    clean_env.setenv("SPARKMAKER_CONFIG", str(broken))
    with pytest.raises(ConfigurationError, match="cannot read the configuration"):
        load_settings()
