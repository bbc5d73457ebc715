"""`python -m api`: serve the prediction API, or make an API key.

python -m api [serve] [--host H] [--port P] [--workers N]
python -m api keygen [--write] [--config PATH]
python -m api openapi [--write | --check]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from configuration.network import check_port
from configuration.settings import DEFAULT_CONFIG_FILES, load_settings

COMMANDS = ("serve", "keygen", "openapi")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m api",
        description="The prediction API: GET /predict/{id} with features from the online store and the model endpoint.",
        epilog="Without a command, serves. Settings: the [api] and [online_store] sections of configuration/*.toml.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{serve,keygen,openapi}")
    serve = commands.add_parser("serve", help="serve the API with uvicorn (the default command)")
    serve.add_argument("--host", help="address to bind (default: api.host)")
    serve.add_argument("--port", type=int, help="port (default: api.port)")
    serve.add_argument("--workers", type=int, help="worker processes (default: api.workers)")
    keygen = commands.add_parser("keygen", help="print a new API key and its sha256 (what api.api_key_hashes holds)")
    keygen.add_argument("--write", action="store_true", help="also add the hash to api.api_key_hashes in --config")
    keygen.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_FILES[1],
        help=f"TOML file to add it to (default: {DEFAULT_CONFIG_FILES[1]})",
    )
    openapi = commands.add_parser(
        "openapi", help="print the OpenAPI document, or check or rewrite the frozen api/openapi.json"
    )
    mode = openapi.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite api/openapi.json (an intended interface change)")
    mode.add_argument(
        "--check", action="store_true", help="exit 1 naming the differences when api/openapi.json is stale"
    )
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["serve", *argv]
    return build_parser().parse_args(argv)


def keygen(write: bool, config: Path) -> int:
    from api.auth import append_hash, generate_key, hash_key

    key = generate_key()
    digest = hash_key(key)
    if write:
        append_hash(config, digest)
    print(f"key:    {key}")
    print(f"sha256: {digest}")
    if write:
        print(f"added the sha256 to api.api_key_hashes in {config}; restart the API to accept the key")
    else:
        print("add the sha256 to api.api_key_hashes (or run again with --write); the key itself is not kept anywhere")
    print(f'use it: curl -H "Authorization: Bearer {key}" http://HOST:PORT/predict/5008804')
    return 0


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import check_auth_settings
    from api.observability import configure_logging
    from configuration.workers import serve as workers_serve

    settings = load_settings()
    check_auth_settings(settings)
    host = args.host or settings.api.host
    port = args.port or settings.api.port
    workers = args.workers or settings.api.workers
    check_port(host, port)
    # Workers are processes that read the settings themselves: hand them the options the
    # settings' own way, and check here, in one line, that they will load.
    os.environ.update(
        {"SPARKMAKER_API__HOST": host, "SPARKMAKER_API__PORT": str(port), "SPARKMAKER_API__WORKERS": str(workers)}
    )
    load_settings()
    configure_logging()
    config = uvicorn.Config(
        "api.main:app_from_settings",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http="httptools",
        loop="uvloop",
        access_log=False,
        log_config=None,
        # X-Forwarded-* only from the proxies the settings name: uvicorn's default believes them from
        # loopback, where every local client connects, and one could then dodge the failed-auth limit.
        proxy_headers=bool(settings.api.trusted_proxies),
        forwarded_allow_ips=list(settings.api.trusted_proxies) or None,
        timeout_graceful_shutdown=20,
    )
    return workers_serve(config)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "keygen":
        return keygen(args.write, args.config)
    if args.command == "openapi":
        from api import openapi

        return openapi.main(args.write, args.check)
    return serve(args)
