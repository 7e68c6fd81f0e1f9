"""Lightning modules and data modules (training loops live here; the nn.Modules live in models.nn)."""

from models.lightning.sasrec_module import SASRecModule, evaluate_sasrec, train_sasrec
from models.lightning.sequence_data import SequenceDataModule

__all__ = ["SASRecModule", "SequenceDataModule", "evaluate_sasrec", "train_sasrec"]
