"""A running `facegrid up` (real services, real models) for mass-enroll's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bulk.bulkapi import Api
from tests.stack.conftest import stack_with_models


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, model_bundle: Path) -> Iterator[Api]:
    with stack_with_models(tmp_path_factory.mktemp("bulk"), model_bundle) as (running, _base):
        yield Api(running.api, running.token)
