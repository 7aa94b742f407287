"""Mutation testing with mutmut over the functions that change results: which planted changes do the
tests miss?

    pip install mutmut                          # a dev tool (3.x), not in CI
    python benchmarks/mutation.py               # run the scope below (tens of minutes), then report
    python benchmarks/mutation.py --report      # the figures of the last run, by file
    mutmut results                              # the surviving mutants; mutmut show NAME: its diff

mutmut (configured in setup.cfg) copies the six files to mutants/, rewrites each function into
many variants (an operator, a constant, an argument changed, a call dropped), learns which tests
call each function by tracing one run of setup.cfg's test selection, then runs those tests with
one variant switched on at a time: "killed" when a test fails, "survived" when all pass. The scope
is the method and its options: the loss, the learning-rate schedule and optimiser groups, the
visual prompts, the prompt ensemble and the metrics, frame sampling and the crop boxes, the
zero-shot subsets; not the decoder, the parsers, checkpoints, signals or messages. Results are kept
in mutants/ (git-ignored): a second run only tests what changed.
"""

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys

from mutmut.stats import status_by_exit_code   # exit code -> 'killed', 'survived', ...

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# file -> functions ("Class.method" for a method)
SCOPE = {
    "clip_model.py": ["QuickGELU.forward", "trim_padding"],
    "prompts.py": ["class_prompts", "tokenize_prompts", "MeanP.forward", "Conv1D.forward",
                   "LSTM.forward", "Transf.forward", "TransfCls.forward", "temporal_shift",
                   "ActionCLIP.encode_video", "ActionCLIP.forward", "ensemble_scores"],
    "train.py": ["kl_video_text_loss", "classifier_loss", "contrastive_loss", "lr_at", "set_lr",
                 "few_shot", "encoder_of"],
    "evaluate.py": ["view_averaged_scores", "topk_accuracy", "per_class_accuracy",
                    "average_precision", "per_class_average_precision", "mean_average_precision",
                    "confusion_matrix"],
    "zeroshot.py": ["subset_predictions", "half_class_draws", "mean_std", "benchmark_results"],
    "video_data.py": ["_segment_bounds", "_train_indices", "_test_indices", "sample_indices",
                      "_tsn_offsets", "_msc_box", "_three_crop_boxes"],
}

def mutant_prefix(file, function):
    """The start of mutmut's names of a function's mutants: train.x_lr_at__mutmut_,
    prompts.xǁLSTMǁforward__mutmut_."""
    module = file[:-3]
    if "." in function:
        cls, method = function.split(".")
        return f"{module}.x\u01c1{cls}\u01c1{method}__mutmut_"
    return f"{module}.x_{function}__mutmut_"


def report():
    rows, total, tested = [], collections.Counter(), []
    for file, functions in SCOPE.items():
        meta = os.path.join(REPO, "mutants", file + ".meta")
        if not os.path.exists(meta):
            raise SystemExit(f"{meta} is missing: run python benchmarks/mutation.py first")
        codes = json.load(open(meta))["exit_code_by_key"]
        prefixes = tuple(mutant_prefix(file, f) for f in functions)
        counts = collections.Counter(status_by_exit_code[code]
                                     for name, code in codes.items() if name.startswith(prefixes))
        rows.append((file, counts))
        total += counts
        for function in functions:
            mine = [code for name, code in codes.items()
                    if name.startswith(mutant_prefix(file, function))]
            if None not in mine:                     # every mutant of the function was tested
                tested.append(f"{file[:-3]}.{function}")
    columns = ["mutants", "killed", "survived", "timeout", "suspicious", "no tests", "not checked"]
    print(f"| file | {' | '.join(columns)} |\n|---|{'---|' * len(columns)}")
    for file, counts in rows + [("all", total)]:
        cells = [sum(counts.values())] + [counts[c] for c in columns[1:]]
        print(f"| {file} | {' | '.join(str(c) for c in cells)} |")
    print(f"\nfunctions whose mutants were all tested: {', '.join(tested) or 'none'}")
    others = set(total) - set(columns)
    if others:
        print("other:", {k: total[k] for k in others})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="report the last run, run nothing")
    parser.add_argument("--max-children", type=int, default=2,
                        help="mutants tested at once (default 2: the cores of the reference "
                             "machine)")
    args = parser.parse_args(argv)
    if not args.report:
        names = [mutant_prefix(file, f) + "*" for file, fs in SCOPE.items() for f in fs]
        env = dict(os.environ, OMP_NUM_THREADS="1")       # one thread per mutant's test process
        command = ["nice", "-n", "15", "mutmut", "run", "--max-children",
                   str(args.max_children), *names]
        status = subprocess.run(command, cwd=REPO, env=env).returncode
        if status:
            return status
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
