"""The defense tests' shared fixture: the small training slice by class."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def pool(fmnist_small):
    """Row indices per class of the small training slice."""
    train_set = fmnist_small[0]
    return train_set, {c: np.flatnonzero(train_set.labels == c) for c in range(10)}
