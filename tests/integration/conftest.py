"""tests/integration/: whole commands and pipelines run end to end (subprocesses, several stages);
every test here is slow: `make test` runs them, `make test-fast` does not."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.slow)
