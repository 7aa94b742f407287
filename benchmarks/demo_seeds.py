"""Does the demo show what it claims on every seed? `python train.py --demo --seed S` for S = 0-9.

For each seed, the user's command itself, in a process of its own (the videos, transf and meanP
trained at once through train(), the scoring), then its figures for both prompts (read from the
scores.json it writes): seen-class top-1 on held-out videos, direction top-1 (the seen classes
moving left or right), left/right (how often those videos score their class above the same colour
and shape moving the other way: the direction alone), zero-shot top-1 on the unseen combinations.
Then a Markdown table (the README's) and the issue's targets:
  transf learns direction (>= 90 % direction top-1) on at least 9 of 10 seeds;
  meanP stays near chance on direction: 50 % left/right (frame order decides);
  transf's zero-shot top-1 is at least 3x chance.
Each demo's CPU time (user + sys, its processes together) and wall time are printed too; with --jobs
above 1 the wall times overlap and say little.

    python benchmarks/demo_seeds.py                  # seeds 0-9, one demo at a time
    python benchmarks/demo_seeds.py --jobs 3         # three demos at once (six training processes)
    python benchmarks/demo_seeds.py --seeds 3 4      # some seeds
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
import train  # noqa: E402

FIGURES = ("seen", "direction", "left/right", "zero-shot")
DIRECTION_LEARNED = 90.0  # % direction top-1 that counts as learned
ZERO_SHOT_OVER_CHANCE = 3


def start_demo(seed, out):
    """`python train.py --demo --seed S --out out/seedS`, its output in out/seedS.log."""
    folder = os.path.join(out, f"seed{seed}")
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--demo", "--seed", str(seed),
               "--out", folder]
    with open(folder + ".log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    return process, folder, time.time()


def finish_demo(process, folder, start):
    """Wait for a demo: (scores, cpu seconds of it and its trainings, wall seconds)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"the demo in {folder} failed (exit {process.returncode}): "
                         f"see {folder}.log")
    with open(os.path.join(folder, "scores.json")) as f:
        return json.load(f), usage.ru_utime + usage.ru_stime, time.time() - start


def row(seed, scores, cpu, wall):
    figures = " ".join(f"{scores[p][k]:17.1f}" for p in train.DEMO_PROMPTS for k in FIGURES)
    return f"{seed:>4} {figures}{cpu:8.0f}{wall:8.0f}"


def markdown_table(rows):
    names = [f"{p} {k}" for p in train.DEMO_PROMPTS for k in FIGURES]
    lines = ["| seed | " + " | ".join(names) + " |", "|---:" * (1 + len(names)) + "|"]
    for seed, scores in rows:
        figures = [f"{scores[p][k]:.1f}" for p in train.DEMO_PROMPTS for k in FIGURES]
        lines.append(f"| {seed} | " + " | ".join(figures) + " |")
    return "\n".join(lines)


def verdict(rows):
    """The issue's three targets, each with the figures it was judged on."""
    chance = 100 / len(train.demo_classes()[1])
    learned = [seed for seed, s in rows if s["transf"]["direction"] >= DIRECTION_LEARNED]
    meanp = [s["meanP"]["left/right"] for _, s in rows]
    zero_shot = min(s["transf"]["zero-shot"] for _, s in rows)
    return [f"transf direction >= {DIRECTION_LEARNED:.0f}: {len(learned)} of {len(rows)} seeds",
            f"meanP left/right: {min(meanp):.1f} to {max(meanp):.1f} (chance 50)",
            f"transf zero-shot: lowest {zero_shot:.1f} = {zero_shot / chance:.1f}x chance "
            f"({chance:.1f}; target {ZERO_SHOT_OVER_CHANCE}x)"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="the seeds")
    parser.add_argument("--jobs", type=int, default=1,
                        help="demos run at once (each trains in two processes)")
    parser.add_argument("--out", default=os.path.join("runs", "demo_seeds"),
                        help="a demo folder and log per seed")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    names = " ".join(f"{p + ' ' + k:>17}" for p in train.DEMO_PROMPTS for k in FIGURES)
    print(f"{'seed':>4} {names}{'cpu s':>8}{'wall s':>8}", flush=True)
    waiting, running, rows = list(args.seeds), [], {}
    while waiting or running:
        while waiting and len(running) < args.jobs:
            seed = waiting.pop(0)
            running.append((seed, start_demo(seed, args.out)))
        seed, demo = running.pop(0)                                   # in order of seeds
        scores, cpu, wall = finish_demo(*demo)
        rows[seed] = scores
        print(row(seed, scores, cpu, wall), flush=True)
    rows = sorted(rows.items())
    print("\n" + markdown_table(rows) + "\n\n" + "\n".join(verdict(rows)))


if __name__ == "__main__":
    main()
