"""The MOT scores against a case computed by hand, and the MOTChallenge file round trip."""

from __future__ import annotations

from pathlib import Path

from visionedge.analytics.mot import detector_recall, read_mot, score, write_row

A, B = (0.0, 0.0, 10.0, 10.0), (20.0, 0.0, 30.0, 10.0)
NEAR_A = (1.0, 0.0, 11.0, 10.0)  # IoU with A = 90/110 = 0.82
FAR = (50.0, 50.0, 60.0, 60.0)


def test_scores_of_a_hand_computed_case() -> None:
    """4 frames, 2 true objects (7 boxes), 8 tracker boxes; A's id switches once, B is missed once.

    frame 1: A->1, B->2                       2 matches
    frame 2: A->1, B missed, 9 on nothing     1 match, 1 miss, 1 false positive
    frame 3: A->3 (switch), B->2              2 matches, 1 id switch
    frame 4: A->3, 2 on nothing (B has left)  1 match, 1 false positive
    MOTA = 1 - (1 miss + 2 false positives + 1 switch) / 7 = 3/7. IDF1: the best mapping takes A->1 or A->3
    (2 frames each) and B->2 (2 frames): IDTP 4, IDF1 = 2*4 / (7 + 8) = 8/15.
    """
    gt = {1: {1: A, 2: B}, 2: {1: A, 2: B}, 3: {1: A, 2: B}, 4: {1: A}}
    hyp = {1: {1: NEAR_A, 2: B}, 2: {1: A, 9: FAR}, 3: {3: A, 2: B}, 4: {3: NEAR_A, 2: FAR}}
    s = score(gt, hyp)
    assert (s.gt, s.hyp, s.matches, s.misses, s.false_positives, s.id_switches) == (7, 8, 7 - 1, 1, 2, 1)
    assert abs(s.mota - (1 - (1 + 2 + 1) / 7)) < 1e-12
    assert s.idtp == 4
    assert abs(s.idf1 - 8 / 15) < 1e-12


def test_a_kept_match_beats_a_better_newcomer() -> None:
    """CLEAR MOT keeps last frame's pair while it qualifies (IoU >= 0.5), even if another box fits better now."""
    gt = {1: {1: A}, 2: {1: A}}
    hyp = {1: {1: NEAR_A}, 2: {1: NEAR_A, 2: A}}
    s = score(gt, hyp)
    assert (s.id_switches, s.matches, s.false_positives) == (0, 2, 1)


def test_detector_recall_counts_one_detection_per_box() -> None:
    """Two true boxes, one detection on each of A and none on B: recall 1/2 per frame."""
    gt = {1: {1: A, 2: B}}
    assert detector_recall(gt, {1: [NEAR_A, NEAR_A]}) == 0.5


def test_motchallenge_rows_round_trip(tmp_path: Path) -> None:
    """What `--mot` writes, `read_mot` (and any MOTChallenge scorer) reads back."""
    path = tmp_path / "tracks.txt"
    with path.open("w") as out:
        write_row(out, 3, 7, (10.0, 20.0, 40.0, 100.0), 0.9)
    assert path.read_text() == "3,7,10.00,20.00,30.00,80.00,0.9000,-1,-1,-1\n"
    assert read_mot(path) == {3: {7: (10.0, 20.0, 40.0, 100.0)}}
