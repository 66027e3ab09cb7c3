"""Skip markers for tests that need a real data file from ``../shared/data`` (or ``$DMTL_DATA``)."""

from __future__ import annotations

import pytest

from dmtl.data import datasets
from dmtl.errors import DataError


def have(name: str) -> bool:
    """Whether data set ``name`` is present with the right checksum."""
    try:
        datasets.dataset_path(name)
    except DataError:
        return False
    return True


def needs(name: str) -> pytest.MarkDecorator:
    """Skip unless data set ``name`` is available, naming the missing file."""
    info = datasets.DATASETS[name]
    return pytest.mark.skipif(
        not have(name), reason=f"{info.filename} is not available (../shared/data or $DMTL_DATA)"
    )
