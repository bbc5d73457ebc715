"""`python -m training local`: the training entry point run as SageMaker would run it, on this machine.

Stages the channels into a temporary `/opt/ml`-shaped tree (copying local folders,
downloading `s3://` prefixes with boto3 as File mode does), writes the three config
files, runs `python -m training train` as a child process with the SageMaker training
toolkit's `SM_*` variables pointing into that tree, then packs `/opt/ml/model` into
`model.tar.gz` and registers it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configuration.errors import UserError
from training import artifact
from training.hyperparameters import parse_hyperparameters, to_strings
from training.registry import ModelRegistry

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Source:
    """Where the train channel comes from and what the runner knows about it."""

    uri: str
    run_id: str | None = None


def default_source(settings) -> Source:
    """The training table of the current feature snapshot."""
    from features.lake import read_manifest

    manifest = read_manifest(settings)
    return Source(uri=manifest["outputs"]["training"]["uri"], run_id=manifest.get("run_id"))


def run_id_in(uri: str) -> str | None:
    """The snapshot run_id in a lake URI `…/snapshots/<run_id>/training` (features/lake.py layout)."""
    parts = uri.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-3] == "snapshots" and parts[-1] == "training":
        return parts[-2]
    return None


def source_for(uri: str) -> Source:
    """A user-given --train; the run_id is known when it is a snapshot's folder with its manifest beside it
    (local), or when an s3:// URI follows the lake layout."""
    if uri.startswith("s3://"):
        return Source(uri=uri, run_id=run_id_in(uri))
    path = Path(uri.removeprefix("file://")).resolve()
    manifest = path.parent / "manifest.json"
    run_id = None
    if manifest.is_file():
        try:
            run_id = json.loads(manifest.read_text(encoding="utf-8")).get("run_id")
        except (ValueError, OSError):
            run_id = None
    return Source(uri=str(path), run_id=run_id)


def truth_beside_input(settings) -> Path | None:
    """The generator's `<csv>.truth.parquet` next to the current snapshot's input CSV, if there is one."""
    from features.lake import read_manifest

    try:
        uri = read_manifest(settings).get("input", {}).get("uri", "")
    except UserError:
        return None
    if not uri or ("://" in uri and not uri.startswith("file://")):
        return None
    csv = Path(uri.removeprefix("file://"))
    name = csv.name[:-4] if csv.name.endswith(".csv") else csv.name
    candidate = csv.with_name(f"{name}.truth.parquet")
    return candidate if candidate.is_file() else None


def parse_hp_pairs(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--hp {pair!r} is not key=value (e.g. --hp max_depth=3)")
        values[key.strip()] = value.strip()
    return values


def stage_channel(name: str, uri: str, root: Path, s3_client_factory) -> Path:
    """Put one channel's data under <root>/input/data/<name>/."""
    target = root / "input" / "data" / name
    target.mkdir(parents=True, exist_ok=True)
    if uri.startswith("s3://"):
        from training.aws import download_prefix

        download_prefix(s3_client_factory(), uri, target)
        return target
    source = Path(uri.removeprefix("file://"))
    if not source.exists():
        raise UserError(f"--{name} {uri}: no such file or folder")
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target / source.name)
    return target


def stage_tree(root: Path, channels: dict[str, str], hyperparameters: dict[str, str], s3_client_factory) -> None:
    """Build the /opt/ml tree SageMaker would give the container."""
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    for name, uri in channels.items():
        stage_channel(name, uri, root, s3_client_factory)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters, indent=2), encoding="utf-8")
    input_config = {
        name: {
            "ContentType": "application/x-parquet",
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        }
        for name in channels
    }
    (config / "inputdataconfig.json").write_text(json.dumps(input_config, indent=2), encoding="utf-8")
    resources = {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "lo"}
    (config / "resourceconfig.json").write_text(json.dumps(resources, indent=2), encoding="utf-8")
    for folder in ("model", "output/data"):
        (root / folder).mkdir(parents=True, exist_ok=True)


def container_env(root: Path) -> dict[str, str]:
    """The training toolkit's variables for a tree at `root` (instead of /opt/ml)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(
        SM_INPUT_DIR=str(root / "input"),
        SM_INPUT_CONFIG_DIR=str(root / "input" / "config"),
        SM_MODEL_DIR=str(root / "model"),
        SM_OUTPUT_DIR=str(root / "output"),
        SM_OUTPUT_DATA_DIR=str(root / "output" / "data"),
    )
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see training/__main__.py
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_entrypoint(root: Path, command: list[str] | None = None) -> None:
    """Run the entry point on a staged tree; UserError with the job's failure reason if it fails."""
    command = command or [sys.executable, "-m", "training", "train"]
    result = subprocess.run(command, env=container_env(root), cwd=REPO_ROOT)
    if result.returncode != 0:
        failure = root / "output" / "failure"
        reason = (
            failure.read_text(encoding="utf-8").strip()
            if failure.is_file()
            else f"exit status {result.returncode}, no failure file"
        )
        raise UserError(f"training failed: {reason}")


@dataclass(frozen=True)
class Registered:
    version: str
    metadata: dict[str, Any]
    promoted: bool
    production: str | None


def register_with_policy(
    registry: ModelRegistry, tar: Path, metadata: dict[str, Any], promote: bool, promote_first: bool = True
) -> Registered:
    """Register; promote when asked, or when there is no production model yet (nothing to protect).

    promote_first=False registers a challenger only, even the first one: the pipeline's gate decides.
    """
    version = registry.register(tar, metadata)
    promoted = promote or (promote_first and registry.alias() is None)
    if promoted:
        registry.promote(version)
    return Registered(version=version, metadata=metadata, promoted=promoted, production=registry.alias())


def train_local(
    settings,
    registry: ModelRegistry,
    source: Source,
    validation: str | None,
    truth: str | None,
    hp_pairs: dict[str, str],
    promote: bool,
    keep: Path | None = None,
    promote_first: bool = True,
) -> Registered:
    hyperparameters = dict(hp_pairs)
    hyperparameters.setdefault("data_uri", source.uri)
    if source.run_id:
        hyperparameters.setdefault("data_run_id", source.run_id)
    parse_hyperparameters(hyperparameters)  # fail here, before staging gigabytes, on a bad --hp

    def s3_client():
        from training.aws import session

        return session(settings).client("s3")

    channels = {"train": source.uri}
    if validation:
        channels["validation"] = validation
    if truth:
        channels["truth"] = truth
    with tempfile.TemporaryDirectory(prefix="sparkmaker-train-") as tmp:
        root = Path(tmp) / "opt" / "ml"
        stage_tree(root, channels, to_strings(hyperparameters), s3_client)
        run_entrypoint(root)
        tar = artifact.pack(root / "model", Path(tmp) / "model.tar.gz")
        metadata = artifact.read_metadata(root / "model")
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copytree(root, keep, dirs_exist_ok=True)
        return register_with_policy(registry, tar, metadata, promote, promote_first)
