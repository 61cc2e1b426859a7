"""minimost: a from-scratch, teachable re-implementation of MoST (Modality-Aware Mixture of Experts).

Start reading at `minimost.config` (the typed configs and presets), then `minimost.moe` (the
MAMoE router and experts) and `minimost.model` (the decoder LM). See README.md for the map.
"""

from minimost.config import AUDIO, SPECIAL, TEXT, ModelConfig, TrainConfig, preset, train_preset

__version__ = "0.1.0"
__all__ = ["AUDIO", "SPECIAL", "TEXT", "ModelConfig", "TrainConfig", "preset", "train_preset", "__version__"]
