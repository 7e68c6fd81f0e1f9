"""GeneratorPolicy (trie-constrained sampling/scoring of the SFT generator), prompts with a synthetic share,
and the reward glue (models/rl/generator_policy.py)."""

import numpy as np
import pytest
import torch

from models.nn import GeneratorConfig, OxygenGenerator
from models.rl import RLConfig, RewardModel, RewardModelConfig, policy_loss, train_policy
from models.rl.generator_policy import (
    GeneratorPolicy,
    GeneratorPolicyConfig,
    PromptConfig,
    PromptSet,
    action_labels,
    expected_reward,
    make_reward_fn,
    mapping_for_scenarios,
    reward_data_from_examples,
    user_context_features,
)
from models.semantic_ids.trie import SIDTrie

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = (4, 4, 3)
IDIM = 8  # instruction embedding size of the tiny generator


def catalog(n: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(v) for v in VOCAB], indexing="ij"), -1).reshape(-1, len(VOCAB))
    return grid[rng.choice(len(grid), n, replace=False)]


def tiny_model(seed: int = 0) -> OxygenGenerator:
    cfg = GeneratorConfig(vocab_sizes=VOCAB, n_scenarios=3, profile_vocab_size=20, n_profile_fields=2, d_model=16,
                          n_heads=2, enc_layers=1, dec_layers=1, max_short=4, max_long=6, igr_top_k=2, igr_dim=8,
                          igr_hidden=16, instruction_dim=IDIM, dropout=0.1, seed=seed)
    return OxygenGenerator(cfg)


def encoded_examples(codes: np.ndarray, n: int = 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    c = torch.as_tensor(codes)
    short_idx = torch.randint(0, len(codes), (n, 4), generator=g)
    long_idx = torch.randint(0, len(codes), (n, 6), generator=g)
    has = torch.arange(n) % 3 != 0
    return {
        "scenario": torch.arange(n) % 3,
        "profile": torch.randint(1, 20, (n, 2), generator=g),
        "instruction_emb": torch.randn(n, IDIM, generator=g) * has[:, None],
        "has_instruction": has,
        "short_sids": c[short_idx],
        "short_mask": torch.arange(4)[None, :] < torch.randint(0, 5, (n, 1), generator=g),
        "long_sids": c[long_idx],
        "long_mask": torch.ones(n, 6, dtype=torch.bool),
        "target_sids": c[torch.arange(n) % len(codes)],
        "target_item": torch.arange(n) % len(codes),
    }


@pytest.fixture
def setup():
    codes = catalog()
    trie = SIDTrie.from_codes(codes, VOCAB)
    policy = GeneratorPolicy(tiny_model(), trie)
    prompts = PromptSet(encoded_examples(codes), n_scenarios=3, config=PromptConfig(batch_size=6))
    return codes, trie, policy, prompts


def test_samples_are_catalog_items_only(setup):
    codes, trie, policy, prompts = setup
    batch = prompts.batch(torch.arange(6))
    tokens, logp, mask = policy.sample(batch, 16, torch.Generator().manual_seed(0))
    assert tokens.shape == (6, 16, 3) and logp.shape == (6, 16, 3) and torch.equal(mask, torch.ones_like(mask))
    items, valid = policy.items(tokens)
    assert valid.all()
    assert torch.equal(torch.as_tensor(codes)[items], tokens)
    assert torch.isfinite(logp).all() and (logp <= 0).all()
    # the unconstrained model would often leave the catalog (20 of 48 tuples exist): sampling really is masked
    assert len(torch.unique(items)) > 5


def test_constrained_log_probs_are_a_distribution_over_the_catalog(setup):
    codes, _, policy, prompts = setup
    batch = prompts.batch(torch.arange(3))
    everything = torch.as_tensor(codes).expand(3, -1, -1)
    seq_logp = policy.log_probs(batch, everything).sum(-1)
    torch.testing.assert_close(seq_logp.exp().sum(-1), torch.ones(3), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not catalog items"):
        missing = next(t for t in np.ndindex(*VOCAB) if not (codes == t).all(1).any())
        policy.log_probs(batch, torch.tensor(missing).expand(3, 1, -1))


def test_on_policy_ratio_is_exactly_one_and_incremental_scores_agree(setup):
    codes, trie, policy, prompts = setup
    batch = prompts.batch(torch.arange(6))
    tokens, logp_old, _ = policy.sample(batch, 8, torch.Generator().manual_seed(1))
    logp = policy.log_probs(batch, tokens)
    assert torch.equal(torch.exp(logp - logp_old), torch.ones_like(logp))
    incremental = GeneratorPolicy(policy.model, trie, GeneratorPolicyConfig(rescore=False))
    tokens2, logp_inc, _ = incremental.sample(batch, 8, torch.Generator().manual_seed(1))
    assert torch.equal(tokens2, tokens)  # same draws
    torch.testing.assert_close(logp_inc, logp.detach(), atol=1e-5, rtol=0)
    policy.train()  # dropout stays off even if someone switches the policy to train mode
    assert not policy.model.training
    assert torch.equal(policy.log_probs(batch, tokens), logp)


def test_policy_gradient_is_finite_and_reaches_the_generator(setup):
    _, _, policy, prompts = setup
    batch = prompts(0, torch.Generator().manual_seed(0))
    tokens, logp_old, mask = policy.sample(batch, 8, torch.Generator().manual_seed(2))
    adv = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))
    for algorithm in ("grpo", "gspo", "sagcpo"):
        policy.zero_grad()
        loss, _ = policy_loss(algorithm, policy.log_probs(batch, tokens), logp_old, logp_old, mask, adv,
                              RLConfig(algorithm=algorithm).loss_config())
        loss.backward()
        grads = [p.grad for p in policy.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0


def test_synthetic_share_is_respected_and_counterfactual(setup):
    codes, _, _, _ = setup
    enc = encoded_examples(codes, n=30)
    for share, expected in ((0.0, 0), (0.25, 2), (0.5, 4), (1.0, 8)):
        prompts = PromptSet(enc, n_scenarios=3, config=PromptConfig(batch_size=8, synthetic_share=share))
        batch = prompts(0, torch.Generator().manual_seed(4))
        syn = batch["synthetic"]
        assert int(syn.sum()) == expected
        rows = batch["row"]
        # real prompts are untouched rows
        for key in ("scenario", "instruction_emb", "profile", "short_sids"):
            assert torch.equal(batch[key][~syn], enc[key][rows[~syn]])
        if expected:
            # synthetic: same user context, another scenario, a real instruction from a donor row
            assert torch.equal(batch["profile"][syn], enc["profile"][rows[syn]])
            assert torch.equal(batch["long_sids"][syn], enc["long_sids"][rows[syn]])
            assert (batch["scenario"][syn] != enc["scenario"][rows[syn]]).all()
            assert batch["has_instruction"][syn].all()
            donors = enc["instruction_emb"][enc["has_instruction"]]
            assert all((donors == e).all(1).any() for e in batch["instruction_emb"][syn])
    with pytest.raises(ValueError, match="synthetic_share"):
        PromptConfig(synthetic_share=1.5)


def exact_reward(policy, batch, codes, reward_of_item):
    """E_pi[R] computed exactly by scoring every catalog item."""
    b = batch["scenario"].shape[0]
    with torch.no_grad():
        p = policy.log_probs(batch, torch.as_tensor(codes).expand(b, -1, -1)).sum(-1).exp()
    return float((p * reward_of_item).sum(-1).mean())


def test_a_few_rl_steps_raise_the_expected_reward(setup):
    codes, trie, policy, prompts = setup
    good = torch.as_tensor(codes[:, 0] == 1, dtype=torch.float32)  # toy reward: top-level code 1 is good

    def reward_fn(batch, tokens):
        items, valid = policy.items(tokens)
        return torch.where(valid, good[items.clamp(min=0)], torch.full(items.shape, -1.0))

    fixed = prompts.batch(torch.arange(12))
    before = exact_reward(policy, fixed, codes, good)
    history = train_policy(policy, reward_fn, prompts, RLConfig(algorithm="sagcpo", group_size=8, lr=3e-3,
                                                                 steps=12, beta=0.01, seed=0))
    after = exact_reward(policy, fixed, codes, good)
    assert history[-1]["stopped_reason"] == "steps_done"
    assert after > before + 0.15, (before, after)
    mc = expected_reward(policy, fixed, reward_fn, group_size=16, seed=0)
    assert mc["valid_share"] == 1.0 and abs(mc["mean"] - after) < 0.15


def test_reward_glue_scores_generated_items_with_the_ranking_model(setup):
    codes, trie, policy, prompts = setup
    enc = encoded_examples(codes, n=12)
    item_x = torch.randn(len(codes), 5, generator=torch.Generator().manual_seed(5))
    user_x = user_context_features(enc, item_x, trie)
    assert user_x.shape == (12, IDIM + 5)
    r = 1  # by hand: the mean of the masked short-history item features
    m = enc["short_mask"][r]
    hist = item_x[trie.lookup(enc["short_sids"][r])][m].mean(0) if m.any() else torch.zeros(5)
    torch.testing.assert_close(user_x[r, IDIM:], hist)

    actions = ["view", "click", "cart", "order"] * 3
    assert action_labels(["view", "click", "cart", "order"]).tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="unknown action"):
        action_labels(["click", "purchase"])
    data = reward_data_from_examples(enc, actions, item_x, trie, num_scenarios=3, num_negatives=2, seed=0)
    assert data.user_x.shape[1] == IDIM + 5 and len(data) > 12 and data.labels[:12].sum() > 0

    model = RewardModel(RewardModelConfig(user_dim=IDIM + 5, item_dim=5, num_scenarios=3))
    mapping = mapping_for_scenarios(["a", "b", "c"], {"b": {"order": 1.0}}, {"click": 1.0}, invalid_penalty=2.0)
    assert mapping.scenario_names == ("a", "b", "c") and mapping.scenario_weights["b"] == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="unknown scenario"):
        mapping_for_scenarios(["a"], {"zzz": {"click": 1.0}}, {"click": 1.0})
    reward_fn = make_reward_fn(model, mapping, item_x, trie)
    batch = prompts.batch(torch.arange(6))
    tokens, _, _ = policy.sample(batch, 4, torch.Generator().manual_seed(0))
    rewards = reward_fn(batch, tokens)
    assert rewards.shape == (6, 4) and torch.isfinite(rewards).all() and (rewards >= 0).all()
    bad = tokens.clone()
    bad[0, 0] = torch.tensor([next(t for t in np.ndindex(*VOCAB) if not (codes == t).all(1).any())])
    assert reward_fn(batch, bad)[0, 0] == -2.0  # invalid SID penalty
