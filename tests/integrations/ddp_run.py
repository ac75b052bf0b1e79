"""Run by `torch.distributed.run` (2 CPU processes, gloo) from test_ddp.py: the engine's
batch of B rows split over the ranks, B / world rows each, through the Trainer with G-effects.

    python -m torch.distributed.run --nproc_per_node 2 tests/integrations/ddp_run.py CFG_JSON OUT
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integrations.helpers import trainer_for  # noqa: E402
from unlearning.config import RunConfig  # noqa: E402

if __name__ == "__main__":
    cfg = RunConfig.from_json(Path(sys.argv[1]).read_text())
    trainer_for(cfg, sys.argv[2], world=2).train()
