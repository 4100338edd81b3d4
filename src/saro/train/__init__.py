"""Training stages: RW (SFT) and SRPO (DPO), thin over TRL; configs extend TRL's; runs under ``accelerate launch``."""

from saro.train.config import SaroDPOConfig, SaroSFTConfig, build_dpo_config, build_sft_config

__all__ = ["SaroDPOConfig", "SaroSFTConfig", "build_dpo_config", "build_sft_config", "train_dpo", "train_sft"]


def train_sft(*args, **kwargs):  # type: ignore[no-untyped-def]
    """See :func:`saro.train.sft.train_sft` (imported lazily: TRL trainers take seconds to import)."""
    from saro.train.sft import train_sft as _f

    return _f(*args, **kwargs)


def train_dpo(*args, **kwargs):  # type: ignore[no-untyped-def]
    """See :func:`saro.train.dpo.train_dpo` (imported lazily)."""
    from saro.train.dpo import train_dpo as _f

    return _f(*args, **kwargs)
