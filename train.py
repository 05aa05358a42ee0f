"""Train SRD: ``python train.py --model_name mono_srd [...]``.

Single process (CPU or one GPU) when run directly; DDP when launched with ``torchrun`` or
``python -m torch.distributed.launch`` (the Trainer reads rank and world size from the environment).
"""

import sys

from options import SRDOptions, apply_resume_options
from networks import PretrainedWeightsUnavailable
from trainer import NonFiniteLossError, Trainer
from utils import keep_freed_memory, run_cli


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    options = SRDOptions()
    opt = apply_resume_options(options, options.parse(argv), argv)
    keep_freed_memory()
    try:
        Trainer(opt).train()
    except PretrainedWeightsUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
