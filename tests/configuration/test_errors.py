"""last_error_line: what a failed program said last, picked from real-looking outputs."""

from configuration.errors import last_error_line

TRACEBACK = """\
2026-12-02T00:55:37Z [info     ] Performing upgrade to the metadata database
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/psycopg/connection.py", line 130, in connect
    raise last_ex.with_traceback(None)
psycopg.OperationalError: connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused
The above exception was the direct cause of the following exception:
sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection failed: port 1 failed
(Background on this error at: https://sqlalche.me/e/21/e3q8)
"""


def test_the_last_exception_a_traceback_names_wins_over_a_later_line_mentioning_an_error():
    assert (
        last_error_line(TRACEBACK)
        == "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection failed: port 1 failed"
    )


def test_without_a_traceback_the_last_line_mentioning_an_error_then_the_last_line():
    assert last_error_line("starting\nerror: the lake is not writable\nbye\n") == "error: the lake is not writable"
    assert last_error_line("starting\nstopped at step 3\n\n") == "stopped at step 3"
    assert last_error_line("  \n") == "no output"


def test_a_word_that_only_begins_like_an_exception_is_not_one():
    assert last_error_line("ValueError: bad row\nErrors found in 3 files, see above\n") == "ValueError: bad row"


def test_the_line_is_cut_to_the_limit():
    assert last_error_line("RuntimeError: " + "x" * 1000, limit=50) == ("RuntimeError: " + "x" * 1000)[:50]
