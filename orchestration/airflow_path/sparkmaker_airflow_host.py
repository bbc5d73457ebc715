"""Imported by Airflow's own processes (on their PYTHONPATH; see orchestration/runtime.py), not by the project.

Airflow names each task's machine with `[core] hostname_callable` and fetches a running task's log
from http://<that name>:<worker_log_server_port>. Every component and task of this Airflow runs on
one machine (or in one container), and its log server listens on 127.0.0.1 only, so the name is
the loopback address: the machine's own name may resolve to an address the server does not
listen on.
"""


def loopback() -> str:
    return "127.0.0.1"
