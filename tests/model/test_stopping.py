"""Whether stage 2 runs at all (`stopping.little_to_gain`, `skip_reason`): a table of the measured cases, and the
issue's own case end to end (the shipped demo drawings at 96 px: the head is kept without a fine-tuning step)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from smarthub.model.lpft import HeadScore
from smarthub.model.stopping import FIXABLE_SHARE, head_errors, little_to_gain, skip_reason

# (head accuracy, validation images) → stage 2 skipped?, reason pattern (None: it runs)
CASES = [
    ((1.0, 10), True, r"^the head gets 0 of 10 validation images wrong, within the noise of that count \(±0\.0\)"),
    ((47 / 48, 48), True, r"^the head gets 1 of 48 .* within the noise of that count \(±2\.0\)"),  # bench photos
    ((10 / 16, 16), True, r"^the head gets 6 of 16 validation images wrong: fixing 50% of them, more than "
                          r"fine-tuning fixed on the benchmarks, would be within the noise of that count \(±3\.9\): "
                          r"fine-tuning could not show a gain; kept the head$"),  # the shipped demo, 96 px
    ((40 / 51, 51), True, r"^the head gets 11 of 51 .*\(±5\.9\)"),  # the 254 photos in 8 classes
    ((4 / 16, 16), False, None),  # a poor head on few images: half its errors would show
    ((0.795, 200), False, None),  # Fashion-MNIST split 42 (fine-tuning gains 5-6 points)
    ((0.845, 200), False, None),  # Fashion-MNIST split 1, the best head there (gains 6 points)
    ((0.708, 113), False, None),  # openclipart split 7, the best head there
    ((0.628, 113), False, None),  # openclipart split 2
    ((0.5, 0), False, None),  # no validation images: nothing to judge, stage 2 runs as asked
]


@pytest.mark.parametrize(("head", "skipped", "reason"), CASES, ids=[
    "perfect", "photos", "demo", "issue-photos", "poor-head", "fashion-42", "fashion-1", "clipart-7", "clipart-2",
    "no-valid"])
def test_stage_two_is_skipped_only_when_its_gain_could_not_show(head, skipped, reason) -> None:
    accuracy, n_valid = head
    score = HeadScore(valid_loss=1.0, accuracy=accuracy)
    assert little_to_gain(score, n_valid=n_valid) is skipped
    line = skip_reason(score, n_valid=n_valid)
    if reason is None:
        assert line is None
    else:
        assert re.search(reason, line), line
    if n_valid:
        errors, noise = head_errors(score, n_valid)
        assert skipped == (FIXABLE_SHARE * errors <= noise)


def test_the_shipped_demo_keeps_the_head_without_a_fine_tuning_step(tmp_path: Path, torch_home: Path, capsys) -> None:
    """Issue 20's own case: `smarthub train --size 96` on the demo's drawings. Six fine-tuning epochs never beat the
    head there; now the run says why in one line and keeps the head, as a `--head-only` run would."""
    import json

    from smarthub.cli import main
    from smarthub.demo import SAMPLES_DIR, sample_images

    data = tmp_path / "data"
    for label, images in sample_images(SAMPLES_DIR).items():
        (data / label).mkdir(parents=True)
        for src in images:
            shutil.copyfile(src, data / label / src.name)
    rc = main(["train", "--data", str(data), "--models", str(tmp_path / "models"), "--size", "96"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads((tmp_path / "models" / "report.json").read_text())
    assert report["epochs_run"] == 0 and report["best_epoch"] == 0 and report["probe"] is None
    assert report["valid_accuracy"] == pytest.approx(report["head_valid_accuracy"], abs=1e-4)
    assert report["head_valid_accuracy"] < 1.0  # there were errors to fix
    assert report["finetune_decision"] == skip_reason(HeadScore(1.0, report["head_valid_accuracy"]), n_valid=16)
    assert report["finetune_decision"] in err.splitlines()
    assert not [ln for ln in err.splitlines() if ln.startswith("epoch ")]  # not one fine-tuning step
    assert "kept the head" in out
