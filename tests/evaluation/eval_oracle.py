"""The slow one-row-at-a-time scorer every batched number is checked against."""
import numpy as np
import torch


def slow_row_scores(model, row: dict) -> dict:
    """Obviously-correct scoring of ONE unpadded row: per label token log p, mu, sigma, argmax."""
    ids = torch.tensor([row["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()          # (T, V)
    out = {"logprob": [], "mu": [], "sigma": [], "top1": []}
    for t in range(1, len(row["input_ids"])):
        y = row["labels"][t]
        if y == -100:
            continue
        logp = torch.log_softmax(logits[t - 1], -1)               # (V,)
        p = logp.exp()
        mu = float((p * logp).sum())
        var = float((p * (logp - mu) ** 2).sum())
        out["logprob"].append(float(logp[y]))
        out["mu"].append(mu)
        out["sigma"].append(var ** 0.5)
        out["top1"].append(int(logits[t - 1].argmax()) == y)
    return {k: np.array(v) for k, v in out.items()}


def slow_nll(model, row: dict) -> float:
    """Mean NLL of the label tokens of one row."""
    return float(-slow_row_scores(model, row)["logprob"].mean())
