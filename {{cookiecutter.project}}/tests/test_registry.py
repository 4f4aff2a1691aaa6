"""Alias moves in a real MLflow registry (sqlite): promotion is compare-and-set, rollback walks back."""

from __future__ import annotations

import pytest

from {{ cookiecutter.package }} import registry, training
from {{ cookiecutter.package }}.errors import RegistryError
from {{ cookiecutter.package }}.registry import CHAMPION, PREVIOUS
from {{ cookiecutter.package }}.settings import GitHubContext


@pytest.fixture
def versions(settings, frame):
    """Three registered versions of the same model; no alias but challenger moved yet."""
    return [training.train(settings, frame).model_version for _ in range(3)]


def test_promotion_moves_champion_and_previous(settings, versions):
    registry.promote(settings, 1, expected_champion=None, why="first")
    assert registry.aliases(settings) == {"champion": 1, "challenger": 3}
    result = registry.promote(settings, 2, expected_champion=1, why="better")
    assert result == {"champion": 2, "previous": 1, "replaced_previous": None}
    assert registry.alias_version(settings, CHAMPION) == 2
    assert registry.alias_version(settings, PREVIOUS) == 1


def test_promotion_refuses_when_the_champion_moved_since_evaluation(settings, versions):
    registry.promote(settings, 1, expected_champion=None, why="first")
    registry.promote(settings, 2, expected_champion=1, why="someone else")
    before = registry.history(settings)
    with pytest.raises(RegistryError, match="champion moved since the evaluation"):
        registry.promote(settings, 3, expected_champion=1, why="stale evaluation")
    assert registry.alias_version(settings, CHAMPION) == 2
    assert registry.history(settings) == before  # nothing was written


def test_rollback_walks_back_through_history(settings, versions):
    registry.promote(settings, 1, None, why="first")
    registry.promote(settings, 2, 1, why="better")
    registry.promote(settings, 3, 2, why="better still")
    assert registry.rollback(settings, why="bad") == {"champion": 2, "rolled_back_from": 3}
    assert registry.alias_version(settings, PREVIOUS) == 1
    assert registry.rollback(settings, why="also bad") == {"champion": 1, "rolled_back_from": 2}
    assert registry.alias_version(settings, PREVIOUS) is None
    with pytest.raises(RegistryError, match="no previous version"):
        registry.rollback(settings, why="nothing left")
    assert registry.alias_version(settings, CHAMPION) == 1


def test_rollback_to_a_given_version(settings, versions):
    registry.promote(settings, 1, None, why="first")
    registry.promote(settings, 3, 1, why="better")
    assert registry.rollback(settings, why="pin", to_version=2)["champion"] == 2
    with pytest.raises(Exception, match="99"):
        registry.rollback(settings, why="no such version", to_version=99)
    assert registry.alias_version(settings, CHAMPION) == 2


def test_revert_promotion_of_the_first_model_leaves_no_champion(settings, versions):
    promotion = registry.promote(settings, 1, None, why="first")
    registry.revert_promotion(settings, promotion, why="failed smoke test")
    assert CHAMPION not in registry.aliases(settings)


def test_every_move_is_recorded_with_who_what_when_why(settings, versions):
    on_github = settings.env.model_copy(update={"github": GitHubContext(actor="octocat")})
    settings = settings.model_copy(update={"env": on_github})
    registry.promote(settings, 1, None, why="first model")
    entry = registry.history(settings)[-1]
    assert entry["action"] == "promote" and entry["alias"] == CHAMPION
    assert (entry["before"], entry["after"]) == (None, 1)
    assert entry["by"] == "octocat" and entry["why"] == "first model" and entry["at"]
    sequences = [entry["sequence"] for entry in registry.history(settings)]
    assert sequences == list(range(1, len(sequences) + 1))
