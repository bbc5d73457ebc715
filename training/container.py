"""SageMaker's training contract: where the container finds its inputs and puts its outputs.

Inside a SageMaker training container everything lives under `/opt/ml`:

    /opt/ml/input/config/hyperparameters.json    every value a string
    /opt/ml/input/config/inputdataconfig.json    the channels and their settings
    /opt/ml/input/config/resourceconfig.json     current_host, hosts
    /opt/ml/input/data/<channel>/                 File mode: the channel's S3 objects, sub-folders kept
    /opt/ml/model/                                uploaded as model.tar.gz when the job succeeds
    /opt/ml/output/data/                          uploaded as output.tar.gz
    /opt/ml/output/failure                        its text becomes the job's FailureReason

The variables of the SageMaker training toolkit (`SM_CHANNEL_<NAME>`, `SM_MODEL_DIR`,
`SM_OUTPUT_DIR`, `SM_OUTPUT_DATA_DIR`, `SM_INPUT_DIR`, `SM_INPUT_CONFIG_DIR`, `SM_HPS`,
`SM_NUM_CPUS`) override these paths when set, so the same code runs outside a container.
They are the only environment this module reads, once, into a frozen object.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from configuration.errors import UserError

ML_ROOT = Path("/opt/ml")
CHANNELS = ("train", "validation", "truth")  # train is required; the others are optional
FAILURE_FILE = "failure"


class ContractError(UserError):
    """The job's configuration files or channels are not what this image expects."""


@dataclass(frozen=True)
class ContainerEnv:
    input_dir: Path
    config_dir: Path
    model_dir: Path
    output_dir: Path
    output_data_dir: Path
    channel_dirs: dict[str, Path] = field(default_factory=dict)  # explicit SM_CHANNEL_* overrides
    hps_json: str | None = None  # SM_HPS
    num_cpus: int | None = None  # SM_NUM_CPUS

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, root: Path = ML_ROOT) -> "ContainerEnv":
        env = os.environ if environ is None else environ
        input_dir = Path(env.get("SM_INPUT_DIR") or root / "input")
        output_dir = Path(env.get("SM_OUTPUT_DIR") or root / "output")
        channels = {
            key.removeprefix("SM_CHANNEL_").lower(): Path(value)
            for key, value in env.items()
            if key.startswith("SM_CHANNEL_") and value
        }
        cpus = env.get("SM_NUM_CPUS")
        return cls(
            input_dir=input_dir,
            config_dir=Path(env.get("SM_INPUT_CONFIG_DIR") or input_dir / "config"),
            model_dir=Path(env.get("SM_MODEL_DIR") or root / "model"),
            output_dir=output_dir,
            output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR") or output_dir / "data"),
            channel_dirs=channels,
            hps_json=env.get("SM_HPS") or None,
            num_cpus=int(cpus) if cpus and cpus.isdigit() else None,
        )

    @property
    def failure_path(self) -> Path:
        return self.output_dir / FAILURE_FILE

    def channel_dir(self, name: str) -> Path:
        return self.channel_dirs.get(name) or self.input_dir / "data" / name

    def _read_json(self, name: str) -> Any | None:
        path = self.config_dir / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ContractError(f"{path} is not valid JSON ({exc}): the job's configuration is damaged") from None

    def raw_hyperparameters(self) -> dict[str, Any]:
        """SM_HPS when the toolkit set it, else hyperparameters.json, else no hyperparameters."""
        if self.hps_json is not None:
            try:
                value = json.loads(self.hps_json)
            except ValueError as exc:
                raise ContractError(f"SM_HPS is not valid JSON ({exc}): set it to a JSON object or unset it") from None
            where = "SM_HPS"
        else:
            value = self._read_json("hyperparameters.json")
            where = str(self.config_dir / "hyperparameters.json")
            if value is None:
                return {}
        if not isinstance(value, dict):
            raise ContractError(f"{where} does not hold a JSON object of hyperparameters")
        return value

    def input_data_config(self) -> dict[str, Any] | None:
        config = self._read_json("inputdataconfig.json")
        if config is not None and not isinstance(config, dict):
            raise ContractError(f"{self.config_dir / 'inputdataconfig.json'} does not hold a JSON object of channels")
        return config

    def resource_config(self) -> dict[str, Any] | None:
        config = self._read_json("resourceconfig.json")
        if config is not None and not isinstance(config, dict):
            raise ContractError(f"{self.config_dir / 'resourceconfig.json'} does not hold a JSON object")
        return config

    def check_configs(self) -> None:
        """Refuse a job set up for a mode this image does not support, before reading any data."""
        channels = self.input_data_config()
        if channels is not None:
            if "train" not in channels and "train" not in self.channel_dirs:
                named = ", ".join(sorted(channels)) or "none"
                raise ContractError(
                    f"the job has no 'train' channel (channels: {named}): name the training data channel 'train'"
                )
            unknown = sorted(set(channels) - set(CHANNELS))
            if unknown:
                raise ContractError(
                    f"unknown channel {unknown[0]!r}: this image reads the channels {', '.join(CHANNELS)}"
                )
            for name, settings in channels.items():
                mode = (settings or {}).get("TrainingInputMode", "File")
                if mode not in ("File", "FastFile"):
                    raise ContractError(
                        f"channel {name!r} uses input mode {mode}: this image reads File or FastFile mode only"
                    )
        resources = self.resource_config()
        if resources is not None:
            hosts = resources.get("hosts") or []
            if len(hosts) > 1:
                raise ContractError(
                    f"the job runs on {len(hosts)} instances: this image trains on one, set the instance count to 1"
                )

    def cpu_count(self) -> int:
        return self.num_cpus or os.cpu_count() or 1
