"""Where the entry point looks: /opt/ml by default, SM_* overrides, and the job's config files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.container import ContainerEnv, ContractError


def test_defaults_are_the_sagemaker_paths():
    env = ContainerEnv.from_environ({})
    assert env.config_dir == Path("/opt/ml/input/config")
    assert env.channel_dir("train") == Path("/opt/ml/input/data/train")
    assert env.model_dir == Path("/opt/ml/model")
    assert env.output_data_dir == Path("/opt/ml/output/data")
    assert env.failure_path == Path("/opt/ml/output/failure")


def test_toolkit_variables_override_each_path():
    env = ContainerEnv.from_environ(
        {
            "SM_CHANNEL_TRAIN": "/data/t",
            "SM_CHANNEL_VALIDATION": "/data/v",
            "SM_MODEL_DIR": "/m",
            "SM_OUTPUT_DIR": "/o",
            "SM_OUTPUT_DATA_DIR": "/od",
            "SM_INPUT_DIR": "/i",
            "SM_NUM_CPUS": "3",
            "SM_HPS": '{"max_depth": 3}',
        }
    )
    assert env.channel_dir("train") == Path("/data/t")
    assert env.channel_dir("validation") == Path("/data/v")
    assert env.channel_dir("truth") == Path("/i/data/truth")
    assert env.config_dir == Path("/i/config")
    assert (env.model_dir, env.output_dir, env.output_data_dir) == (Path("/m"), Path("/o"), Path("/od"))
    assert env.failure_path == Path("/o/failure")
    assert env.cpu_count() == 3
    assert env.raw_hyperparameters() == {"max_depth": 3}


def _env(tmp_path, **files) -> ContainerEnv:
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    for name, content in files.items():
        (config / f"{name}.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return ContainerEnv.from_environ({"SM_INPUT_DIR": str(tmp_path / "input")})


def test_hyperparameters_file(tmp_path):
    env = _env(tmp_path, hyperparameters={"max_depth": "3"})
    assert env.raw_hyperparameters() == {"max_depth": "3"}
    assert ContainerEnv.from_environ({"SM_INPUT_DIR": str(tmp_path / "nothing")}).raw_hyperparameters() == {}


def test_a_good_job_configuration_passes(tmp_path):
    env = _env(
        tmp_path,
        inputdataconfig={
            "train": {"TrainingInputMode": "File", "ContentType": "application/x-parquet"},
            "validation": {"TrainingInputMode": "FastFile"},
        },
        resourceconfig={"current_host": "algo-1", "hosts": ["algo-1"]},
    )
    env.check_configs()


@pytest.mark.parametrize(
    "files, sentence",
    [
        ({"hyperparameters": "{oops"}, "hyperparameters.json is not valid JSON"),
        ({"hyperparameters": ["a"]}, "hyperparameters.json does not hold a JSON object of hyperparameters"),
        (
            {"inputdataconfig": {"training": {}}},
            "the job has no 'train' channel (channels: training): name the training data channel 'train'",
        ),
        (
            {"inputdataconfig": {"train": {}, "test": {}}},
            "unknown channel 'test': this image reads the channels train, validation, truth",
        ),
        (
            {"inputdataconfig": {"train": {"TrainingInputMode": "Pipe"}}},
            "channel 'train' uses input mode Pipe: this image reads File or FastFile mode only",
        ),
        (
            {"resourceconfig": {"current_host": "algo-1", "hosts": ["algo-1", "algo-2"]}},
            "the job runs on 2 instances: this image trains on one, set the instance count to 1",
        ),
        ({"resourceconfig": "[1]"}, "resourceconfig.json does not hold a JSON object"),
    ],
)
def test_each_configuration_problem_is_one_sentence(tmp_path, files, sentence):
    env = _env(tmp_path, **files)
    with pytest.raises(ContractError) as info:
        env.check_configs()
        env.raw_hyperparameters()
    assert sentence in str(info.value)


def test_bad_sm_hps():
    with pytest.raises(ContractError, match="SM_HPS is not valid JSON"):
        ContainerEnv.from_environ({"SM_HPS": "{"}).raw_hyperparameters()
