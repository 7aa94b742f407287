"""train.py when things go wrong: no finished step lost, no traceback for a user's mistake.

The specifications: Ctrl-C (SIGINT to the process group, DataLoader workers included), a SIGTERM
to every process of the job, and a SIGTERM to one process of a 2-process torchrun or to all of
them stop every rank after the same step, write last.pt and exit non-zero, and the resumed run
ends equal to an uninterrupted one; --save-every bounds what a crash loses; every bad flag ends
the command before anything is built, with one line naming it; damaged checkpoint files get one
line from every script; run folders without a checkpoint start again, and a finished run says so.
Tiny CLIPs and 16 x 16 synthetic videos, as in test_train.py.
"""

import contextlib
import errno
import glob
import io
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import evaluate
import prompts
import train
import video_data
from test_train import REPO, assert_same_parameters, flags, free_port, run, saved_model
from test_train import data  # noqa: F401 (a fixture)

SGD_LIKE = ("--adam-eps", "1", "--lr", "0.1", "--new-lr-mult", "1")  # steps ~ gradients: test_train


def logged_steps(out):
    records = map(json.loads, open(os.path.join(out, "metrics.jsonl")))
    return [r["step"] for r in records if "loss" in r]


def checkpoint(out, name="last.pt"):
    return torch.load(os.path.join(out, name), map_location="cpu", weights_only=True)


def children(pid):
    tasks = glob.glob(f"/proc/{pid}/task/*/children")
    return [int(child) for task in tasks for child in open(task).read().split()]


def start_and_signal(command, out, send, env=None):
    """Start `command`; once metrics.jsonl logs a step, send(process) a signal; wait for its end."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True, env=env)
    deadline, metrics = time.time() + 120, os.path.join(out, "metrics.jsonl")
    while not (os.path.isfile(metrics) and '"loss"' in open(metrics).read()):
        assert process.poll() is None and time.time() < deadline, process.communicate()[0][-3000:]
        time.sleep(0.02)
    workers = children(process.pid)
    send(process)
    try:
        output = process.communicate(timeout=60)[0]  # a rank left behind hangs (torchrun: 100 s)
    except subprocess.TimeoutExpired:
        for pid in [*workers, process.pid]:          # torchrun's workers have sessions of their own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise
    return process.returncode, output


def assert_resumes_to_the_uninterrupted_run(data, tmp_path, stopped, *extra, atol=0.0):
    """Continue `stopped` here for 2 steps past its checkpoint; compare with a straight run."""
    step = checkpoint(stopped)["step"]
    assert step == logged_steps(stopped)[-1]          # every step it logged is in the checkpoint
    train.train(train.parse_args(["--resume", "--out", str(stopped), "--workers", "0",
                                  "--stop-after-steps", str(step + 2)]))
    straight = tmp_path / "straight"
    run(data, straight, *extra, "--stop-after-steps", str(step + 2))
    assert logged_steps(stopped) == list(range(1, step + 3))      # each step logged once, in order
    assert_same_parameters(saved_model(straight), saved_model(stopped), atol=atol)
    assert checkpoint(straight)["best"] == checkpoint(stopped)["best"]


# --------------------------------------------------------------------------------------------------
# SIGINT, SIGTERM, --save-every


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_finishes_the_step_saves_and_resumes_exactly(data, tmp_path, signum):
    """SIGINT to the whole process group, as a terminal's Ctrl-C, or SIGTERM to every process of
    the job, as SLURM's preemption: the loader workers get it too, and must not die."""
    out, extra = tmp_path / "stopped", ("--epochs", "50", "--eval-every", "1")
    command = [sys.executable, "train.py", *flags(data, out, *extra, "--workers", "2")]
    status, output = start_and_signal(command, out, lambda p: os.killpg(p.pid, signum))
    assert status == 128 + signum, output[-3000:]                  # 130, 143
    assert f"continue with: python train.py --resume --out {out}" in output
    assert "Traceback" not in output
    assert_resumes_to_the_uninterrupted_run(data, tmp_path, out, *extra)


def worker_pids(launcher):
    """{rank: pid} of the processes torchrun started."""
    ranks = {}
    for pid in children(launcher):
        environment = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        ranks.update({int(v[5:]): pid for v in environment if v.startswith(b"RANK=")})
    return ranks


def rank_1(process):
    os.kill(worker_pids(process.pid)[1], signal.SIGTERM)


def whole_job(process):
    os.killpg(process.pid, signal.SIGTERM)


@pytest.mark.parametrize("send", [rank_1, whole_job])
def test_sigterm_under_torchrun_stops_every_rank_after_the_same_step(data, tmp_path, send):
    """A scheduler's SIGTERM that reaches rank 1 alone (rank 0 learns of it through the per-step
    all_reduce), or every process of the job, loader workers included (SLURM's preemption):
    last.pt is written, both exit; 1 process continues the run as if it never stopped."""
    out, extra = tmp_path / "stopped", ("--epochs", "50", *SGD_LIKE)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={free_port()}", "train.py", *flags(data, out, *extra)]
    if send is whole_job:
        command += ["--workers", "1"]
    env = dict(os.environ, TORCH_ELASTIC_SHUTDOWN_TIMEOUT="100")  # a rank left behind: a hang
    status, output = start_and_signal(command, out, send, env)
    assert status != 0 and "SIGTERM: stopped after step" in output, output[-3000:]
    assert "continue with: torchrun --standalone --nproc_per_node=2 train.py --resume" in output
    assert "DataLoader worker" not in output                       # none was killed
    if send is rank_1:
        assert "exitcode  : 143" in output                         # rank 1: 128 + SIGTERM
    assert_resumes_to_the_uninterrupted_run(data, tmp_path, out, *extra, atol=1e-5)


def test_a_signal_in_validation_stops_at_once_and_resume_validates_first(data, tmp_path,
                                                                         monkeypatch):
    out, extra = tmp_path / "stopped", ("--epochs", "2", "--eval-every", "1")
    validate = train.validate

    def signalled(run_):
        assert callable(signal.getsignal(signal.SIGTERM)), "no handler: SIGTERM would end pytest"
        os.kill(os.getpid(), signal.SIGTERM)
        return validate(run_)
    monkeypatch.setattr(train, "validate", signalled)
    with pytest.raises(SystemExit) as stopped:
        run(data, out, *extra)
    assert stopped.value.code == 143
    assert checkpoint(out)["step"] == 2 and checkpoint(out)["epoch_end_pending"]
    monkeypatch.setattr(train, "validate", validate)
    assert_resumes_to_the_uninterrupted_run(data, tmp_path, out, *extra)
    epochs = [r["epoch"] for r in map(json.loads, open(out / "metrics.jsonl")) if "val" in r]
    assert epochs == [1, 2]                               # epoch 1's validation came on resume


def test_save_every_bounds_what_a_crash_loses(data, tmp_path, monkeypatch):
    out, extra = tmp_path / "crashed", ("--batch-size", "4", "--save-every", "2")  # 4 steps
    contrastive_loss, calls = train.contrastive_loss, iter(range(100))

    def crash_in_step_4(*inputs):                         # one call per step (no --grad-accum)
        if next(calls) == 3:
            raise RuntimeError("the machine went away")
        return contrastive_loss(*inputs)
    monkeypatch.setattr(train, "contrastive_loss", crash_in_step_4)
    with pytest.raises(RuntimeError, match="went away"):
        run(data, out, *extra)
    assert checkpoint(out)["step"] == 2                           # mid-epoch: --save-every 2
    monkeypatch.setattr(train, "contrastive_loss", contrastive_loss)
    train.train(train.parse_args(["--resume", "--out", str(out)]))
    run(data, tmp_path / "straight", *extra)
    assert logged_steps(out) == [1, 2, 3, 4]
    assert_same_parameters(saved_model(tmp_path / "straight"), saved_model(out))


# --------------------------------------------------------------------------------------------------
# Every flag checked before anything is built


BAD_FLAGS = [("--batch-size", "-4"), ("--epochs", "0"), ("--frames", "0"), ("--grad-accum", "0"),
             ("--fold", "7"), ("--workers", "-1"), ("--lr", "-1"), ("--lr", "nan"),
             ("--root", "MISSING"), ("--arch", "ViT-Q/99"), ("--out", "A_FILE"), ("--shots", "0"),
             ("--clip-grad", "-1"), ("--warmup-epochs", "-1"), ("--warmup-epochs", "1"),
             ("--log-every", "0"), ("--eval-every", "-1"), ("--save-every", "-1"),
             ("--stop-after-steps", "-1"), ("--adam-eps", "0"), ("--weight-decay", "-1"),
             ("--new-lr-mult", "-1"), ("--grad-accum", "3"), ("--videos-dir", "MISSING"),
             ("--finetune-from", "MISSING"), ("--device", "cuda")]


@pytest.mark.parametrize("flag,value", BAD_FLAGS, ids=[f"{f}={v}" for f, v in BAD_FLAGS])
def test_a_bad_flag_ends_the_command_with_one_line_before_anything_is_built(data, tmp_path, flag,
                                                                          value, monkeypatch,
                                                                          capsys):
    def built(*args):
        raise AssertionError("a model or the data was built before the flags were checked")
    for name in ("build_run", "build_video_model", "load_splits"):
        monkeypatch.setattr(train, name, built)
    monkeypatch.setattr(train.Dist, "from_environment", built)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "A_FILE").write_text("not a folder")
    value = str(tmp_path / value) if value in ("MISSING", "A_FILE") else value
    with pytest.raises(SystemExit) as error:
        train.main(flags(data, tmp_path / "out", flag, value))  # 1 epoch of 2 steps, batch 8
    code = error.value.code
    message = capsys.readouterr().err.strip() if isinstance(code, int) else code
    assert code != 0 and flag in message and "\n" not in message, message


def test_the_default_warm_up_shrinks_to_a_tenth_of_a_short_run(capsys):
    args = train.parse_args(["--root", "x", "--epochs", "2"])   # the default: 5 epochs of warm-up
    assert args.warmup_epochs == pytest.approx(0.2)
    assert "warming up for 0.2 epochs" in capsys.readouterr().out
    assert train.lr_at(0.2, args) == pytest.approx(args.lr)      # the peak, then the decay to 0
    assert train.lr_at(2, args) < 1e-20
    assert train.parse_args(["--root", "x", "--epochs", "6"]).warmup_epochs == 5


def test_device_cpu_trains_on_the_cpu_beside_a_gpu(data, tmp_path, monkeypatch):
    asked, setup = [], evaluate.setup_distributed
    monkeypatch.setattr(evaluate, "setup_distributed",
                        lambda device=None: asked.append(device) or setup(device))
    result = run(data, tmp_path, "--device", "cpu", "--stop-after-steps", "1")
    assert result.ddp.device.type == "cpu" and asked == ["cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU, as far as torch sees
    assert evaluate.setup_distributed("cpu")[2].type == "cpu"


# --------------------------------------------------------------------------------------------------
# Damaged checkpoint files, run folders without a checkpoint, finished runs


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A run of 1 epoch (2 steps, validated): last.pt and best.pt, the same step."""
    out = tmp_path_factory.mktemp("finished")
    run(data, out, "--eval-every", "1")
    return out


def damage(path, kind):
    intact = open(path, "rb").read()
    if kind == "truncated":
        open(path, "wb").write(intact[:len(intact) // 2])
    elif kind == "empty":
        open(path, "wb").close()
    elif kind == "text":
        open(path, "w").write("<html>not found</html>\n")
    elif kind == "other dict":
        torch.save({"state_dict": {}}, path)
    else:
        torch.save(torch.zeros(3), path)


DAMAGE = ["truncated", "empty", "text", "other dict", "tensor"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_checkpoint_gets_one_line_from_every_script(data, finished, tmp_path, kind):
    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    damage(folder / "last.pt", kind)
    path = str(folder / "last.pt")
    new_run = flags(data, tmp_path / "new", "--finetune-from", path)
    as_arch = flags(data, tmp_path / "new", "--arch", path)
    for load in (lambda: evaluate.load_checkpoint(path, "cpu"),  # --checkpoint (zeroshot's too)
                 lambda: train.train(train.parse_args(new_run)),
                 lambda: train.train(train.parse_args(as_arch)),
                 lambda: train.parse_args(["--resume", "--out", str(folder)])):
        with pytest.raises(SystemExit) as error:
            load()
        assert path in error.value.code and "\n" not in error.value.code, error.value.code
    assert f"{folder / 'best.pt'} is intact (step 2" in error.value.code  # --resume names best.pt


def test_a_folder_without_a_checkpoint_runs_again_and_resumes_from_step_0(data, tmp_path, capsys):
    once, twice = tmp_path / "once", tmp_path / "twice"
    for out in (once, twice):
        run(data, out, "--stop-after-steps", "0", "--lr", "0.01")
        said = capsys.readouterr().out
        assert "nothing trained, no checkpoint written" in said and "--resume" not in said
        assert os.listdir(out) == ["metrics.jsonl"]   # as after a kill -9 in the first epoch
    run(data, once, "--stop-after-steps", "1")         # the same command again
    assert "starting the run afresh" in capsys.readouterr().out
    records = list(map(json.loads, open(once / "metrics.jsonl")))
    assert sum("config" in r for r in records) == 1 and checkpoint(once)["step"] == 1
    resumed = train.parse_args(["--resume", "--out", str(twice)])  # its flags: from metrics.jsonl
    assert not resumed.resume and resumed.lr == 0.01 and resumed.stop_after_steps is None
    train.train(resumed)
    assert checkpoint(twice)["step"] == 2 and checkpoint(twice)["args"]["lr"] == 0.01
    (once / "notes.txt").write_text("mine")
    os.remove(once / "last.pt")
    with pytest.raises(SystemExit, match="already holds a run"):  # a folder with other files: kept
        run(data, once)


def test_resume_of_a_finished_run_says_so_with_its_figures(finished, capsys):
    with pytest.raises(SystemExit) as done:
        train.main(["--resume", "--out", str(finished)])
    said = capsys.readouterr().out
    assert done.value.code == 0 and "is complete, nothing is left to do" in said
    assert "top-1" in said and "best.pt scored" in said


# --------------------------------------------------------------------------------------------------
# A full disk, a failed validation, a validation list without videos, an --out that cannot be
# written, more frames than a checkpoint's positions cover


class FullDisk(io.FileIO):
    """A file on a disk with `room` bytes left: the write that goes past them writes what fits and
    raises ENOSPC, as a full disk does."""

    def __init__(self, path, room):
        super().__init__(path, "w")
        self.room = room

    def write(self, data):
        data = bytes(data)
        if len(data) > self.room:
            super().write(data[:self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return super().write(data)


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one_and_says_how_to_go_on(
        data, tmp_path, monkeypatch):
    out = tmp_path / "full"
    run(data, out, "--epochs", "2", "--stop-after-steps", "2")           # last.pt: step 2
    before = checkpoint(out)
    real_open = open
    monkeypatch.setattr(train, "open", lambda path, mode="r", *rest: FullDisk(path, 100_000)
                        if path.endswith(".pt.tmp") else real_open(path, mode, *rest),
                        raising=False)                        # checkpoints: 100 kB of room left
    with pytest.raises(SystemExit) as error:
        train.main(["--resume", "--out", str(out)])                   # steps 3, 4, then a save
    message = error.value.code
    assert message.startswith(f"error: step 4: writing {out / 'last.pt'} failed (No space left "
                              f"on device; ") and "\n" not in message, message
    assert f"its temporary file is removed and {out / 'last.pt'} is intact (step 2, epoch 1)" \
           in message and message.endswith(f"continue with: python train.py --resume --out {out}")
    assert sorted(os.listdir(out)) == ["last.pt", "metrics.jsonl"]    # no last.pt.tmp
    after = checkpoint(out)
    assert after["step"] == 2 and after["epoch_end_pending"] == before["epoch_end_pending"]
    assert_same_parameters(after["model"], before["model"])
    prompts.load_actionclip(str(out / "last.pt"))                     # it loads
    monkeypatch.undo()
    train.main(["--resume", "--out", str(out)])                       # space again: it goes on
    assert checkpoint(out)["step"] == 4


def test_a_validation_that_fails_loses_no_epoch(data, tmp_path, monkeypatch):
    out = tmp_path / "oom"

    def out_of_memory(run):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(train, "validate", out_of_memory)
    with pytest.raises(SystemExit) as error:
        run(data, out, "--eval-every", "1")
    message = error.value.code
    assert message.startswith("error: epoch 1: validation ran out of memory on cpu; ") and \
        "\n" not in message and message.endswith(f"python train.py --resume --out {out}")
    assert checkpoint(out)["step"] == 2 and checkpoint(out)["epoch_end_pending"]

    def crash(run):
        raise RuntimeError("a bug in validation")
    monkeypatch.setattr(train, "validate", crash)
    with pytest.raises(RuntimeError, match="a bug in validation"):      # not a user's mistake
        train.main(["--resume", "--out", str(out)])
    monkeypatch.undo()
    train.main(["--resume", "--out", str(out)])                       # validates epoch 1 first
    validated = [r["epoch"] for r in map(json.loads, open(out / "metrics.jsonl")) if "val" in r]
    assert validated == [1] and checkpoint(out)["step"] == 2
    assert not checkpoint(out)["epoch_end_pending"] and (out / "best.pt").is_file()


def test_a_validation_list_without_videos_is_found_at_start_up(data, tmp_path, monkeypatch):
    (tmp_path / "empty.txt").write_text("")
    listed = ["--dataset", "list", "--list-file", "train.txt", "--classnames-file",
              "train_classnames.txt", "--val-list-file", str(tmp_path / "empty.txt")]

    def built(*args):
        raise AssertionError("the model was built before the validation list was checked")
    monkeypatch.setattr(train, "build_video_model", built)
    with pytest.raises(SystemExit) as error:
        run(data, tmp_path / "out", *listed, "--eval-every", "1")
    assert error.value.code == (f"error: --val-list-file {tmp_path / 'empty.txt'} lists no "
                                f"videos: validation needs at least one; fix it, or pass "
                                f"--eval-every 0 to train without validating")
    monkeypatch.undo()
    run(data, tmp_path / "out", *listed, "--eval-every", "0")          # never validated: fine
    assert checkpoint(tmp_path / "out")["step"] == 2


# /sys: no file or folder can be made there, even by root (a folder without write permission would
# not stop root): EPERM, or EROFS where sysfs is mounted read-only
@pytest.mark.parametrize("out", ["/sys/actionclip_run", "/sys/kernel"], ids=["new", "existing"])
def test_an_out_that_cannot_be_written_gets_one_line(data, out):
    with pytest.raises(SystemExit) as error:
        train.main(flags(data, out))
    message = error.value.code
    assert message.startswith(f"error: --out {out}: cannot write there (") and \
        message.endswith("): choose a writable folder") and "\n" not in message, message


def test_more_frames_than_a_checkpoint_s_positions_name_the_frames_flag(data, finished,
                                                                         tmp_path):
    checkpoint_4 = str(finished / "last.pt")                          # transf, 4 frames
    with pytest.raises(SystemExit) as error:
        run(data, tmp_path / "new", "--finetune-from", checkpoint_4, "--frames", "8")
    assert error.value.code == (f"error: --frames 8: --finetune-from {checkpoint_4} has "
                                f"per-frame position tables for 4 frames only (its visual prompt, "
                                f"like every transf, transf_cls and joint, runs at most the "
                                f"frames it was trained with); pass --frames 4 or fewer")


# Issue #24: a resumed run's best score, --save-every across epochs, SIGINT in a loader worker,
# flags that contradict each other


def test_resume_keeps_the_best_score_when_validation_falls_after_it(data, tmp_path, monkeypatch):
    """Validation top-1 80, then 50 (scores set here on the real validation): best.pt stays epoch
    1's, as in the uninterrupted run, though the run stopped and resumed between the two."""
    validate = train.validate

    def falling(run_):
        metrics = validate(run_)
        metrics["top1"] = {1: 80.0, 2: 50.0}[run_.step // run_.steps_per_epoch]
        return metrics
    monkeypatch.setattr(train, "validate", falling)
    extra = ("--epochs", "2", "--eval-every", "1")
    run(data, tmp_path / "straight", *extra)
    run(data, tmp_path / "resumed", *extra, "--stop-after-steps", "2")   # after epoch 1's check
    train.train(train.parse_args(["--resume", "--out", str(tmp_path / "resumed")]))
    for out in ("straight", "resumed"):
        best = checkpoint(tmp_path / out, "best.pt")
        assert best["step"] == 2 and best["best"] == 80.0, out
        assert checkpoint(tmp_path / out)["best"] == 80.0, out
    assert_same_parameters(saved_model(tmp_path / "straight", "best.pt"),
                           saved_model(tmp_path / "resumed", "best.pt"))


def test_save_every_counts_steps_across_epochs(data, tmp_path, monkeypatch):
    """4 steps an epoch, --save-every 3: last.pt at steps 3 and 6 (and 4, the epoch's end), so a
    crash in step 7 finds last.pt at step 6; counted within each epoch, it would be step 4's."""
    contrastive_loss, calls = train.contrastive_loss, iter(range(100))

    def crash_in_step_7(*inputs):                         # one call per step (no --grad-accum)
        if next(calls) == 6:
            raise RuntimeError("the machine went away")
        return contrastive_loss(*inputs)
    monkeypatch.setattr(train, "contrastive_loss", crash_in_step_7)
    with pytest.raises(RuntimeError, match="went away"):
        run(data, tmp_path, "--epochs", "2", "--batch-size", "4", "--save-every", "3")
    assert checkpoint(tmp_path)["step"] == 6


@pytest.fixture
def forkserver_workers():
    """DataLoader workers started by a fork server (Python 3.14's default on Linux): unlike forked
    ones, they inherit no signal handler from train.py's process."""
    previous = multiprocessing.get_start_method()
    multiprocessing.set_start_method("forkserver", force=True)
    yield
    multiprocessing.set_start_method(previous, force=True)


def wait_until_started(pid, timeout=60):
    """Until the worker runs its worker_init_fn (SIGINT ignored, in /proc's SigIgn mask): a worker
    still starting (importing, under a loaded machine) has Python's own SIGINT handler yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/status") as status:
            ignored = next(line for line in status if line.startswith("SigIgn:"))
        if int(ignored.split()[1], 16) >> (signal.SIGINT - 1) & 1:
            return
        time.sleep(0.05)
    raise AssertionError(f"loader worker {pid} never ignored SIGINT")


def test_a_sigint_that_reaches_the_loader_workers_costs_no_step(data, tmp_path, monkeypatch,
                                                               forkserver_workers):
    """Ctrl-C reaches the loader workers too. Here, after step 1, each training worker gets a
    SIGINT and the main process none: the run goes on (the main process alone decides when to
    stop), and ends as a run without workers does."""
    train_step, signalled = train.train_step, []

    def then_interrupt_the_workers(run_, batches):
        loss = train_step(run_, batches)
        if run_.step == 1 and run_.args.workers:
            signalled.extend(multiprocessing.active_children())
            for worker in signalled:
                wait_until_started(worker.pid)
                os.kill(worker.pid, signal.SIGINT)
        return loss
    monkeypatch.setattr(train, "train_step", then_interrupt_the_workers)
    extra = ("--epochs", "2", "--batch-size", "4")               # 8 steps: more than prefetched
    run(data, tmp_path / "workers", *extra, "--workers", "2")
    assert len(signalled) == 2 and logged_steps(tmp_path / "workers") == list(range(1, 9))
    run(data, tmp_path / "plain", *extra, "--workers", "0")
    assert_same_parameters(saved_model(tmp_path / "plain"), saved_model(tmp_path / "workers"))


CONTRADICTIONS = [("--init-text", "random", "--init-* random"),     # flag, value, named in the
                  ("--init-vision", "random", "--init-* random"),   # error line
                  ("--visual-prompt", "transf", "drop --visual-prompt")]


@pytest.mark.parametrize("flag,value,named", CONTRADICTIONS,
                         ids=[f"{f}={v}" for f, v, _ in CONTRADICTIONS])
def test_finetune_from_with_a_flag_it_overrides_ends_the_command_with_one_line(
        data, finished, tmp_path, flag, value, named, monkeypatch, capsys):
    """--finetune-from brings trained weights and their visual prompt: a random encoder or another
    prompt asked for beside it would be silently overridden (or would discard the weights)."""
    def built(*args):
        raise AssertionError("a model or the data was built before the flags were checked")
    for name in ("build_run", "build_video_model", "load_splits"):
        monkeypatch.setattr(train, name, built)
    monkeypatch.setattr(train.Dist, "from_environment", built)
    with pytest.raises(SystemExit) as error:                          # a readable checkpoint
        train.main(flags(data, tmp_path / "out", "--finetune-from", str(finished / "last.pt"),
                         flag, value))
    err = capsys.readouterr().err
    message = err.strip().splitlines()[-1]                            # after argparse's usage
    assert error.value.code == 2 and "--finetune-from" in message and named in message, message
    assert "Traceback" not in err
