"""Real CPU training of the bundled sample tree through DeepSpeed."""

import pytest

from tests.helpers.training import mean, write_ds_config

# Dropout off and full weights initialised once then split: runs that differ
# only in their parallel layout must then compute the same losses.
EXACT = ['--use-cpu-initialization', '--hidden-dropout', '0',
         '--attention-dropout', '0']
TOL = 1e-5


def assert_learns(losses, iters=20):
    assert len(losses) == iters, losses
    first, last = mean(losses[:5]), mean(losses[-5:])
    assert last < first, f'no progress: first-5 mean {first:.4f}, ' \
                         f'last-5 mean {last:.4f}: {losses}'


@pytest.mark.parametrize('name, extra, nproc', [
    ('pipe_engine', [], 1),
    # test_pipeline_engine_matches_plain_engine holds the plain engine to the pipe engine's losses, step for step
    pytest.param('no_pipeline_parallel', ['--no-pipeline-parallel'], 1, marks=pytest.mark.slow),
    # tests/port/test_port.py's `porter smoke --pp 2` trains the sample tree at PP=2 with its loss falling
    pytest.param('pp2', ['--pipeline-model-parallel-size', '2'], 2, marks=pytest.mark.slow),
    # test_tp2_matches_tp1 holds TP=2 to the pipe engine's losses, step for step
    pytest.param('tp2', ['--tensor-model-parallel-size', '2'], 2, marks=pytest.mark.slow),
])
def test_trains(gpt_run, name, extra, nproc):
    assert_learns(gpt_run(name, extra, nproc=nproc))


@pytest.fixture(scope='module')
def exact_tp1_pipe(gpt_run):
    return gpt_run('exact_tp1_pipe', EXACT, train_iters=3)


def test_tp2_matches_tp1(gpt_run, exact_tp1_pipe):
    tp2 = gpt_run('exact_tp2_pipe', EXACT + ['--tensor-model-parallel-size', '2'],
                  nproc=2, train_iters=3)
    assert tp2[0] == pytest.approx(exact_tp1_pipe[0], abs=TOL)
    # Later steps depend on the gradients, so they check the backward too.
    assert tp2 == pytest.approx(exact_tp1_pipe, abs=TOL)


def test_tp2_without_pipeline_engine_matches_tp1(gpt_run, exact_tp1_pipe):
    tp2 = gpt_run('exact_tp2_nopipe',
                  EXACT + ['--no-pipeline-parallel',
                           '--tensor-model-parallel-size', '2'],
                  nproc=2, train_iters=3)
    assert tp2 == pytest.approx(exact_tp1_pipe, abs=TOL)


def test_pipeline_engine_matches_plain_engine(gpt_run, exact_tp1_pipe):
    plain = gpt_run('exact_tp1_nopipe', EXACT + ['--no-pipeline-parallel'],
                    train_iters=3)
    assert plain[0] == pytest.approx(exact_tp1_pipe[0], abs=TOL)
    assert plain == pytest.approx(exact_tp1_pipe, abs=TOL)


def test_gradient_accumulation_matches_larger_micro_batch(
        gpt_run, exact_tp1_pipe, work_dir):
    ds = write_ds_config(work_dir / 'ds_mb2_gas2.json', micro_batch_size=2,
                         gradient_accumulation_steps=2)
    for engine, extra in [('pipe', []), ('nopipe', ['--no-pipeline-parallel'])]:
        losses = gpt_run(f'exact_gas2_{engine}', EXACT + extra, train_iters=3,
                         ds=ds, micro_batch_size=2)
        assert losses == pytest.approx(exact_tp1_pipe, abs=TOL), engine


@pytest.mark.parametrize('engine, extra', [
    ('pipe', []), pytest.param('nopipe', ['--no-pipeline-parallel'], marks=pytest.mark.slow)])
def test_checkpoint_resume_continues_exactly(gpt_run, work_dir, engine, extra):
    ckpt = work_dir / f'ckpt_{engine}'
    common = EXACT + extra + ['--save', str(ckpt), '--save-interval', '3']
    first = gpt_run(f'ckpt_{engine}_a', common + ['--exit-interval', '3'],
                    train_iters=6)
    assert len(first) == 3
    assert (ckpt / 'latest_checkpointed_iteration.txt').read_text() == '3'
    resumed = gpt_run(f'ckpt_{engine}_b', common + ['--load', str(ckpt)],
                      train_iters=6)
    assert 'iteration 4/6' in resumed.log and 'iteration 1/6' not in resumed.log
    straight = gpt_run(f'ckpt_{engine}_straight', EXACT + extra, train_iters=6)
    assert first + resumed == pytest.approx(straight, abs=TOL)
