"""Every operation of the OpenAPI document, fuzzed against a running `facegrid up`: whatever a
client sends, valid by the schema or not, the answer is never a 5xx.

Schemathesis generates the requests from the document the gateway serves (so the document's
request schemas are exercised too). `bench/gateway_fuzz.py` runs the same check with many more
examples per operation; this test keeps a smaller number so the suite stays quick.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from .conftest import RunningStack, stack_with_models

EXAMPLES = int(os.environ.get("FACEGRID_FUZZ_EXAMPLES", "15"))
# The suite replays the same examples every run (a failure there is a regression, never luck);
# bench/gateway_fuzz.py sets FACEGRID_FUZZ_EXAMPLES and explores new ones each time.
DERANDOMIZE = "FACEGRID_FUZZ_EXAMPLES" not in os.environ


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, model_bundle: Path) -> Iterator[RunningStack]:
    with stack_with_models(tmp_path_factory.mktemp("fuzz"), model_bundle) as (running, _):
        yield running


def test_no_request_gets_a_server_error(fuzzed: RunningStack) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed.api}/docs/v1/openapi.json")
    # Requests without the token are covered by the token tests; here every request carries it,
    # so the generated data reaches the handlers.
    schema.config.generation.update(with_security_parameters=False)
    headers = {"Authorization": f"Token {fuzzed.token}"}
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    operations = 0
    for found in schema.get_all_operations():
        operation = found.ok()
        if operation.path.endswith("/events"):
            continue  # the live event stream answers 200 at once and then stays open by design
        operations += 1
        for mode in GenerationMode:
            _fuzz(operation, mode, fuzzed.api, headers, statuses, failures)
    print(f"fuzzed {operations} operations, {statuses.total()} requests: {dict(statuses)}")
    assert operations >= 29  # everything the v1 document lists but /events
    assert not failures, "\n".join(failures[:20])


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    headers: dict[str, str],
    statuses: Counter[int],
    failures: list[str],
) -> None:
    """Sends EXAMPLES generated requests to one operation; counts statuses, notes failures."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        suppress_health_check=list(HealthCheck),
    )
    def send(case: Any) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=60)
        statuses[response.status_code] += 1
        problem = _problem(response)
        if problem:
            failures.append(
                f"{operation.label} ({mode.value}): {problem}\n"
                f"  reproduce: {case.as_curl_command(headers=headers)}"
            )

    try:
        send()
    except Unsatisfiable:
        # Negative mode has nothing to break in an operation without parameters or body.
        assert mode is GenerationMode.NEGATIVE, operation.label


def _problem(response: Any) -> str:
    """What is wrong with an answer: a 5xx, or an error outside the documented format."""
    if response.status_code >= 500:
        return f"{response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            return f"{response.status_code} is not JSON: {response.text[:300]}"
        if not (isinstance(body.get("code"), str) and isinstance(body.get("reason"), str)):
            return f"{response.status_code} has no code and reason: {body}"
    return ""
