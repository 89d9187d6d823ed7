"""What both searches share (smarthub/trials.py): the choice between the best trial's model and the final run."""
from __future__ import annotations

import re

import pytest

from smarthub.trials import choose_promoted


@pytest.mark.parametrize(("trial", "final", "why_not", "promoted", "line"), [
    (0.30, 0.40, "", "final", r"^the final run is better: validation mAP50-95 0\.400 against the best trial's 0\.300$"),
    (0.40, 0.30, "", "trial", r"^kept the best trial's model \(validation mAP50-95 0\.400\): the final run reached "
                              r"0\.300, not better$"),
    (0.40, 0.40, "", "trial", r"^kept the best trial's model .*: the final run reached 0\.400, not better$"),
    (0.40, None, "the final run failed (boom)", "trial", r"^kept the best trial's model \(validation mAP50-95 "
                                                         r"0\.400\): the final run failed \(boom\)$"),
    (0.40, None, "", "trial", r": the final run has no validation score$"),
    (None, 0.10, "", "final", r"^the final run is better: validation mAP50-95 0\.100 against the best trial's -$"),
], ids=["final-better", "trial-better", "tie-keeps-trial", "final-failed", "final-unmeasured", "trial-unmeasured"])
def test_the_promoted_model_is_the_better_on_validation(trial, final, why_not, promoted, line) -> None:
    choice = choose_promoted(trial, final, metric="mAP50-95", why_not=why_not)
    assert choice.promoted == promoted and re.search(line, choice.line), choice.line
    assert choice.to_json() == {"promoted": promoted, "metric": "mAP50-95", "trial_score": trial,
                                "final_score": final, "why": choice.line}
