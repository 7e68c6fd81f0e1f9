"""Asset manifests store paths inside the data directory relative to it, so the directory can move."""

import json
import shutil

from orchestration.io_managers import read_value, write_value


def test_a_moved_data_directory_still_resolves_its_manifests(tmp_path):
    root = (tmp_path / "data").resolve()
    (root / "sft_model" / "runs" / "k").mkdir(parents=True)
    checkpoint = root / "sft_model" / "runs" / "k" / "best.ckpt"
    checkpoint.write_bytes(b"weights")
    value = {"checkpoint": str(checkpoint), "outside": "/opt/elsewhere/x.pt", "name": "sasrec", "n": 3,
             "variants": {"a": {"weights": root / "sasrec_baseline" / "a.pt"}}, "paths": [str(root / "x")]}
    path = write_value(root / "sft_model" / "_", value, root)
    stored = json.loads(path.read_text())
    assert stored["checkpoint"] == "$DATA/sft_model/runs/k/best.ckpt"
    assert stored["variants"]["a"]["weights"] == "$DATA/sasrec_baseline/a.pt" and stored["paths"] == ["$DATA/x"]
    assert stored["outside"] == "/opt/elsewhere/x.pt" and stored["name"] == "sasrec"  # only paths inside root

    moved = (tmp_path / "mounted" / "elsewhere").resolve()
    moved.parent.mkdir()
    shutil.move(root, moved)
    back = read_value(moved / "sft_model" / "_", moved)
    assert back["checkpoint"] == str(moved / "sft_model" / "runs" / "k" / "best.ckpt")
    assert open(back["checkpoint"], "rb").read() == b"weights"
    assert back["variants"]["a"]["weights"] == str(moved / "sasrec_baseline" / "a.pt") and back["n"] == 3
