"""One command at a time writes a run folder or a report (video_data.OutputLock).

The specifications: a second train.py into the --out of a running one ends with one line naming
the first one's pid and host, and writes nothing there; once the first is killed (SIGKILL: no
clean-up) its lock file is recognised as stale and taken over; evaluate.py's and zeroshot.py's
reports and `video_data.py prepare --out` are refused the same way while another process holds
them, and the lock file is gone when a command ends. Tiny CLIPs and 16 x 16 synthetic videos, as
in test_train.py.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import evaluate
import train
import video_data
import zeroshot
from dataset_fixtures import make_ucf101
from test_evaluate import save_checkpoint
from test_train import REPO, flags
from test_train import data  # noqa: F401 (a fixture)


def holder(kind, path, flag):
    """Another process holding the lock of `path` (OutputLock.folder or .file), until killed."""
    code = (f"import time, video_data; video_data.OutputLock.{kind}({path!r}, {flag!r}); "
            f"print('held', flush=True); time.sleep(300)")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline() == "held\n"
    return process


def refused(main, argv, flag, target, process):
    """main(argv) ends with one line naming `process` as the holder of `target`."""
    with pytest.raises(SystemExit) as exit:
        main(argv)
    message = str(exit.value)
    assert message.startswith(f"error: {flag} {target} is in use by pid {process.pid} on host "
                              f"{socket.gethostname()}"), message
    assert "\n" not in message and f"choose another {flag}" in message


def test_a_second_training_into_a_running_one_s_out_is_refused_then_takes_over_when_killed(
        data, tmp_path, capsys):
    out = str(tmp_path / "run")
    first = subprocess.Popen([sys.executable, "train.py", *flags(data, out, "--epochs", "200")],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    metrics, deadline = os.path.join(out, "metrics.jsonl"), time.time() + 120
    while not (os.path.isfile(metrics) and '"loss"' in open(metrics).read()):
        assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
        time.sleep(0.05)
    try:
        before = sorted(os.listdir(out))
        refused(train.main, ["--resume", "--out", out], "--out", out, first)
        refused(train.main, flags(data, out), "--out", out, first)
        assert not first.poll()                         # the first run goes on, undisturbed
    finally:
        first.send_signal(signal.SIGKILL)               # no clean-up: its lock file stays
        first.wait()
    assert set(before) <= set(os.listdir(out)) and video_data.LOCK_NAME in os.listdir(out)
    step = torch.load(os.path.join(out, "last.pt"))["step"] if \
        os.path.isfile(os.path.join(out, "last.pt")) else 0
    capsys.readouterr()
    train.main(["--resume", "--out", out, "--stop-after-steps", str(step + 1)])
    err = capsys.readouterr().err
    assert f"--out {out}: taking over the lock {os.path.join(out, video_data.LOCK_NAME)} left " \
           f"by pid {first.pid} on host {socket.gethostname()}, which is no longer running" in err
    assert torch.load(os.path.join(out, "last.pt"))["step"] == step + 1
    assert video_data.LOCK_NAME not in os.listdir(out)  # released at the end


@pytest.fixture(scope="module")
def ucf101(tmp_path_factory):
    return make_ucf101(tmp_path_factory.mktemp("ucf101"))


def test_reports_of_evaluate_and_zeroshot_have_one_writer(ucf101, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "ckpt.pt")
    common = ["--checkpoint", checkpoint, "--workers", "0", "--device", "cpu"]
    report, scores = str(tmp_path / "report.json"), str(tmp_path / "scores.pt")
    evaluate_argv = [*common, "--dataset", "ucf101", "--root", ucf101["root"], "--json", report,
                     "--save-scores", scores]
    video = ucf101["test"][1][0][0]
    zeroshot_argv = [*common, "--video", video, "--labels", "a", "b", "--json", report]
    for flag, target in (("--json", report), ("--save-scores", scores)):
        process = holder("file", target, flag)
        try:
            refused(evaluate.main, evaluate_argv, flag, target, process)
            if flag == "--json":
                refused(zeroshot.main, zeroshot_argv, flag, target, process)
        finally:
            process.kill()
            process.wait()
    assert not os.path.exists(report) and not os.path.exists(scores)  # nothing was written
    evaluate.main(evaluate_argv)                        # the holder is gone: a stale lock
    zeroshot.main(zeroshot_argv)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt", "report.json", "scores.pt"]  # no lock left


def test_prepare_into_an_out_in_use_is_refused(ucf101, tmp_path):
    out = str(tmp_path / "prepared")
    argv = ["prepare", "--dataset", "ucf101", "--root", ucf101["root"], "--out", out,
            "--workers", "0", "--short-side", "16"]
    process = holder("folder", out, "--out")
    try:
        refused(video_data.main, argv, "--out", out, process)
        assert os.listdir(out) == [video_data.LOCK_NAME]  # its own lock alone: nothing written
    finally:
        process.kill()
        process.wait()
    assert video_data.main(argv) == 0
    assert video_data.PREPARED_RECORD in os.listdir(out)
    assert video_data.LOCK_NAME not in os.listdir(out)
