"""Lightning DDP, proven small: two CPU processes (gloo) train the generator on the same global batches as one
process, and end with the same weights and the same loss (the multi-GPU path is the same code with
``accelerator="gpu", devices=N, strategy="ddp"``).

Equality needs every loss term to be a mean over the batch's examples: cross-entropy is, the Q2I contrastive
loss (in-batch negatives) and the MoE balancing loss are not, so the model here has IGR off and a dense FFN,
and dropout off. DDP averages the two shards' gradients = the gradient of the global batch's mean loss.
"""

import dataclasses

import pytest
import torch

from models.features.example_encoder import ExampleEncoder
from models.lightning.train import SFTConfig, train_generator
from tests.unit.test_generator_data import SCENARIOS, make_catalog, make_frame
from tests.unit.test_generator_module import TINY

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = dataclasses.replace(TINY, use_igr=False, q2i_weight=0.0, dropout=0.0, ffn="dense")
GLOBAL_BATCH = 16


def fit(frame, table, out, devices: int):
    sft = SFTConfig(max_epochs=1, batch_size=GLOBAL_BATCH // devices, eval_batch_size=32, lr=3e-3, warmup_steps=2,
                    beam_width=10, patience=2, enable_progress_bar=False, seed=5, gradient_clip_val=None,
                    accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto")
    return train_generator(frame, table, SCENARIOS, MODEL, sft, out)


def test_two_process_ddp_matches_one_process_on_the_same_global_batches(tmp_path):
    table = make_catalog()
    frame = make_frame(table, n_users=32)  # 128 train examples: 8 steps of 16
    one = fit(frame, table, tmp_path / "one", devices=1)
    two = fit(frame, table, tmp_path / "two", devices=2)
    steps = [torch.load(r.last_checkpoint, weights_only=True)["global_step"] for r in (one, two)]
    assert steps == [8, 8]  # the same number of optimizer steps on 16-example global batches
    a, b = one.model.state_dict(), two.model.state_dict()
    worst = max(float(((a[k] - b[k]).abs().max() / (a[k].abs().max() + 1e-12))) for k in a)
    assert worst < 1e-3, worst  # float reduction order differs (two shard means vs one mean); Adam amplifies it
    enc = ExampleEncoder.fit(frame[frame.split == "train"], table, SCENARIOS)
    batch = enc.encode(frame[frame.split == "train"])
    with torch.no_grad():
        loss_one, loss_two = one.model(batch)["loss"].item(), two.model(batch)["loss"].item()
    assert abs(loss_one - loss_two) <= 1e-4 * abs(loss_one)
