"""SmolLM2-135M-Instruct over a small TOFU subset (real model, CPU, a few minutes): slow tier."""
import json
import time

import numpy as np
import pytest

from unlearning.evaluation import evaluate, summary_json


@pytest.mark.slow
def test_smollm2_tofu_subset():
    from unlearning.models import load_model

    model, tok = load_model("smollm2-135m")
    start = time.perf_counter()
    ds = evaluate(model, tok, "tofu", forget_split="forget01", max_instances=20, batch_size=8,
                  max_new_tokens=48, progress=True)
    seconds = time.perf_counter() - start
    summary = summary_json(ds)
    print(json.dumps(summary, indent=1), f"\nwall time {seconds:.0f} s")
    s = lambda m: ds.summary.sel(metric=m).item()
    assert ds.sizes["instance"] == 100
    for m in ds.metric.values:
        assert np.isnan(s(m)) == m.startswith("forget_quality"), m
    for m in ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "model_utility", "ra_Q_A_ROUGE",
              "extraction_strength", "mia_min_k"):
        assert 0 <= s(m) <= 1, m
    # a pretrained model knows world facts: better than chance (1 of 4 options) and it
    # answers some of them in its own words
    assert s("wf_Q_A_Prob_normalised") > 0.25
    assert s("wf_Q_A_ROUGE") > 0.2
