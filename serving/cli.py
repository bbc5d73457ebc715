"""`python -m serving`: the model server, SageMaker deployment and batch scoring."""

from __future__ import annotations

import argparse
import json
import sys

from configuration.settings import load_settings

DESCRIPTION = """\
Serve the credit-risk model (SageMaker's container contract), deploy it to a SageMaker
endpoint, or score a features table in batch (with Spark, or in this process when the input
is small and local: --engine).

  python -m serving [--model-dir DIR]        serve (default model: the registry's production model)
  serve                                      the same: the container's entry point
  python -m serving sagemaker deploy --model-version V --endpoint-name NAME
  python -m serving sagemaker delete --endpoint-name NAME
  python -m serving batch [--input URI] [--output URI] [--engine auto|spark|arrow]
"""


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        help="model directory to serve (xgboost-model + model-metadata.json); default: serving.model_dir, "
        "else /opt/ml/model when present, else the registry's production model (followed on promotion)",
    )
    parser.add_argument("--host", help="address to bind (default: serving.host)")
    parser.add_argument("--port", type=int, help="port (default: SAGEMAKER_BIND_TO_PORT, else serving.port)")
    parser.add_argument(
        "--workers", type=int, help="worker processes (default: SAGEMAKER_MODEL_SERVER_WORKERS, else serving.workers)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serving", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_serve_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the model server (the container's entry point)")
    _add_serve_options(serve)

    sagemaker = commands.add_parser("sagemaker", help="deploy a registered model to a SageMaker endpoint, or delete it")
    actions = sagemaker.add_subparsers(dest="action", metavar="ACTION", required=True)
    deploy = actions.add_parser(
        "deploy",
        help="upload model.tar.gz to S3 and create or update the model, endpoint config and endpoint",
        description="An existing endpoint is updated with a new endpoint config (UpdateEndpoint), never deleted.",
    )
    deploy.add_argument("--model-version", required=True, help="registry version to deploy")
    deploy.add_argument("--endpoint-name", help="endpoint name (default: serving.endpoint_name)")
    image = deploy.add_mutually_exclusive_group()
    image.add_argument("--image-uri", help="this project's serving image in ECR (default: serving.image_uri)")
    image.add_argument(
        "--builtin-xgboost",
        action="store_true",
        help="host with AWS's managed XGBoost image for the region instead (text/csv only, no version header)",
    )
    deploy.add_argument("--xgboost-version", default="3.2-0", help="managed XGBoost image version (default 3.2-0)")
    deploy.add_argument("--instance-type", help="instance type (default: serving.instance_type)")
    deploy.add_argument("--instance-count", type=int, help="instance count (default: serving.instance_count)")
    deploy.add_argument(
        "--role-arn", help="execution role of the model (default: serving.role_arn, else training.role_arn)"
    )
    deploy.add_argument(
        "--no-wait", action="store_true", help="return once the calls are made, without waiting for InService"
    )
    delete = actions.add_parser(
        "delete", help="delete the endpoint and the endpoint configs and models this tool created for it"
    )
    delete.add_argument("--endpoint-name", help="endpoint name (default: serving.endpoint_name)")

    batch = commands.add_parser(
        "batch",
        help="score a features table with a registered model (Spark, or in process when small); write Parquet and a Hive table",
        description="Default input: the current snapshot's latest-features table; default model: production.",
    )
    batch.add_argument("--input", help="Parquet features table URI (default: the current snapshot's latest table)")
    batch.add_argument(
        "--output", help="output Parquet URI (default: <lake>/<dataset>/batch_predictions/<run_id>-v<version>)"
    )
    batch.add_argument("--model-version", help="registry version (default: the production model)")
    batch.add_argument("--table", help="Hive table in features.database (default: serving.batch_table)")
    batch.add_argument(
        "--engine",
        choices=("auto", "spark", "arrow"),
        help="spark: a Spark job; arrow: pyarrow and XGBoost in this process (local files, local master); "
        "auto: arrow up to serving.batch_arrow_max_rows rows, else spark (default: serving.batch_engine)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    if args.command in (None, "serve"):
        from serving.logs import configure_logging
        from serving.server import plan, run

        configure_logging()
        server = plan(settings, model_dir=args.model_dir, host=args.host, port=args.port, workers=args.workers)
        return run(settings, server)
    if args.command == "sagemaker":
        from serving import deploy as sm

        if args.action == "deploy":
            result = sm.deploy(
                settings,
                version=args.model_version,
                endpoint_name=args.endpoint_name,
                image_uri=args.image_uri,
                builtin_xgboost=args.builtin_xgboost,
                xgboost_version=args.xgboost_version,
                instance_type=args.instance_type,
                instance_count=args.instance_count,
                role_arn=args.role_arn,
                wait=not args.no_wait,
            )
        else:
            result = sm.delete(settings, endpoint_name=args.endpoint_name)
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    if args.command == "batch":
        from serving.batch import run_batch

        result = run_batch(
            settings,
            input_uri=args.input,
            output_uri=args.output,
            version=args.model_version,
            table=args.table,
            engine=args.engine,
        )
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    raise AssertionError(args.command)
