"""Alias moves in a real MLflow registry (sqlite): promotion is compare-and-set, rollback walks back."""

from __future__ import annotations

import time

import mlflow
import pytest

from {{ cookiecutter.package }} import registry_lock, training
from {{ cookiecutter.package }}.errors import RegistryError
from {{ cookiecutter.package }}.registry import CHAMPION, PREVIOUS, Registry
from {{ cookiecutter.package }}.settings import GitHubContext, load_settings

from .conftest import write_params


@pytest.fixture
def versions(settings, registry, frame):
    """Three registered versions of the same model; no alias but challenger moved yet."""
    return [training.train(settings, registry, frame).model_version for _ in range(3)]


def test_promotion_moves_champion_and_previous(registry, versions):
    registry.promote(1, expected_champion=None, why="first")
    assert registry.aliases() == {"champion": 1, "challenger": 3}
    result = registry.promote(2, expected_champion=1, why="better")
    assert result == {"champion": 2, "previous": 1, "replaced_previous": None}
    assert registry.alias_version(CHAMPION) == 2
    assert registry.alias_version(PREVIOUS) == 1


def test_promotion_refuses_when_the_champion_moved_since_evaluation(registry, versions):
    registry.promote(1, expected_champion=None, why="first")
    registry.promote(2, expected_champion=1, why="someone else")
    before = registry.history()
    with pytest.raises(RegistryError, match="champion moved since the evaluation"):
        registry.promote(3, expected_champion=1, why="stale evaluation")
    assert registry.alias_version(CHAMPION) == 2
    assert registry.history() == before  # nothing was written


def test_rollback_walks_back_through_history(registry, versions):
    registry.promote(1, None, why="first")
    registry.promote(2, 1, why="better")
    registry.promote(3, 2, why="better still")
    assert registry.rollback(why="bad") == {"champion": 2, "rolled_back_from": 3}
    assert registry.alias_version(PREVIOUS) == 1
    assert registry.rollback(why="also bad") == {"champion": 1, "rolled_back_from": 2}
    assert registry.alias_version(PREVIOUS) is None
    with pytest.raises(RegistryError, match="no previous version"):
        registry.rollback(why="nothing left")
    assert registry.alias_version(CHAMPION) == 1


def test_rollback_to_a_given_version(registry, versions):
    registry.promote(1, None, why="first")
    registry.promote(3, 1, why="better")
    assert registry.rollback(why="pin", to_version=2)["champion"] == 2
    with pytest.raises(Exception, match="99"):
        registry.rollback(why="no such version", to_version=99)
    assert registry.alias_version(CHAMPION) == 2


def test_revert_promotion_of_the_first_model_leaves_no_champion(registry, versions):
    promotion = registry.promote(1, None, why="first")
    registry.revert_promotion(promotion, why="failed smoke test")
    assert CHAMPION not in registry.aliases()


def test_every_move_is_recorded_with_who_what_when_why(settings, versions):
    on_github = settings.env.model_copy(update={"github": GitHubContext(actor="octocat")})
    registry = Registry(settings.model_copy(update={"env": on_github}))
    registry.promote(1, None, why="first model")
    entry = registry.history()[-1]
    assert entry["action"] == "promote" and entry["alias"] == CHAMPION
    assert (entry["before"], entry["after"]) == (None, 1)
    assert entry["by"] == "octocat" and entry["why"] == "first model" and entry["at"]
    sequences = [entry["sequence"] for entry in registry.history()]
    assert sequences == list(range(1, len(sequences) + 1))


def test_undo_promotion_if_champion_rolls_back_only_that_promotion(registry, versions):
    registry.promote(1, None, why="first")
    registry.promote(2, 1, why="better")
    result = registry.undo_promotion_if_champion(2, why="deploy failed")
    assert result == {"champion": 1, "rolled_back_from": 2}
    assert registry.alias_version(CHAMPION) == 1


def test_undo_promotion_if_champion_skips_when_another_version_is_champion(registry, versions):
    registry.promote(1, None, why="first")
    before = registry.history()
    result = registry.undo_promotion_if_champion(2, why="deploy failed")
    assert result["skipped"] is True and result["champion"] == 1
    assert "not v2" in result["why"]
    assert registry.alias_version(CHAMPION) == 1
    assert registry.history() == before  # nothing was written


def test_undo_promotion_if_champion_removes_a_first_champion(registry, versions):
    registry.promote(1, None, why="first")
    result = registry.undo_promotion_if_champion(1, why="deploy failed")
    assert result == {"champion": None, "rolled_back_from": 1}
    assert CHAMPION not in registry.aliases()
    assert registry.history()[-2]["action"] == "rollback"


def test_a_registry_configures_mlflow_once_for_all_its_calls(settings, frame, monkeypatch):
    """A command opens one Registry; training, loading and alias moves reuse its configuration."""
    calls = []
    set_tracking_uri = mlflow.set_tracking_uri
    monkeypatch.setattr(
        mlflow, "set_tracking_uri", lambda uri: calls.append(uri) or set_tracking_uri(uri)
    )
    registry = Registry(settings)
    version = training.train(settings, registry, frame).model_version
    registry.load_model(version)
    registry.promote(version, None, why="first")
    registry.undo_promotion_if_champion(version, why="deploy failed")
    assert registry.recorded_digest(version) and registry.history() and registry.aliases()
    assert calls == [settings.tracking_uri]


def test_a_lock_left_by_a_crashed_run_refuses_alias_moves_until_it_expires(
    project, registry, versions
):
    """A run that died holding the lock (claimed, never released) blocks moves for a bounded time only.

    The concurrent case, two promotions at once on a server with several workers, is in
    tests/test_registry_server.py (PostgreSQL); sqlite's store serves one writer at a time.
    """
    name = registry_lock.lock_name(registry.model_name)
    assert registry_lock.claim(registry.client, name, registry.model_name, "a crashed run", 1.0)
    lock = registry.client.get_registered_model(name)
    assert lock.description.startswith("Not a model: the lock on")
    write_params(project, registry={"lock_wait_seconds": 0})
    impatient = Registry(load_settings(project / "params.yaml"))
    moves = len(registry.history())
    with pytest.raises(RegistryError, match=r"locked by a crashed run .* expires at .* nothing"):
        impatient.promote(1, expected_champion=None, why="first")
    assert CHAMPION not in impatient.aliases() and len(impatient.history()) == moves
    time.sleep(1.1)
    impatient.promote(1, expected_champion=None, why="first")
    assert impatient.alias_version(CHAMPION) == 1
    names = [model.name for model in registry.client.search_registered_models()]
    assert names == [registry.model_name]  # the expired lock taken over, the new one released
