"""Published config.json files of the battery as tiny models of the same structure, end to end
(tests/families/battery_models.py): apply, verify against transformers' class of the file,
convert both ways. Group: mistral_qwen2."""

import pytest

from tests.families.battery import TINY
from tests.families.battery_models import check_config, ported_tree


@pytest.fixture(scope="module")
def ported(tmp_path_factory):
    return ported_tree(tmp_path_factory.mktemp("battery_mistral_qwen2"), TINY["mistral_qwen2"])


@pytest.mark.parametrize("stem", TINY["mistral_qwen2"])
def test_the_published_config_ports_verifies_and_round_trips(ported, tmp_path, stem):
    tree, folders = ported
    check_config(tree, folders[stem], tmp_path / "verify")
