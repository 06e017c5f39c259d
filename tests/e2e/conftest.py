"""Fixtures of the end-to-end tier (`make e2e`): one shared stack, fresh fakes per test.

`stack` is the shared `Stack` (long-lived token mode, ERP_LEAD_ID_FIELD set) with its fakes
emptied before the test; `make_stack(**env)` starts a separate one with other settings;
`lead_id` is a lead id no other test of the session uses (the dev server remembers event ids).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.e2e.harness import Stack

_lead_ids = itertools.count(25_500_001)


@pytest.fixture(scope="session")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack.started(tmp_path_factory.mktemp("e2e-stack")) as started:
        yield started


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    shared_stack.reset()
    return shared_stack


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    with ExitStack() as stacks:

        def make(**env: str) -> Stack:
            workdir = tmp_path / f"stack-{len(env)}-{id(env)}"
            workdir.mkdir()
            return stacks.enter_context(Stack.started(workdir, env=env))

        yield make


@pytest.fixture
def lead_id() -> int:
    return next(_lead_ids)
