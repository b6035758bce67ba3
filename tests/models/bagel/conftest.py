import shutil

import pytest

from . import tiny


@pytest.fixture(scope="session")
def bagel_release(tmp_path_factory):
    """One tiny random BAGEL release directory per session (read-only: copy it to change it)."""
    return tiny.build(tmp_path_factory.mktemp("bagel") / "release")


@pytest.fixture
def bagel_copy(tmp_path, bagel_release):
    """The test's own copy of the release directory."""
    return shutil.copytree(bagel_release, tmp_path / "release")


@pytest.fixture(scope="session")
def bagel_model(bagel_release):
    """The loaded tiny model, shared: tests that change it load their own."""
    from srum.models.bagel import BagelUMM

    return BagelUMM.load(bagel_release)
