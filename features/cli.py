"""Command line of the feature pipeline.

python -m features --input URI [--lake URI] [--as-of YYYY-MM-DD] [--master URL] [--manifest PATH]
python -m features sql [--lake URI] "SELECT ..."
python -m features snapshots [--all | --prune [--keep N] [--yes]] [--lake URI]
python -m features materialize [--snapshot RUN_ID] [--lake URI]
python -m features metastore [--host 127.0.0.1] [--port 9083] [--lake URI]
python -m features class-archive [--force]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from pathlib import Path

from configuration.errors import UserError
from configuration.settings import Settings, load_settings

COMMANDS = ("run", "sql", "snapshots", "materialize", "metastore", "class-archive")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: write it YYYY-MM-DD") from None


def _lake_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lake", help="lake root: a local path, file://, hdfs:// or s3a:// URI (default: paths.lake setting)"
    )
    parser.add_argument(
        "--master", help="Spark master URL, e.g. local[4] or spark://host:7077 (default: spark.master setting)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m features",
        description="Turn the raw loans CSV into validated, point-in-time features (Parquet + Hive tables).",
        epilog="Without a command, runs the feature job. Settings: configuration/sparkmaker.toml and SPARKMAKER_* variables.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{run,sql,snapshots,materialize,metastore,class-archive}")

    run = commands.add_parser("run", help="run the feature job (the default command)")
    run.add_argument("--input", required=True, help="raw CSV: a file or folder path or URI")
    _lake_option(run)
    run.add_argument("--as-of", type=_date, help="date of the latest-features snapshot (default: today, UTC)")
    run.add_argument("--manifest", type=Path, help="also write the run manifest to this local file")

    sql = commands.add_parser("sql", help="run a SQL query against the feature tables, print CSV with a header")
    _lake_option(sql)
    sql.add_argument("query", help='e.g. "SELECT * FROM credit_risk.latest_features LIMIT 5"')

    snapshots = commands.add_parser(
        "snapshots",
        help="show the current snapshot's manifest; list every snapshot (--all) or delete old ones (--prune)",
        description="Without options: the current snapshot's manifest. --all lists every snapshot of a local lake "
        "and why it is kept; --prune deletes the others (a dry run unless --yes). Kept: the current snapshot, the "
        "newest --keep, every snapshot a registered model was trained on, and folders without a manifest younger "
        "than a day (a run may be writing them).",
    )
    snapshots.add_argument("--lake", help="lake root (default: paths.lake setting)")
    snapshots.add_argument("--all", action="store_true", help="list every snapshot, newest first")
    snapshots.add_argument("--prune", action="store_true", help="delete the snapshots nothing keeps (with --yes)")
    snapshots.add_argument(
        "--keep", type=int, default=5, metavar="N", help="newest complete snapshots kept (default: 5)"
    )
    snapshots.add_argument(
        "--yes", action="store_true", help="with --prune: really delete (default: only say what would go)"
    )

    materialize = commands.add_parser(
        "materialize",
        help="load a snapshot's latest features into the online store (settings.online_store) and switch to it",
    )
    materialize.add_argument("--snapshot", metavar="RUN_ID", help="run id of the snapshot (default: the current one)")
    _lake_option(materialize)

    metastore = commands.add_parser(
        "metastore", help="run a Hive Metastore service over the lake's metastore database (foreground)"
    )
    metastore.add_argument("--lake", help="lake root (default: paths.lake setting)")
    metastore.add_argument("--port", type=int, default=9083, help="Thrift port (default 9083)")
    metastore.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")

    archive = commands.add_parser(
        "class-archive",
        help="build the class-data-sharing archive that makes Spark's driver JVM start faster (once per Java and jars)",
        description="Runs the feature job once on a small generated file with -XX:ArchiveClassesAtExit and keeps the "
        "archive for this Java and these Spark jars; every SparkSession started from Python then maps it "
        "(spark.class_archive). About a minute; nothing to do when it exists.",
    )
    archive.add_argument("--force", action="store_true", help="build it again even if it exists")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["run", *argv]
    return build_parser().parse_args(argv)


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict = {}
    if getattr(args, "lake", None):
        lake_root = args.lake if "://" in args.lake else str(Path(args.lake).resolve())
        overrides["paths"] = {"lake": lake_root}
    settings = load_settings()
    if overrides:
        settings = settings.model_copy(update={"paths": settings.paths.model_copy(update=overrides["paths"])})
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = _settings(args)
    if args.command == "snapshots":
        return run_snapshots(settings, args)
    if args.command == "materialize" and settings.lake_is_local:
        return run_materialize(settings, args.snapshot)  # pyarrow reads a local lake: no Spark to start

    if args.command == "class-archive":
        from features import class_archive

        class_archive.build(settings, class_archive.default_folder(settings), force=args.force)
        return 0

    if args.command == "metastore":
        import os

        from features.metastore import service_command

        command = service_command(
            settings, args.port, Path(settings.paths.state_dir) / "metastore-conf", host=args.host
        )
        print(f"Hive metastore on thrift://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
        os.execvp(command[0], command)

    from features import session

    input_check = None
    if args.command == "run":
        from features.input_check import InputCheck

        session.require_java()
        # A wrong input fails here, before any JVM starts; a local file's sha256 runs beside the start.
        input_check = InputCheck(_input_uri(args.input))
    spark = session.build_session(settings, f"sparkmaker-features-{args.command}", master=args.master)
    try:
        if args.command == "sql":
            return run_sql(spark, settings, args.query)
        if args.command == "materialize":
            return run_materialize(settings, args.snapshot, spark)
        return run_job(spark, settings, args, input_check)
    except UserError:
        raise
    except Exception as exc:
        explained = session.explain_metastore_error(exc, settings)
        if explained:
            raise explained from None
        raise
    finally:
        spark.stop()


def run_snapshots(settings: Settings, args: argparse.Namespace) -> int:
    from features import lake, retention

    if args.yes and not args.prune:
        raise UserError("--yes only confirms --prune: add --prune to delete old snapshots")
    if not (args.all or args.prune):
        print(json.dumps(lake.read_manifest(settings), indent=2))
        return 0
    lines, doomed = retention.prune(settings, args.keep, apply=args.prune and args.yes)
    print("\n".join(lines) if lines else f"no snapshots in {lake.dataset_uri(settings)}")
    if args.prune:
        freed = sum(s.size_bytes for s in doomed) / 1e6
        if args.yes:
            print(f"deleted {len(doomed)} snapshot(s), {freed:,.1f} MB freed")
        else:
            print(f"would delete {len(doomed)} snapshot(s), {freed:,.1f} MB: run again with --yes to delete them")
    return 0


def _input_uri(text: str) -> str:
    return text if "://" in text else str(Path(text).resolve())


def run_job(spark, settings: Settings, args: argparse.Namespace, input_check=None) -> int:
    from features import job

    params = job.JobParams(
        input_uri=_input_uri(args.input),
        as_of=args.as_of or dt.datetime.now(dt.timezone.utc).date(),
        manifest_path=args.manifest.resolve() if args.manifest else None,
        input_check=input_check,
    )
    manifest = job.run(spark, settings, params)
    outputs = manifest["outputs"]
    print(f"snapshot {manifest['run_id']} (as of {manifest['as_of']}) is current")
    for name, output in outputs.items():
        print(f"  {name:<9} {output['rows']:>10,} rows  {output['table']:<32} {output['uri']}")
    print(f"  manifest  {outputs['training']['uri'].rsplit('/', 1)[0]}/manifest.json")
    print(f'query it:  python -m features sql "SELECT * FROM {outputs["latest"]["table"]} LIMIT 5"')
    if settings.features.materialize:
        try:
            run_materialize(settings, manifest["run_id"], spark)
        except UserError as exc:
            raise UserError(
                f"snapshot {manifest['run_id']} is current in the lake, but the online store was not updated ({exc}); "
                f"retry with: python -m features materialize --snapshot {manifest['run_id']}"
            ) from None
    return 0


def run_materialize(settings: Settings, run_id: str | None, spark=None) -> int:
    from features.online.materialize import materialize

    result = materialize(settings, run_id, spark=spark)
    snapshot = result.snapshot
    print(
        f"online store: snapshot {snapshot.run_id} (as of {snapshot.as_of}) is current, "
        f"{snapshot.rows:,} customers in {result.seconds:.1f} s ({result.store})"
    )
    return 0


def run_sql(spark, settings: Settings, query: str) -> int:
    from pyspark.errors import AnalysisException, ParseException

    if spark.catalog.databaseExists(settings.features.database):
        spark.catalog.setCurrentDatabase(settings.features.database)
    try:
        frame = spark.sql(query)
    except (AnalysisException, ParseException) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"the query failed: {first}") from None
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(frame.columns)
    for row in frame.toLocalIterator():
        writer.writerow(["" if value is None else value for value in row])
    return 0
