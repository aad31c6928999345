"""Fixtures: the built binaries (bookshop.bin_dir) and a log directory that is printed when a
test fails."""

from __future__ import annotations

from bookshop import bin_dir  # noqa: F401 (the session fixture, shared with tests/ui)
# On failure, the logs of the processes the test started (tmp_path/logs) end the report.
from failure_logs import pytest_runtest_makereport  # noqa: F401
