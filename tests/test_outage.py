"""angos.outage: a backend outage is one WARNING line when it starts and one INFO line when it ends,
however many loops and threads hit it; the retry delay backs off to a cap; only real
"unreachable" errors count as outages.

The worker-level behaviour (``angos worker`` with its Redis stopped) is in
tests/queue/test_outage.py.
"""

from __future__ import annotations

import logging
import threading

import pytest

from angos import outage as outage_mod
from angos.outage import MAX_DELAY, Outage, is_unreachable, redis_address


def records(caplog, level=None):
    return [r for r in caplog.records if r.name == "angos.outage" and (level is None or r.levelno == level)]


def test_first_failure_is_one_warning_naming_the_backend_the_error_and_the_retry(caplog):
    caplog.set_level(logging.DEBUG, logger="angos.outage")
    down = Outage("Redis at 10.0.0.5:6379")
    for _ in range(50):
        down.failed(ConnectionRefusedError(111, "Connection refused"))
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    text = warnings[0].getMessage()
    assert "Redis at 10.0.0.5:6379 is unreachable" in text and "Connection refused" in text and "retrying" in text
    assert warnings[0].exc_info is None  # a line, not a traceback
    assert len(records(caplog, logging.DEBUG)) == 49


def test_the_retry_delay_doubles_up_to_the_cap_and_starts_over_after_a_recovery():
    down = Outage("S3 bucket b")
    delays = [down.failed(TimeoutError("timed out")) for _ in range(10)]
    assert delays[:3] == [0.5, 1.0, 2.0]
    assert delays == sorted(delays) and delays[-1] == MAX_DELAY
    down.ok()
    assert down.failed(TimeoutError("timed out")) == 0.5


def test_recovery_is_one_info_line_and_ok_without_an_outage_logs_nothing(caplog):
    caplog.set_level(logging.DEBUG, logger="angos.outage")
    down = Outage("Redis at 127.0.0.1:1")
    down.ok()
    assert records(caplog) == []
    down.failed(ConnectionResetError(104, "reset"))
    down.ok()
    down.ok()
    infos = records(caplog, logging.INFO)
    assert len(infos) == 1 and "Redis at 127.0.0.1:1 is reachable again (down for " in infos[0].getMessage()
    assert not down.down


def test_concurrent_failures_from_many_threads_log_one_warning(caplog):
    caplog.set_level(logging.INFO, logger="angos.outage")
    down = Outage("Redis at 127.0.0.1:2")
    go = threading.Event()

    def hammer():
        go.wait()
        for _ in range(200):
            down.failed(ConnectionRefusedError(111, "Connection refused"))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    assert len(records(caplog, logging.WARNING)) == 1


def test_outage_is_shared_by_name_so_every_user_of_one_redis_reports_once():
    assert outage_mod.outage("Redis at h:1") is outage_mod.redis_outage("redis://:secret@h:1/0")
    assert outage_mod.outage("Redis at h:1") is not outage_mod.outage("Redis at h:2")


def test_redis_address_never_shows_the_password():
    assert redis_address("redis://user:s3cret@cache.example:6380/2") == "cache.example:6380"
    assert redis_address("redis://localhost") == "localhost:6379"


def _client_error(status: int):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": "X", "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


@pytest.mark.parametrize("make,expected", [
    (lambda: ConnectionRefusedError(111, "refused"), True),
    (lambda: TimeoutError("timed out"), True),
    (lambda: __import__("redis").exceptions.ConnectionError("Error 111 connecting"), True),
    (lambda: __import__("redis").exceptions.TimeoutError("Timeout reading"), True),
    (lambda: __import__("botocore.exceptions").exceptions.EndpointConnectionError(endpoint_url="http://x"), True),
    (lambda: _client_error(503), True),
    (lambda: _client_error(404), False),
    (lambda: __import__("redis").exceptions.ResponseError("WRONGTYPE"), False),
    (lambda: ValueError("a bug"), False),
], ids=["refused", "timeout", "redis-connection", "redis-timeout", "s3-endpoint", "s3-503", "s3-404",
        "redis-response-error", "value-error"])
def test_only_unreachable_backends_count_as_outages(make, expected):
    assert is_unreachable(make()) is expected
