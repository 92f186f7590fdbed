"""The JSON log: the libraries' standard-library records (Faust, aiokafka, kafka-python) come
out as JSON objects of the same shape as slaledger's own lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from slaledger.logs import configure_logging


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    structlog.reset_defaults()


@pytest.mark.usefixtures("root_handlers")
def test_library_log_lines_are_json_like_ours(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    structlog.get_logger("slaledger").warning("ours", ticket_id="T-1")
    logging.getLogger("faust.transport").warning("rebalance of %s", "slaledger")
    logging.getLogger("aiokafka.consumer").error("fetch failed")
    logging.getLogger("kafka.conn").info("held back: below warning")
    try:
        raise ConnectionError("broker gone")
    except ConnectionError:
        logging.getLogger("kafka.client").exception("connection lost")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    ours, faust_line, aiokafka_line, kafka_line = lines
    assert ours["event"] == "ours" and ours["level"] == "warning" and ours["ticket_id"] == "T-1"
    assert faust_line["event"] == "rebalance of slaledger" and faust_line["logger"] == "faust.transport"
    assert faust_line["level"] == "warning" and set(ours) - {"ticket_id"} <= set(faust_line)
    assert aiokafka_line["logger"] == "aiokafka.consumer" and aiokafka_line["level"] == "error"
    assert kafka_line["event"] == "connection lost" and "ConnectionError: broker gone" in kafka_line["exception"]


@pytest.mark.usefixtures("root_handlers")
def test_expected_conditions_are_one_line_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """#32 item 6: what a normal run meets (kafka-python's transport losing its socket at a
    stop, a connection reset by the broker stopping, Kafka's group coordinator not elected yet
    at start) is one line naming the exception; any other exception keeps its traceback."""
    from aiokafka.errors import GroupCoordinatorNotAvailableError  # what Faust's consumer meets

    configure_logging("console", "info")
    expected: list[BaseException] = [AttributeError("'NoneType' object has no attribute 'recv'"),
                                      ConnectionResetError(104, "Connection reset by peer"),
                                      GroupCoordinatorNotAvailableError()]
    for exc in [*expected, KeyError("a bug")]:
        try:
            raise exc
        except BaseException:
            logging.getLogger("kafka.net.transport").exception("Error receiving network data closing socket")
    err = capsys.readouterr().err
    assert err.count("Traceback") == 1 and "KeyError: 'a bug'" in err, err
    first = err.splitlines()
    assert "Error receiving network data closing socket (AttributeError: 'NoneType' object has no attribute " \
           "'recv')" in first[0]
    assert "(ConnectionResetError: [Errno 104] Connection reset by peer)" in first[1]
    assert "(GroupCoordinatorNotAvailableError: " in first[2]
