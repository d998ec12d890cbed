"""The studies' storage: the compressed journal (:class:`FrameJournal`) and batched trial writes (``LocalStudies``)."""

from __future__ import annotations

import struct
from pathlib import Path

import optuna
import pytest

from btc_assets.config import PortfolioSettings, get_profile
from btc_assets.wfa import StrategyParams
from btc_assets.wfa.journal import FrameJournal, open_storage
from btc_assets.wfa.objective import TrialScores
from btc_assets.wfa.samplers import BlockRandomSampler, derive_seed
from btc_assets.wfa.space import phase_distributions, suggest_phase
from btc_assets.wfa.study import LocalStudies, PhaseStudy

SETTINGS = get_profile("quick").wfa
DISTS = phase_distributions(SETTINGS)
INCUMBENT = StrategyParams.default(PortfolioSettings()).phases[0].flat()


def _evaluate(flat: dict) -> TrialScores:
    x = sum(float(v) for k, v in flat.items() if k.startswith(("gate.", "breakout.")))
    return TrialScores(-abs(x - 100.0), x % 1.0, 0.0, 0.0)


def _spec(n: int, sampler: str = "random", evaluate=_evaluate) -> PhaseStudy:
    return PhaseStudy(
        name="s",
        n_trials=n,
        sampler=sampler,
        n_startup_trials=4,
        seed_parts=(7, 1, 2),
        incumbent=INCUMBENT,
        suggest=lambda t: suggest_phase(t, SETTINGS),
        evaluate=evaluate,
        distributions=DISTS,
    )


def _run(path: Path, n: int, batch: int | None = None, **kw) -> list:
    return LocalStudies(lambda name: open_storage(None, str(path)), batch=batch).run(_spec(n, **kw), say=lambda m: None)


def _frames(path: Path) -> list[int]:
    """The byte length of each frame in the file."""
    data, offset, out = path.read_bytes(), 0, []
    while offset < len(data):
        length, _ = struct.unpack_from("<II", data, offset)
        out.append(8 + length)
        offset += 8 + length
    return out


def _stored(path: Path) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(None, str(path))
    return optuna.load_study(study_name="s", storage=storage).get_trials(deepcopy=False)


def test_trials_are_written_in_batches_and_read_back_by_optuna(tmp_path: Path) -> None:
    path = tmp_path / "s.journal"
    records = _run(path, 25, batch=10)
    # the study's creation (one frame), then 10 + 10 + 5 trials: one frame per batch
    assert len(_frames(path)) == 1 + 3
    stored = _stored(path)
    assert [t.user_attrs["index"] for t in stored] == list(range(25))
    assert [t.params for t in stored] == [r.params for r in records]
    assert [t.value for t in stored] == [r.fit for r in records]
    assert [t.user_attrs["scores"]["validation"] for t in stored] == [r.validation for r in records]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in stored)
    # a few hundred bytes a trial, not Optuna's ~4 KB of plain JSON
    assert path.stat().st_size / 25 < 1200


def test_random_search_draws_what_optunas_block_random_sampler_draws(tmp_path: Path) -> None:
    """The fast path (no Optuna trial) makes the choices of BlockRandomSampler asked through an Optuna study, with
    trial i's sampler seeded from (seed parts, i): the random stream is unchanged."""
    records = _run(tmp_path / "s.journal", 12)
    study = optuna.create_study(direction="maximize")
    expected = []
    for i in range(12):
        study.sampler = BlockRandomSampler(DISTS, seed=derive_seed(7, 1, 2, i))
        if i == 0:
            study.enqueue_trial(INCUMBENT)
        trial = study.ask()
        expected.append(suggest_phase(trial, SETTINGS))
        study.tell(trial, 0.0)
    assert [r.params for r in records] == expected


class Crash(Exception):
    pass


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_crash_loses_at_most_one_batch_and_changes_nothing(tmp_path: Path, sampler: str) -> None:
    whole = _run(tmp_path / "whole.journal", 16, batch=3, sampler=sampler)
    calls = []

    def crashing(flat: dict) -> TrialScores:
        calls.append(1)
        if len(calls) == 8:  # trial 7: trials 6 and 7 are in the batch that never reaches the file
            raise Crash
        return _evaluate(flat)

    path = tmp_path / "part.journal"
    with pytest.raises(Crash):
        _run(path, 16, batch=3, sampler=sampler, evaluate=crashing)
    assert sorted(t.user_attrs["index"] for t in _stored(path)) == list(range(6))
    resumed = _run(path, 16, batch=3, sampler=sampler)
    assert [r.params for r in resumed] == [r.params for r in whole]
    assert [r.fit for r in resumed] == [r.fit for r in whole]
    assert sorted(t.user_attrs["index"] for t in _stored(path)) == list(range(16))


@pytest.mark.parametrize("sampler", ["tpe", "cmaes", "random"])
def test_an_interrupted_study_with_a_zombie_resumes_with_the_same_choices(tmp_path: Path, sampler: str) -> None:
    """A study stopped after 7 trials, with a RUNNING trial left behind (as older versions wrote before evaluating),
    resumes to the same 16 trials as an uninterrupted study, for every sampler; the zombie is marked failed."""
    whole = _run(tmp_path / "whole.journal", 16, sampler=sampler)
    path = tmp_path / "part.journal"
    _run(path, 7, sampler=sampler)
    interrupted = open_storage(None, str(path))
    zombie = optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING, params=whole[8].params, distributions=DISTS, user_attrs={"index": 7}
    )
    interrupted.create_new_trial(optuna.load_study(study_name="s", storage=interrupted)._study_id, zombie)
    resumed = _run(path, 16, sampler=sampler)
    assert [r.params for r in resumed] == [r.params for r in whole]
    assert [r.fit for r in resumed] == [r.fit for r in whole]
    states = [t.state for t in _stored(path)]
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and len(states) == 17


def test_a_torn_or_damaged_last_frame_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.journal"
    _run(path, 20, batch=10)
    whole = path.read_bytes()
    frames = _frames(path)
    keep = sum(frames[:-1])
    # a power loss mid-write: the last frame cut short
    path.write_bytes(whole[: keep + frames[-1] // 2])
    assert [t.user_attrs["index"] for t in _stored(path)] == list(range(10))
    assert path.stat().st_size == keep
    # a damaged last frame (bits flipped): its checksum fails
    damaged = bytearray(whole)
    damaged[-5] ^= 0xFF
    path.write_bytes(bytes(damaged))
    assert [t.user_attrs["index"] for t in _stored(path)] == list(range(10))
    # the study resumes from there to the same trials
    path.write_bytes(whole[:keep])
    assert [r.params for r in _run(path, 20, batch=10)] == [t.params for t in _stored(tmp_path / "s.journal")]


def test_a_reader_sees_frames_the_writer_appends_later(tmp_path: Path) -> None:
    path = tmp_path / "s.journal"
    _run(path, 5, batch=5)
    reader = open_storage(None, str(path))
    assert len(optuna.load_study(study_name="s", storage=reader).get_trials()) == 5
    _run(path, 9, batch=5)
    assert len(optuna.load_study(study_name="s", storage=reader).get_trials()) == 9


def test_a_plain_optuna_journal_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "old.journal"
    plain = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    optuna.create_study(storage=plain, study_name="s")
    with pytest.raises(ValueError, match=f"{path} is a plain Optuna journal"):
        FrameJournal(str(path))
    assert path.read_bytes()[:1] == b"{"  # untouched
