"""Neural networks: the OxygenREC generator (encoder-decoder over semantic IDs), its blocks and IGR/Q2I."""

from .config import INSTRUCTION_POSITIONS, GeneratorConfig
from .generator import OxygenGenerator
from .igr import IGRAdapter, decorrelation_loss, igr_select, info_nce, q2i_loss, variance_loss
from .layers import DecoderCache

__all__ = [
    "INSTRUCTION_POSITIONS",
    "GeneratorConfig",
    "OxygenGenerator",
    "DecoderCache",
    "IGRAdapter",
    "info_nce",
    "variance_loss",
    "decorrelation_loss",
    "q2i_loss",
    "igr_select",
]
