"""What a service user is given (stack/security.py), checked on real files and a real user, without a stack."""

from __future__ import annotations

import os
import pwd
import subprocess

import pytest

from configuration.errors import UserError
from configuration.settings import load_settings
from stack.security import Grant, ensure_service_user, give, python_for, sql_server_environment, writable_folders

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="giving folders to another user needs root")


def owner(path) -> str:
    return pwd.getpwuid(os.lstat(path).st_uid).pw_name


@root_only
def test_give_chowns_the_tree_but_never_through_a_link(tmp_path):
    user = ensure_service_user("sparkmaker")
    assert user is not None
    outside = tmp_path / "roots-file"
    outside.write_text("root's")
    folder = tmp_path / "state" / "api"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "deep.txt").write_text("x")
    (folder / "link").symlink_to(outside)
    (folder / "dirlink").symlink_to(tmp_path)
    give(Grant(folder), user, [tmp_path / "state"], "API")
    assert {owner(p) for p in (folder, folder / "sub", folder / "sub" / "deep.txt", folder / "link")} == {"sparkmaker"}
    assert owner(outside) == "root" and owner(tmp_path) == "root"  # the links' targets are left alone
    assert oct(folder.stat().st_mode & 0o777) == "0o700"


@root_only
def test_depth_one_stops_below_the_folders_entries(tmp_path):
    user = ensure_service_user("sparkmaker")
    assert user is not None
    folder = tmp_path / "lake" / "_warehouse"
    (folder / "credit_risk.db" / "table").mkdir(parents=True)
    give(Grant(folder, 0o755, depth=1), user, [tmp_path / "lake"], "Hive metastore")
    assert owner(folder) == owner(folder / "credit_risk.db") == "sparkmaker"
    assert owner(folder / "credit_risk.db" / "table") == "root"
    assert oct(folder.stat().st_mode & 0o777) == "0o755"


@root_only
def test_a_folder_outside_state_and_lake_or_the_roots_themselves_are_refused(tmp_path):
    user = ensure_service_user("sparkmaker")
    assert user is not None
    for path in (tmp_path / "elsewhere", tmp_path / "state"):
        with pytest.raises(UserError, match="outside the state folder and the lake"):
            give(Grant(path), user, [tmp_path / "state"], "API")
    assert owner(tmp_path) == "root"


def test_the_list_names_each_services_folders(tmp_path):
    settings = load_settings(paths={"state_dir": str(tmp_path / "state"), "lake": str(tmp_path / "lake")})
    paths = {name: [g.path for g in writable_folders(settings, name)] for name in ("metastore", "model-server", "api")}
    assert paths == {
        "metastore": [tmp_path / "lake" / "_metastore", tmp_path / "lake" / "_warehouse"],
        "model-server": [tmp_path / "state" / "serving"],
        "api": [tmp_path / "state" / "api", tmp_path / "lake" / "online"],
    }
    assert writable_folders(settings, "thrift-server") == []


def test_the_sql_server_keeps_no_sparkmaker_variable_but_its_login_checks():
    env = {
        "PATH": "/usr/bin",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARKMAKER_API__API_KEY_HASHES": '["ab"]',
        "SPARKMAKER_CONSOLE__SESSION_SECRET": "s",
        "SPARKMAKER_SERVING__ADMIN_TOKEN": "t",
        "SPARKMAKER_SQL_USER": "sparkmaker",
        "SPARKMAKER_SQL_PASSWORD_HASH": "pbkdf2_sha256$1$a$b",
    }
    assert sql_server_environment(env) == {
        "PATH": "/usr/bin",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARKMAKER_SQL_USER": "sparkmaker",
        "SPARKMAKER_SQL_PASSWORD_HASH": "pbkdf2_sha256$1$a$b",
    }


@root_only
def test_the_service_users_python_runs_as_that_user_with_the_venvs_packages():
    user = ensure_service_user("sparkmaker")
    python = python_for(user)
    ran = subprocess.run(
        ["runuser", "-u", "sparkmaker", "--", python, "-c", "import os, pyarrow, fastapi; print(os.getuid())"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert ran.returncode == 0, ran.stderr
    assert int(ran.stdout) == pwd.getpwnam("sparkmaker").pw_uid


@root_only
def test_a_state_folder_behind_a_closed_folder_is_one_line():
    import shutil
    import tempfile
    from pathlib import Path

    from stack.security import require_reachable_state

    user = ensure_service_user("sparkmaker")
    assert user is not None
    top = Path(tempfile.mkdtemp(prefix="state_reach_"))  # under /tmp, open to others (pytest's tmp_path is not)
    try:
        os.chmod(top, 0o755)
        closed = top / "closed"
        (closed / "state").mkdir(parents=True)
        os.chmod(closed, 0o700)
        with pytest.raises(UserError, match=f"cannot pass {closed} to reach its folder"):
            require_reachable_state(closed / "state", user, "API")
        os.chmod(closed, 0o711)
        require_reachable_state(closed / "state", user, "API")
    finally:
        shutil.rmtree(top)
