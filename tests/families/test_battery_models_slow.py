"""Every other ported config of the battery as a tiny model, end to end (pytest -m slow): the same
check as the default groups (tests/families/battery_models.py), one sample tree for them all."""

import pytest

from tests.families.battery import TINY_SLOW
from tests.families.battery_models import check_config, ported_tree

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ported(tmp_path_factory):
    return ported_tree(tmp_path_factory.mktemp("battery_slow"), TINY_SLOW)


@pytest.mark.parametrize("stem", TINY_SLOW)
def test_the_published_config_ports_verifies_and_round_trips(ported, tmp_path, stem):
    tree, folders = ported
    check_config(tree, folders[stem], tmp_path / "verify")
