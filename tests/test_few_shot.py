"""--shots K (Fig. 3): K videos of each class, multi-label videos counted for their first class, in
the split's order. Found by mutmut (benchmarks/mutation.py): the training test has single-label
videos only, so a draw that counted a multi-label video for another of its classes passed.
"""

import train
import video_data


def split_of(labels, multilabel=False):
    records = [video_data.VideoRecord(f"v{i}.avi", label) for i, label in enumerate(labels)]
    return video_data.DatasetSplit(records, ["a", "b", "c", "d"], multilabel)


def drawn(split, shots, seed):
    return [int(r.path[1:-4]) for r in train.few_shot(split, shots, seed).records]  # indices


def test_k_videos_of_each_class_in_the_split_order():
    labels = [0, 1, 2, 0, 1, 2, 0, 1, 0, 0]                 # class 2 has 2 videos: it keeps both
    for seed in range(5):
        picked = drawn(split_of(labels), 3, seed)
        assert picked == sorted(picked)                     # the split's order, not the draw's
        assert sorted(labels[i] for i in picked) == [0, 0, 0, 1, 1, 1, 2, 2]
    assert len({tuple(drawn(split_of(labels), 3, seed)) for seed in range(5)}) > 1


def test_a_multi_label_video_counts_for_its_first_class_only():
    # first classes 0, 1, 2, 3 twice each; every video also has class 3 (or 0) as its second
    labels = [[0, 3], [1, 3], [2, 3], [3, 0], [0, 3], [1, 3], [2, 3], [3, 0]]
    split = split_of(labels, multilabel=True)
    for seed in range(3):
        result = train.few_shot(split, 1, seed)
        assert result.multilabel and result.classnames == split.classnames
        assert sorted(r.label[0] for r in result.records) == [0, 1, 2, 3]
