"""Training stages: RW (SFT) and SRPO (DPO), thin over TRL; configs extend TRL's; runs under ``accelerate launch``.

Importing the package imports no TRL: ``saro.train.config``, ``sft`` and ``dpo`` do, when a stage trains."""
