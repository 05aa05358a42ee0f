"""Train SRD: ``python train.py --model_name mono_srd [...]``.

Single process (CPU or one GPU) when run directly; DDP when launched with ``torchrun`` or
``python -m torch.distributed.launch`` (the Trainer reads rank and world size from the environment).

The entry point is decorated with torchrun's ``record``: a failing rank writes its one-line reason
to the launcher's error file, and the launcher prints it last, as the job's root cause.
"""

import json
import os
import sys
import time

from torch.distributed.elastic.multiprocessing.errors import ErrorHandler, record

from options import SRDOptions, apply_resume_options
from networks import PretrainedWeightsUnavailable
from trainer import NonFiniteLossError, Trainer
from utils import error_line, is_input_error, keep_freed_memory, run_cli


def record_error_line(line):
    """Write ``error: <line>`` as this process's root cause for torchrun (no-op outside it)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {"message": {"message": line, "extraInfo": {"py_callstack": f"error: {line}",
                                                       "timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w") as f:
            json.dump(data, f)
    except OSError:
        pass


def _peer_failure(exc):
    """A collective that failed because another rank went down (gloo / NCCL connection errors)."""
    text = str(exc)
    return type(exc).__name__ in ("DistBackendError", "DistNetworkError") or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe"))


class OneLineErrorHandler(ErrorHandler):
    """torchrun's error handler, with our one-line message for bad input instead of a traceback;
    a rank that only fails because a peer went down waits, so that the launcher names the peer."""

    def record_exception(self, e):
        if is_input_error(e):
            record_error_line(error_line(e))
            return
        if _peer_failure(e) and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            time.sleep(3)  # the launcher sees the rank that failed first and stops this one
        super().record_exception(e)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    options = SRDOptions()
    opt = apply_resume_options(options, options.parse(argv), argv)
    keep_freed_memory()
    try:
        Trainer(opt).train()
    except PretrainedWeightsUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        record_error_line(str(err))
        return 2
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        record_error_line(str(err))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(record(main, error_handler=OneLineErrorHandler())))
