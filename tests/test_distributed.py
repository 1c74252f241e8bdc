"""Data-parallel training: 2 ranks on gloo over loopback, one thread each, against one process.

Ranks are started the way torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR... in the
environment) as plain subprocesses with a timeout, so a test can kill or stop one; one test goes
through torchrun itself.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from manualnn.checkpoint import load_checkpoint
from manualnn.cli import main
from manualnn.training.batches import shard_bounds

HERE = os.path.dirname(os.path.abspath(__file__))

LINE = re.compile(r"^Epoch:(\d+), Loss:(-?\d+\.\d{4})$")
SMALL = ["--batch", "64", "--features", "50", "--hidden", "20", "--out", "4", "--lr", "1e-4", "--device", "cpu"]
TIMEOUT = 90   # seconds any one launch may take before the test calls it a hang


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank, world, port):
    env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
               LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    if os.path.exists("/sys/class/net/lo"):
        env["GLOO_SOCKET_IFNAME"] = "lo"   # loopback only
    return env


def start_ranks(argvs, cwd):
    """One `python -m manualnn train` per rank; argvs[r] is rank r's options."""
    port = free_port()
    return [subprocess.Popen([sys.executable, "-m", "manualnn", "train", *argv], cwd=cwd, text=True,
                             env=rank_env(r, len(argvs), port), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for r, argv in enumerate(argvs)]


def finish(procs, timeout=TIMEOUT):
    """(returncode, stdout, stderr) of every rank; a rank still running after ``timeout`` fails the test."""
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a rank did not finish within {timeout}s (a hang)")
        results.append((p.returncode, out, err))
    return results


def run_ranks(argv, cwd, world=2):
    return finish(start_ranks([argv] * world, cwd))


def losses_of(out):
    lines = out.splitlines()
    assert lines and all(LINE.match(line) for line in lines), out
    return [float(LINE.match(line).group(2)) for line in lines]


def one_process(capsys, argv):
    capsys.readouterr()   # drop what the test printed so far
    assert main(["train", *argv]) == 0
    return losses_of(capsys.readouterr().out)


def assert_same_losses(got, expected, rel=1e-5):
    """Equal to fp32 rounding: the ranks' partial sums are added in another order, nothing else."""
    assert len(got) == len(expected), (got, expected)
    worst = max(abs(g - e) / abs(e) for g, e in zip(got, expected))
    print(f"{len(got)} epochs, largest relative difference {worst:.2e}")
    assert worst <= rel, (got, expected)


def test_shard_bounds_cover_every_row_once_and_differ_by_at_most_one():
    for rows in (1, 2, 7, 33, 100):
        for world in (1, 2, 3, 8):
            parts = [shard_bounds(rows, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1


def test_the_api_needs_a_process_group():
    import manualnn
    from manualnn.distributed import DistributedError
    x, y, weights = manualnn.seed_data(seed=0, batch=4, features=3, hidden=(2,), out=2)
    with pytest.raises(DistributedError, match="torchrun"):
        manualnn.train(x, y, weights, distributed=True)


@pytest.mark.parametrize("batch_size", [None, 3])
def test_the_api_on_a_one_rank_group_equals_train(batch_size):
    """train(distributed=True) in this process, as a group of one: the distributed step's
    gradient -> all-reduce -> update equals the folded one-process step to rounding."""
    import torch
    import torch.distributed as dist

    import manualnn
    x, y, weights = manualnn.seed_data(seed=0, batch=10, features=6, hidden=(5,), out=2, dtype=torch.float64)
    expected = manualnn.train(x, y, weights, epochs=5, lr=1e-3, batch_size=batch_size)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        got = manualnn.train(x, y, weights, epochs=5, lr=1e-3, batch_size=batch_size, distributed=True)
    finally:
        dist.destroy_process_group()
    assert got.losses == pytest.approx(expected.losses, rel=1e-12)
    for g, e in zip(got.weights, expected.weights):
        assert torch.allclose(g, e, rtol=1e-12, atol=1e-12)


def test_torchrun_2_ranks_print_the_seed_run(capsys, tmp_path):
    """The issue's criterion, through torchrun itself: the seed's 20 lines, to fp32 rounding."""
    argv = ["--seed", "0", "--grad", "tutorial", "--device", "cpu"]
    expected = one_process(capsys, argv)
    env = rank_env(0, 2, 0)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "manualnn",
                           "train", *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    got = losses_of(proc.stdout)   # rank 0 alone prints: exactly 20 lines
    assert [line.split(",")[0] for line in proc.stdout.splitlines()] == [f"Epoch:{i}" for i in range(20)]
    assert_same_losses(got, expected)


def launch_cases(tmp_path, backend="torch", names=None):
    """The cases of tests/distributed_cases.py (all, or ``names``) on 2 ranks, in one launch: rank 0's
    records by case."""
    port = free_port()
    argv = [sys.executable, os.path.join(HERE, "distributed_cases.py"), backend] + ([",".join(names)] if names else [])
    procs = [subprocess.Popen(argv, cwd=tmp_path,
                              text=True, env=rank_env(r, 2, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for r in range(2)]
    (rc0, out0, err0), (rc1, out1, err1) = finish(procs, timeout=3 * TIMEOUT)
    assert rc0 == 0 and rc1 == 0, err0 + err1
    assert out1 == ""   # rank 0 alone prints
    records = {r["case"]: r for r in map(json.loads, out0.splitlines())}
    other = {r["case"]: r for r in map(json.loads, (tmp_path / "rank1.jsonl").read_text().splitlines())}
    for name, record in records.items():   # every rank holds the same weights, bit for bit
        assert other[name] == record, f"{name}: rank 1's losses or parameters differ from rank 0's"
    return records


def test_two_ranks_equal_one_process_in_every_case(tmp_path):
    import torch

    import distributed_cases
    got = launch_cases(tmp_path)
    assert sorted(got) == sorted(distributed_cases.CASES)
    torch.set_num_threads(1)
    for name in distributed_cases.CASES:
        want = distributed_cases.run(name, False)
        print(name, end=": ")
        assert_same_losses(got[name]["losses"], want["losses"])
        for a, b in zip(got[name]["params"], want["params"]):
            assert torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-6), name


def test_two_ranks_on_the_triton_kernels_equal_one_process(tmp_path):
    """The Triton step in gradient mode, all-reduced (CPU: the interpreter)."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the ranks run on the CPU here: needs TRITON_INTERPRET=1")
    import torch

    import distributed_cases
    names = ["batches-of-one", "adam-ce-mean-bias"]   # the interpreter is slow: a rank without rows, and Adam
    got = launch_cases(tmp_path, "triton", names)
    for name in names:
        want = distributed_cases.run(name, False, "torch")
        print(name, end=": ")
        assert_same_losses(got[name]["losses"], want["losses"], rel=1e-4)


def test_resume_on_another_number_of_ranks_continues_the_run(capsys, tmp_path):
    argv = [*SMALL, "--seed", "2", "--batch-size", "10", "--grad", "relu"]   # 64 rows: 7 shuffled batches
    uninterrupted = one_process(capsys, [*argv, "--epochs", "10"])
    ck = str(tmp_path / "run.pt")
    (rc0, out0, err0), (rc1, _, err1) = run_ranks([*argv, "--epochs", "6", "--save", ck, "--save-every", "3"],
                                                  tmp_path)
    assert rc0 == 0 and rc1 == 0, err0 + err1
    assert load_checkpoint(ck).epoch == 6
    assert sorted(os.listdir(tmp_path)) == ["run.pt"]   # written once, by rank 0, no temp files left
    resumed = one_process(capsys, ["--resume", ck, "--epochs", "10", "--device", "cpu"])
    assert_same_losses(losses_of(out0) + resumed, uninterrupted)
    # and back: one process's run, two ranks continue it
    uninterrupted = one_process(capsys, [*argv, "--epochs", "12"])
    (rc0, out0, err0), (rc1, _, err1) = run_ranks(["--resume", ck, "--epochs", "12", "--device", "cpu"], tmp_path)
    assert rc0 == 0 and rc1 == 0, err0 + err1
    assert_same_losses(losses_of(out0), uninterrupted[6:])


def _stop_a_rank_mid_run(tmp_path, victim, stop_with):
    """Start 2 ranks on a long run, stop ``victim`` once rank 0 has printed; return the survivor's
    (returncode, stderr, seconds it took to exit after the stop) and the checkpoint path."""
    ck = tmp_path / "run.pt"
    argv = [*SMALL, "--seed", "0", "--epochs", "1000000", "--save", str(ck), "--save-every", "200",
            "--timeout", "2"]
    procs = start_ranks([argv, argv], tmp_path)
    first = procs[0].stdout.readline()   # rank 0 is training
    assert LINE.match(first.strip()), first + procs[0].stderr.read()
    time.sleep(0.5)
    procs[victim].send_signal(stop_with)
    survivor = procs[1 - victim]
    started = time.monotonic()
    try:
        survivor.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"rank {1 - victim} kept waiting for rank {victim}, which had stopped")
    seconds = time.monotonic() - started
    err = survivor.stderr.read()
    procs[victim].kill()
    procs[victim].wait()
    return survivor.returncode, err, seconds, ck


@pytest.mark.parametrize("victim,how,expected", [
    (1, "killed", "rank 0: lost contact with the other ranks: rank 1 stopped"),
    (1, "hung", "rank 0: lost contact with the other ranks: rank 1 stopped"),       # only --timeout ends it
    (0, "killed", "rank 1: lost contact with the other ranks: rank 0 (or the launcher"),  # the store went too
])
def test_a_rank_that_dies_or_hangs_stops_the_others_with_its_number(tmp_path, victim, how, expected):
    rc, err, seconds, ck = _stop_a_rank_mid_run(tmp_path, victim, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
    print(f"rank {victim} {how}: the other exited {rc} after {seconds:.1f}s: {err.strip()}")
    assert rc == 3, err
    assert expected in err, err
    assert "Traceback" not in err and "frame #" not in err, err   # one line, no stack dumps
    assert seconds < 2 + 3 + 15   # --timeout, the grace for naming the rank, and start-up slack
    if ck.exists():   # a checkpoint, if one was written, is whole
        assert load_checkpoint(ck).epoch % 200 == 0
    from manualnn.files import TMP_SUFFIX
    assert not [f for f in os.listdir(tmp_path) if f.endswith(TMP_SUFFIX)]   # no half-written file left


@pytest.mark.parametrize("rank1,expected", [
    (["--lr", "2e-4", "--hidden", "21"], "hidden: rank 0 has [20], rank 1 has [21]; lr: rank 0 has 0.0001, rank 1 "
                                         "has 0.0002"),
    (["--data", "other.csv"], "checksum: rank 0 has"),            # same shape, other contents
    (["--data", "missing.csv"], "rank 1: --data: "),             # one rank cannot even start
])
def test_ranks_started_differently_are_refused(tmp_path, rank1, expected):
    (tmp_path / "mine.csv").write_text("".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    (tmp_path / "other.csv").write_text("".join(f"{i},{i % 4},{i % 2}\n" for i in range(20)))
    base = ["--seed", "7", "--lr", "1e-4", "--hidden", "20", "--epochs", "2", "--device", "cpu"]
    if rank1[0] == "--data":
        base += ["--data", "mine.csv"]
    else:
        base += ["--batch", "16", "--features", "5", "--out", "2"]
    (rc0, out0, err0), (rc1, out1, err1) = finish(start_ranks([base, base + rank1], tmp_path))
    assert rc0 == rc1 == 2 and out0 == out1 == "", err0 + err1
    assert expected in err0 and "Traceback" not in err0, err0
    assert err1 == "" and err0.count("error:") == 1   # said once, by rank 0, for every rank


def test_more_ranks_than_rows_is_an_error(tmp_path):
    (rc0, out0, err0), (rc1, out1, err1) = run_ranks([*SMALL[2:], "--batch", "1", "--seed", "0"], tmp_path)
    assert rc0 == rc1 == 2 and out0 == out1 == err1 == "", err0 + err1
    assert "1 rows cannot be shared by 2 ranks" in err0 and "Traceback" not in err0, err0


@pytest.mark.slow
def test_the_benchmark_runs_at_a_tiny_shape_and_writes_its_numbers(tmp_path):
    import json
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.distributed", "--rows", "8", "--features", "8",
                           "--hidden", "8", "--out-features", "2", "--steps", "1", "--rounds", "1",
                           "--out", str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "distributed.json").read_text())
    assert record["bytes_allreduced_per_step"] == (8 * 8 + 8 * 2) * 4
    names = [row["contender"] for row in record["rows"]]
    assert names[0] == "1 process" and "2 ranks, overlap" in names and "2 ranks, all-reduce only" in names
    assert all(row["ms_per_step"] > 0 for row in record["rows"])
    assert "scaling efficiency" in (tmp_path / "distributed.md").read_text()
