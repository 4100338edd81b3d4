"""Entry point that ``accelerate launch`` / ``torchrun`` run on every process:

    accelerate launch --config_file configs/accelerate/ddp.yaml -m saro.train sft SPEC.json

SPEC.json holds ``{"config": {<recipe section>}, "output_dir": ..., "train_file": ..., "eval_file": null}`` (see
:func:`saro.train.launch.write_spec`). The stage runs unchanged: the same ``train_sft`` / ``train_dpo`` as in-process.
"""

from __future__ import annotations

import sys

from saro.train.launch import main

if __name__ == "__main__":
    sys.exit(main())
