"""One progress line per epoch, with the validation metrics of that epoch (models/lightning/progress.py)."""

import pytest

from models.lightning.progress import EpochProgress
from models.lightning.train import SFTConfig, train_generator
from tests.unit.test_generator_data import SCENARIOS, make_catalog, make_frame
from tests.unit.test_generator_module import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def test_each_epoch_logs_one_line_with_its_validation_metrics(tmp_path):
    table = make_catalog()
    lines = []
    sft = SFTConfig(max_epochs=2, batch_size=16, eval_batch_size=32, lr=3e-3, warmup_steps=2, beam_width=10,
                    patience=5, enable_progress_bar=False, seed=0)
    result = train_generator(make_frame(table, n_users=12), table, SCENARIOS, TINY, sft, tmp_path,
                             callbacks=[EpochProgress(lines.append, "sft")])
    assert len(lines) == 2 and lines[0].startswith("sft epoch 1/2") and lines[1].startswith("sft epoch 2/2")
    for line, row in zip(lines, result.history):
        assert f"val_hr10 {row['val_hr10']:.4g}" in line and "train_loss" in line
