"""Command line of training and the model registry.

python -m training train                      the SageMaker training entry point (as `train` in the image)
python -m training local [--train URI] ...    stage channels, run the entry point, register the model
python -m training sagemaker --image-uri ...  run a SageMaker training job, register its model
python -m training sagemaker --local --train DIR   the same job under the SDK's local mode (docker compose here)
python -m training models                     list registered models
python -m training promote VERSION            make VERSION the production model
python -m training rollback                   make the previous production model production again
python -m training registry import [--from DIR]   import an old index.json registry into MLflow (once)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from configuration.errors import UserError
from configuration.settings import Settings, load_settings

COMMANDS = ("train", "local", "sagemaker", "models", "promote", "rollback", "registry")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the credit-risk model with SageMaker's training contract and manage the model registry.",
        epilog="Settings: configuration/sparkmaker.toml ([training], [aws]) and SPARKMAKER_* variables. See training/README.md.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", required=True)

    commands.add_parser(
        "train",
        help="the training entry point: read /opt/ml (or SM_* overrides), write the model",
        description="The SageMaker training contract entry point (the image's `train`). Reads "
        "/opt/ml/input/{config,data}, writes /opt/ml/model and /opt/ml/output; SM_CHANNEL_TRAIN, "
        "SM_CHANNEL_VALIDATION, SM_MODEL_DIR, SM_OUTPUT_DIR, SM_OUTPUT_DATA_DIR, SM_INPUT_DIR, "
        "SM_INPUT_CONFIG_DIR, SM_HPS override the paths.",
    )

    local = commands.add_parser(
        "local",
        help="train on this machine through the container contract, then register the model",
        description="Stage the channels into a temporary /opt/ml tree (s3:// prefixes downloaded), run the "
        "entry point as a child process, pack model.tar.gz and register it.",
    )
    local.add_argument(
        "--train",
        help="training data: a Parquet folder/file or s3:// prefix (default: the current feature snapshot's training table)",
    )
    local.add_argument("--validation", help="validation data (default: none, split the training data by loan_date)")
    local.add_argument(
        "--truth",
        help="the generator's <csv>.truth.parquet, to report the ceiling AUC "
        "(default: found next to the current snapshot's input CSV, if there)",
    )
    local.add_argument("--no-truth", action="store_true", help="do not look for a truth file")
    _hp_option(local)
    local.add_argument(
        "--promote", action="store_true", help="make the new model production (the first model always is)"
    )
    local.add_argument(
        "--keep", type=Path, help="also keep the staged /opt/ml tree (inputs, model, output) in this folder"
    )
    _lake_option(local)

    sm = commands.add_parser(
        "sagemaker",
        help="run a SageMaker training job with the training image, then register its model",
        description="Create a SageMaker training job (sagemaker SDK v3), wait for it, download its "
        "model.tar.gz and register it. aws.endpoint_url points it at an emulator.",
    )
    sm.add_argument(
        "--local",
        action="store_true",
        help="run the image under the SDK's own local mode (docker compose on this machine) instead: "
        "--train, --validation and --truth are then local paths",
    )
    sm.add_argument(
        "--image-uri",
        help="ECR URI of the training image (default: training.image_uri; "
        "with --local: a local image, default sparkmaker-training:latest)",
    )
    sm.add_argument("--role", help="IAM role ARN the job runs as (default: training.role_arn)")
    sm.add_argument("--train", required=True, help="s3:// prefix of the training Parquet files")
    sm.add_argument("--validation", help="s3:// prefix of validation Parquet files (default: split by loan_date)")
    sm.add_argument("--truth", help="s3:// URI of the generator's truth Parquet file")
    sm.add_argument("--output", help="s3:// prefix for the job's output (default: s3://<aws.s3_bucket>/training)")
    sm.add_argument("--instance-type", help="training instance type (default: training.instance_type)")
    sm.add_argument("--job-name", help="training job name (default: sparkmaker-training-<time>-<random>)")
    sm.add_argument(
        "--max-runtime", type=int, default=3600, help="seconds before SageMaker stops the job (default 3600)"
    )
    sm.add_argument("--poll", type=float, default=30.0, help="seconds between status checks (default 30)")
    sm.add_argument("--timeout", type=float, help="stop waiting after this many seconds (the job keeps running)")
    _hp_option(sm)
    sm.add_argument("--promote", action="store_true", help="make the new model production (the first model always is)")
    _lake_option(sm)

    models = commands.add_parser("models", help="list the registered models")
    _lake_option(models)
    promote = commands.add_parser("promote", help="make a registered model the production model")
    promote.add_argument("version", help="the version to promote (see: python -m training models)")
    _lake_option(promote)
    rollback = commands.add_parser("rollback", help="make the previous production model production again")
    _lake_option(rollback)
    registry = commands.add_parser(
        "registry", help="registry maintenance: import an old index.json registry into MLflow"
    )
    actions = registry.add_subparsers(dest="action", metavar="{import}", required=True)
    imports = actions.add_parser(
        "import",
        help="import an index.json registry (versions, tarballs, aliases, history) into MLflow, once",
        description="Register every version of an old index.json registry in the MLflow registry (each an MLflow "
        "run with its metrics, lineage and files), append its alias history and point the aliases where it left "
        "them. The old folder is not changed. A second import of the same folder says so and changes nothing.",
    )
    imports.add_argument(
        "--from",
        dest="source",
        type=Path,
        help="the folder holding index.json (default: the registry folder, <lake>/registry)",
    )
    _lake_option(imports)
    return parser


def _hp_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter, repeatable (e.g. --hp max_depth=3 --hp scale_pos_weight=auto)",
    )


def _lake_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", help="lake root (default: paths.lake setting); the registry lives under it")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    lake = getattr(args, "lake", None)
    if lake:
        root = lake if "://" in lake else str(Path(lake).resolve())
        settings = settings.model_copy(update={"paths": settings.paths.model_copy(update={"lake": root})})
    return settings


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_models(registry) -> None:
    versions = registry.versions()
    if not versions:
        print(f"no models in the registry {getattr(registry, 'root', '')} yet: train one with python -m training local")
        return
    rows = [
        [v.version, v.stage or "-", v.created_at, v.run_id or "-", _fmt(v.roc_auc), _fmt(v.threshold, 6)]
        for v in versions
    ]
    print(_table(rows, ["VERSION", "STAGE", "CREATED", "DATA SNAPSHOT", "ROC-AUC", "THRESHOLD"]))


def _report(result, registry) -> None:
    metrics = result.metadata["metrics"]
    ceiling = metrics.get("ceiling_roc_auc")
    print(
        f"registered model version {result.version}: ROC-AUC {metrics['roc_auc']:.4f}"
        + (f" (ceiling {ceiling:.4f})" if ceiling is not None else "")
        + f", threshold {result.metadata['threshold']:.6f}"
    )
    if result.promoted:
        print(f"version {result.version} is now the production model")
    else:
        print(
            f"production model stays version {result.production}; promote this one with: python -m training promote {result.version}"
        )
    print(f"model card: {registry.model_dir(result.version) / 'model-card.md'}")
    run = registry.run_of(result.version)
    if run:
        print(
            f"MLflow run {run} (model {getattr(registry, 'model_name', '')!r} version {result.version}) in {getattr(registry, 'uri', '')}"
        )


def _import(args: argparse.Namespace, settings: Settings, registry) -> int:
    from training.mlflow_registry import MlflowRegistry
    from training.mlflow_store import tracking_uri
    from training.registry_import import import_index

    if not isinstance(registry, MlflowRegistry):
        raise UserError('training.registry_backend is "index": set it to "mlflow" (the default) to import into MLflow')
    source = args.source or settings.registry_dir()
    result = import_index(source, registry)
    if result.already:
        print(
            f"already imported: {result.source} is in the MLflow registry {settings.mlflow.model_name!r}; nothing changed"
        )
        return 0
    aliases = ", ".join(f"{name} -> {version}" for name, version in result.aliases.items()) or "none"
    print(
        f"imported {len(result.versions)} versions from {result.source} into {tracking_uri(settings)} "
        f"(model {settings.mlflow.model_name!r}); aliases: {aliases}"
    )
    if result.kept_production:
        print(
            f"the MLflow registry already had a production model (version {result.kept_production}): it stays production"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "train":
        from training.entrypoint import main as train_main

        return train_main([])

    settings = _settings(args)
    from training.registry import open_registry

    registry = open_registry(settings)
    if args.command == "models":
        print_models(registry)
        from training.registry_import import pending_index

        pending = pending_index(settings)
        if pending is not None:
            print(
                f"an older index.json registry is in {pending}, not imported yet: import it with python -m training registry import"
            )
        return 0
    if args.command == "promote":
        previous = registry.alias()
        registry.promote(args.version)
        print(f"version {registry.alias()} is now the production model (was {previous or 'none'})")
        return 0
    if args.command == "rollback":
        previous = registry.alias()
        version = registry.rollback()
        print(f"rolled back: version {version} is the production model again (was {previous})")
        return 0

    if args.command == "registry":
        return _import(args, settings, registry)

    from training.local import parse_hp_pairs

    hps = parse_hp_pairs(args.hp)
    if args.command == "local":
        from training import local

        source = local.source_for(args.train) if args.train else local.default_source(settings)
        truth = args.truth
        if truth is None and not args.no_truth and not args.train:
            found = local.truth_beside_input(settings)
            if found:
                print(f"using the truth file {found} (pass --no-truth to skip the ceiling)")
                truth = str(found)
        print(f"training on {source.uri}" + (f" (snapshot {source.run_id})" if source.run_id else ""))
        result = local.train_local(settings, registry, source, args.validation, truth, hps, args.promote, args.keep)
        _report(result, registry)
        return 0

    if args.command == "sagemaker" and args.local:
        import datetime as dt

        from training.local import register_with_policy
        from training.sagemaker_local import run_local_mode

        channels = {
            name: Path(value)
            for name, value in (("train", args.train), ("validation", args.validation), ("truth", args.truth))
            if value
        }
        if "truth" in channels and channels["truth"].is_file():
            channels["truth"] = channels["truth"].parent  # a channel is a folder
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        root = Path(settings.paths.state_dir) / "sagemaker-local" / stamp
        hyperparameters = {**hps, "data_uri": str(Path(args.train).resolve())}
        trained = run_local_mode(
            args.image_uri or settings.training.image_uri or "sparkmaker-training:latest",
            channels,
            hyperparameters,
            root,
        )
        _report(register_with_policy(registry, trained.tar, trained.metadata, args.promote), registry)
        return 0

    if args.command == "sagemaker":
        from training.sagemaker_job import JobRequest, train_on_sagemaker

        output = args.output or (f"s3://{settings.aws.s3_bucket}/training" if settings.aws.s3_bucket else None)
        if not output:
            raise UserError("no output location: pass --output s3://bucket/prefix or set aws.s3_bucket")
        request = JobRequest(
            image_uri=args.image_uri or settings.training.image_uri,
            role_arn=args.role or settings.training.role_arn,
            train=args.train,
            output=output,
            instance_type=args.instance_type or settings.training.instance_type,
            validation=args.validation,
            truth=args.truth,
            hyperparameters=hps,
            job_name=args.job_name,
            max_runtime_seconds=args.max_runtime,
        )
        result = train_on_sagemaker(settings, registry, request, args.promote, args.poll, args.timeout)
        _report(result, registry)
        return 0
    raise UserError(f"unknown command {args.command}")
