"""What keeps the local stack's SQL server closed: its credentials, and the unprivileged user it runs as.

- SQL credentials: user `stack.sql_user`, a random 256-bit password made once and kept in
  `<state_dir>/sql-password` (0600) for the person who started the stack; the server is
  given only a salted PBKDF2-SHA256 hash of it (`features.java_extensions.password_hash`), checked by
  `sparkmaker.PasswordAuthenticator` (features/java/).
- The service user: where the stack is started as root, the SQL server runs as
  `stack.service_user` (a system user created if absent, no login shell), which can read
  the lake and nothing of root's: not the keys, logs or prediction log under the state
  folder (0700). Empty `stack.service_user` runs it as the starting user.
"""

from __future__ import annotations

import os
import pwd
import secrets
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from configuration.errors import UserError
from configuration.files import private_dir

SERVICE_HOME = Path("/var/lib/sparkmaker")


def ensure_sql_password(state: Path) -> str:
    """The SQL server's password: made once (256 random bits), kept in <state_dir>/sql-password (0600)."""
    path = state / "sql-password"
    if not path.exists():
        private_dir(state)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    os.chmod(path, 0o600)
    return path.read_text().strip()


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int
    home: Path


def ensure_service_user(name: str) -> ServiceUser | None:
    """The unprivileged user to run services as, created if absent; None when not root or no user is asked for."""
    if not name or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        proc = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--home-dir",
                str(SERVICE_HOME),
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 and "already exists" not in proc.stderr:  # another start may have made it
            raise UserError(
                f"cannot create the service user {name}: {proc.stderr.strip()[:200]} "
                '(or set stack.service_user = "" to run the SQL server as root)'
            ) from None
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise UserError(f"stack.service_user {name} is root: name an unprivileged user")
    home = Path(entry.pw_dir)
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    os.chmod(home, 0o755)
    return ServiceUser(name, entry.pw_uid, entry.pw_gid, home)


def readable_by_others(path: Path) -> bool:
    """Whether a user with no relation to the owner can reach `path` (x on every parent) and read it."""
    path = path.resolve()
    for parent in path.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def require_readable_lake(lake: Path, user: ServiceUser) -> None:
    lake.mkdir(parents=True, exist_ok=True)
    if not readable_by_others(lake):
        raise UserError(
            f"the SQL server runs as user {user.name}, who cannot read the lake {lake}: allow others "
            'to enter its parent folders (chmod o+x) or set stack.service_user = "" to run it as root'
        )
