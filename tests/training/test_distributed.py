"""Data-parallel training under torchrun: two gloo processes against one process, for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from neurodiff.training.data import TensorData, batches_per_epoch, epoch_order, iterate_batches
from neurodiff.training.distributed import ProcessGroup, Replica, current

WORKER = Path(__file__).with_name("distributed_worker.py")


def _run(out: Path, processes: int, *extra: str) -> dict:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*(launcher if processes > 1 else [sys.executable]), str(WORKER), "--out", str(out), *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**env, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return torch.load(out / "result.pt", weights_only=True)


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_gloo_processes_interrupted_and_resumed_train_as_one_process_with_the_same_global_batch(tmp_path):
    one = _run(tmp_path / "one", 1)
    # two processes: one epoch, then a second launch resumes from rank 0's checkpoint for two more
    checkpoints = tmp_path / "ckpt"
    _run(tmp_path / "first", 2, "--epochs", "1", "--checkpoints", str(checkpoints))
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint.pt"]  # one file, from rank 0
    two = _run(tmp_path / "two", 2, "--epochs", "3", "--checkpoints", str(checkpoints))

    # the run clips and skips steps, so the decisions must agree across ranks as well as the weights
    assert one["skipped"] > 0 and one["clipped"] > 0
    for key in ("skipped", "clipped", "best_step"):
        assert two[key] == one[key], key
    for key in ("clip", "skip"):
        assert two["thresholds"][key] == pytest.approx(one["thresholds"][key], rel=1e-5)
    assert len(two["loss"]) == len(one["loss"]) == 21  # 51 rows, global batch 8, 3 epochs
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-5)
    assert two["validation"] == pytest.approx(one["validation"], abs=1e-5)
    assert _max_difference(two["trained"], one["trained"]) < 1e-5
    assert _max_difference(two["weights"], one["weights"]) < 1e-5  # EMA, best validated

    # a one-process run refuses the two-process checkpoint (its batches would be cut differently)
    done = subprocess.run([sys.executable, str(WORKER), "--out", str(tmp_path / "x"), "--checkpoints", str(checkpoints)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "processes=2" in done.stderr and "processes=1" in done.stderr


def test_a_global_batch_is_shared_in_contiguous_parts_and_a_tail_too_small_to_share_is_left_out():
    data = TensorData(i=torch.arange(11))
    order = epoch_order(11, 0, 0)
    ranks = [ProcessGroup(rank=r, world_size=2) for r in range(2)]
    shares = [list(iterate_batches(data, order, 4, group=g, with_sizes=True)) for g in ranks]
    assert [size for _, size in shares[0]] == [4, 4, 3]
    for (b0, _), (b1, _), whole in zip(*shares, torch.split(order, 4)):
        assert torch.equal(torch.cat([b0["i"], b1["i"]]), whole)
    assert [len(b["i"]) for b, _ in shares[1]] == [2, 2, 1]
    assert batches_per_epoch(9, 4, 2) == 2  # the last row cannot go to both processes
    assert len(list(iterate_batches(TensorData(i=torch.arange(9)), epoch_order(9, 0, 0), 4, group=ranks[1]))) == 2
    assert batches_per_epoch(9, 4, 1) == 3


def test_loss_weights_make_the_average_of_rank_gradients_the_global_mean():
    groups = [ProcessGroup(rank=r, world_size=2) for r in range(2)]
    sizes = [2, 1]  # a batch of 3 rows split 2 + 1
    # DDP averages: (w0·mean0 + w1·mean1) / 2 must weigh every row 1/3
    per_row = [g.loss_weight(n, 3) / n / 2 for g, n in zip(groups, sizes)]
    assert per_row == pytest.approx([1 / 3, 1 / 3])
    assert ProcessGroup().loss_weight(5, 5) == 1.0


def test_replica_insists_on_one_forward_call_per_step():
    replica = Replica(nn.Linear(2, 2))  # the check does not need a real DDP wrapper
    x = torch.zeros(1, 2)
    replica(x)
    replica.check_one_call()
    replica(x), replica(x)
    with pytest.raises(RuntimeError, match="exactly once per step, this one called it 2 times"):
        replica.check_one_call()
    with pytest.raises(RuntimeError, match="called it 0 times"):
        replica.check_one_call()


def test_torchrun_environment_is_read_and_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert current() == ProcessGroup(rank=3, world_size=4, local_rank=1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4, WORLD_SIZE=4"):
        current()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK='x'"):
        current()


def test_the_three_fit_commands_train_under_torchrun_and_rank_0_writes_each_model(
        tmp_path, tiny_image_cohort, tiny_patient_cohort):
    sys.path.insert(0, str(Path(__file__).parents[1] / "methods"))
    from test_secondgram import cohort

    from neurodiff.methods.harmonization import DisentangledDiffAE
    from neurodiff.methods.longitudinal import SecondGram
    from neurodiff.methods.normative import NormativeDiffAE

    table = tmp_path / "table.csv"
    cohort(n=120, paired=60).to_csv(table, index=False)
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(WORKER.with_name("distributed_methods_worker.py")), str(table), str(tiny_image_cohort[0]),
               str(tiny_patient_cohort[0]), str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**env, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for name, cls in (("impute", SecondGram), ("harmonize", DisentangledDiffAE), ("normative", NormativeDiffAE)):
        assert "Saved to" in (out / f"{name}.rank0.log").read_text()
        assert "Saved" not in (out / f"{name}.rank1.log").read_text()  # rank 1 trains but writes nothing
        assert cls.load(out / name).is_fitted_
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["harmonize", "impute", "normative"]


def test_commands_other_than_fit_refuse_to_run_under_torchrun(monkeypatch, capsys):
    from neurodiff.cli import _check_torchrun

    monkeypatch.setenv("WORLD_SIZE", "2")
    _check_torchrun(["harmonize", "fit", "--manifest", "m.csv"])  # allowed
    with pytest.raises(SystemExit) as stopped:
        _check_torchrun(["impute", "benchmark", "--quick"])
    assert stopped.value.code == 2 and "--jobs" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "1")
    _check_torchrun(["impute", "benchmark"])
