"""The model artifact: what `/opt/ml/model` holds and how `model.tar.gz` is packed.

Shared by training (writes it) and serving (reads it); keep it exactly as
shared/artifact.md describes. Files of a model directory:

    xgboost-model          the Booster in XGBoost's JSON format (`save_raw("json")`);
                           SageMaker's managed XGBoost container loads this name too
    model-metadata.json    features and order, threshold, metrics, provenance, sha256 of the model
    model-card.md, roc.png, calibration.png   the human model card (optional for loading)

No pickle anywhere: the model is JSON, the metadata is JSON.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
import zlib
from pathlib import Path
from typing import Any

from configuration.errors import UserError
from configuration.files import sha256_file, write_atomic
from features.contract import FEATURE_COLUMNS

FORMAT_VERSION = 1
FEATURES: tuple[str, ...] = FEATURE_COLUMNS
# The logical type of each input, as the training table holds it (contract section 3).
FEATURE_DTYPES: dict[str, str] = {
    "nb_previous_loans": "int",
    "avg_amount_loans_previous": "float",
    "age": "int",
    "years_on_the_job": "int",
    "flag_own_car": "int",
}
MODEL_FILE = "xgboost-model"
METADATA_FILE = "model-metadata.json"
CARD_FILE = "model-card.md"
ROC_FILE = "roc.png"
CALIBRATION_FILE = "calibration.png"
# The model's scores of its own validation rows (probability, label): the reference of prediction drift.
VALIDATION_SCORES_FILE = "validation-scores.parquet"
REQUIRED_FILES: tuple[str, ...] = (MODEL_FILE, METADATA_FILE)
CARD_FILES: tuple[str, ...] = (CARD_FILE, ROC_FILE, CALIBRATION_FILE)
MONITORING_FILES: tuple[str, ...] = (VALIDATION_SCORES_FILE,)
ARTIFACT_FILES: tuple[str, ...] = (*REQUIRED_FILES, *CARD_FILES, *MONITORING_FILES)
METADATA_KEYS: tuple[str, ...] = (
    "format_version",
    "model_sha256",
    "feature_names",
    "feature_dtypes",
    "threshold",
    "metrics",
    "hyperparameters",
    "training_data",
    "code_version",
    "created_at",
    "learner",
)
LEARNER = "xgboost"


class ArtifactError(UserError):
    """A model directory or tarball is incomplete, corrupt or of another format."""


def write_booster(booster: Any, model_dir: Path) -> Path:
    """Save an xgboost.Booster as `<model_dir>/xgboost-model` (JSON)."""
    path = Path(model_dir) / MODEL_FILE
    write_atomic(path, bytes(booster.save_raw("json")))
    return path


def write_metadata(model_dir: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write `model-metadata.json` next to an already written `xgboost-model`.

    `format_version`, `model_sha256`, `feature_names`, `feature_dtypes` and `learner` are
    filled in here (from the model file and the contract) so no caller can get them wrong;
    the other keys of METADATA_KEYS must be given. Returns the metadata as written.
    """
    model_dir = Path(model_dir)
    model_path = model_dir / MODEL_FILE
    if not model_path.is_file():
        raise ArtifactError(f"{model_path} is missing: save the booster before writing its metadata")
    full = dict(metadata)
    full["format_version"] = FORMAT_VERSION
    full["model_sha256"] = sha256_file(model_path)
    full.setdefault("feature_names", list(FEATURES))
    full.setdefault("feature_dtypes", dict(FEATURE_DTYPES))
    full.setdefault("learner", LEARNER)
    missing = [key for key in METADATA_KEYS if key not in full]
    if missing:
        raise ValueError(f"model metadata lacks {', '.join(missing)}")
    _check_metadata(full, where=str(model_dir / METADATA_FILE))
    text = json.dumps(full, indent=2, sort_keys=False, allow_nan=False) + "\n"
    write_atomic(model_dir / METADATA_FILE, text.encode("utf-8"))
    return full


def _check_metadata(metadata: Any, where: str) -> None:
    if not isinstance(metadata, dict):
        raise ArtifactError(
            f"{where} does not hold a JSON object: the model directory is corrupt, retrain or re-register it"
        )
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{where} has format_version {version!r}, this code reads {FORMAT_VERSION}: retrain the model with this version"
        )
    missing = [key for key in METADATA_KEYS if key not in metadata]
    if missing:
        raise ArtifactError(f"{where} lacks {', '.join(missing)}: the model directory is corrupt, retrain the model")
    names = metadata["feature_names"]
    if list(names) != list(FEATURES):
        raise ArtifactError(
            f"{where} lists features {names}, this code feeds {list(FEATURES)}: retrain the model on the current contract"
        )
    threshold = metadata["threshold"]
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0.0 <= threshold <= 1.0:
        raise ArtifactError(
            f"{where} has threshold {threshold!r}, not a probability between 0 and 1: retrain the model"
        )


def read_metadata(model_dir: Path) -> dict[str, Any]:
    """The parsed `model-metadata.json` of a model directory (checked for shape, not for the model's hash)."""
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} is missing: {model_dir} is not a sparkmaker model directory")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(
            f"{path} is not valid JSON ({exc}): the model directory is corrupt, retrain the model"
        ) from None
    _check_metadata(metadata, where=str(path))
    return metadata


def verify_model_dir(model_dir: Path) -> dict[str, Any]:
    """Check that the required files are present and the model's sha256 matches; return the metadata."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ArtifactError(f"model directory {model_dir} does not exist")
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ArtifactError(f"{model_dir} lacks {', '.join(missing)}: it is not a complete sparkmaker model")
    metadata = read_metadata(model_dir)
    actual = sha256_file(model_dir / MODEL_FILE)
    if actual != metadata["model_sha256"]:
        raise ArtifactError(
            f"{model_dir / MODEL_FILE} has sha256 {actual[:12]}…, its metadata says {str(metadata['model_sha256'])[:12]}…: "
            "the model file was changed or damaged, re-register the model"
        )
    return metadata


def pack(model_dir: Path, tar_path: Path) -> Path:
    """Pack the model directory flat (file names at the archive's root) into a gzip tarball, atomically."""
    model_dir = Path(model_dir)
    tar_path = Path(tar_path)
    verify_model_dir(model_dir)
    names = sorted(p.name for p in model_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    buffer = io.BytesIO()
    # Fixed mtime/owner so the same model directory always packs to the same members.
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in names:
            data = (model_dir / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            archive.addfile(info, io.BytesIO(data))
    write_atomic(tar_path, buffer.getvalue())
    return tar_path


def unpack(tar_path: Path, dest: Path) -> dict[str, Any]:
    """Unpack a model tarball into `dest` (created, must be empty or absent) and verify it; return the metadata.

    Only regular files are taken; a path leaving `dest`, a link or a device fails with a
    clear reason. A leading `./` (as `tar -C dir .` writes) is accepted.
    """
    tar_path = Path(tar_path)
    dest = Path(dest)
    if not tar_path.is_file():
        raise ArtifactError(f"model tarball {tar_path} does not exist")
    if dest.exists() and any(dest.iterdir()):
        raise ArtifactError(f"cannot unpack into {dest}: the folder is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tar_path, mode="r:*") as archive:
            for member in archive.getmembers():
                name = member.name.removeprefix("./")
                if member.isdir() and name in ("", "."):
                    continue
                if not member.isfile():
                    raise ArtifactError(
                        f"{tar_path} holds {member.name!r}, which is not a regular file: model tarballs hold plain files only"
                    )
                if "/" in name or name in ("", ".", "..") or name.startswith("."):
                    raise ArtifactError(
                        f"{tar_path} holds {member.name!r}: model tarballs hold files at their root only (pack with training.artifact.pack)"
                    )
                source = archive.extractfile(member)
                if source is None:  # a link or a device passed as a file: not part of a model
                    raise ArtifactError(
                        f"{tar_path} holds {member.name!r}, which is not a regular file: re-pack the model"
                    )
                with open(dest / name, "wb") as target:
                    shutil.copyfileobj(source, target)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ArtifactError(
            f"{tar_path} is not a readable tar.gz archive ({exc}): re-download or re-pack the model"
        ) from None
    return verify_model_dir(dest)


def write_validation_scores(model_dir: Path, probability: Any, label: Any) -> Path:
    """Save the validation rows' scores and labels (optional for loading; monitoring compares served scores with them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"probability": pa.array(probability, pa.float64()), "label": pa.array(label, pa.int8())})
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd")
    path = Path(model_dir) / VALIDATION_SCORES_FILE
    write_atomic(path, buffer.getvalue().to_pybytes())
    return path


def load_booster(model_dir: Path):
    """Verify a model directory and load its Booster (feature names set to the contract's order)."""
    import xgboost  # imported here: reading metadata must not need the learner

    model_dir = Path(model_dir)
    verify_model_dir(model_dir)
    booster = xgboost.Booster()
    try:
        # From bytes: XGBoost recognises JSON by content; loading the file by name would warn
        # about the extension-less name that SageMaker's convention imposes.
        booster.load_model(bytearray((model_dir / MODEL_FILE).read_bytes()))
    except xgboost.core.XGBoostError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
        raise ArtifactError(
            f"{model_dir / MODEL_FILE} is not an XGBoost model XGBoost can load ({first}): retrain the model"
        ) from None
    return booster
