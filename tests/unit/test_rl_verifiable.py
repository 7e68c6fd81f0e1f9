"""The verifiable reward (hit, SID-prefix credit, rank-aware penalty), its mix with the learned reward, and
beam-search groups, against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from models.decoding import constrained_beam_search
from models.rl.generator_policy import GeneratorPolicy, GeneratorPolicyConfig, PromptConfig, PromptSet
from models.rl.verifiable import MixedReward, RewardMix, verifiable_rewards
from models.semantic_ids.trie import SIDTrie

from .test_generator_policy import VOCAB, catalog, encoded_examples, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hit_prefix_credit_and_rank_penalty_by_hand():
    target = torch.tensor([[1, 2, 3]])
    tokens = torch.tensor([[[1, 2, 0], [1, 2, 3], [0, 2, 3]]])  # ranks 1, 2, 3 (best first)
    mix = RewardMix(prefix_credit=0.5, rank_penalty=0.6)
    got = verifiable_rewards(tokens, target, torch.tensor([True]), mix)[0]
    g = np.array([1 / math.log2(r + 1) for r in (1, 2, 3)])
    w = g / g.sum()
    want = [0.5 * 2 / 3 - 0.6 * w[0],  # two leading codes match, ranked first: the hardest negative
            1.0,                         # the logged item: no penalty
            0.0 - 0.6 * w[2]]            # no leading code matches (the later matches do not count)
    assert got.tolist() == pytest.approx(want)
    # a prompt without a logged item gets nothing
    assert verifiable_rewards(tokens, target, torch.tensor([False]), mix).abs().sum() == 0


def test_mixed_reward_weights_and_synthetic_prompts():
    tokens = torch.tensor([[[1, 2, 3], [0, 0, 0]], [[1, 2, 3], [0, 0, 0]]])
    prompts = {"target_sids": torch.tensor([[1, 2, 3], [1, 2, 3]]), "has_target": torch.tensor([True, True]),
               "synthetic": torch.tensor([False, True])}
    learned = lambda p, t: torch.full(t.shape[:2], 0.25)  # noqa: E731
    mix = RewardMix(learned_weight=2.0, verifiable_weight=1.0, prefix_credit=0.0, rank_penalty=0.0)
    r = MixedReward(learned, mix)(prompts, tokens)
    assert r.flatten().tolist() == pytest.approx([1.5, 0.5, 0.5, 0.5])  # the synthetic row has no logged item
    only_verifiable = MixedReward(None, RewardMix(learned_weight=0.0, rank_penalty=0.0))(prompts, tokens)
    assert only_verifiable.flatten().tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])
    # what the trainer copies into its step record: the learned part's mean and the share of real prompts
    # whose group holds the logged item (the synthetic row does not count)
    mixed = MixedReward(learned, mix)
    mixed(prompts, tokens)
    assert mixed.stats == {"reward_learned": 0.25, "group_hit_share": 1.0}
    mixed(prompts, tokens[:, [1, 1]])
    assert mixed.stats["group_hit_share"] == 0.0
    with pytest.raises(ValueError, match="needs a learned"):
        MixedReward(None, RewardMix(learned_weight=1.0))
    with pytest.raises(ValueError, match="both be 0"):
        RewardMix(learned_weight=0.0, verifiable_weight=0.0)


def test_sampled_groups_are_ordered_best_first_and_prompts_carry_targets():
    codes = catalog()
    trie = SIDTrie.from_codes(codes, VOCAB)
    policy = GeneratorPolicy(tiny_model(), trie)
    prompts = PromptSet(encoded_examples(codes), 3, PromptConfig(batch_size=6, synthetic_share=0.5))
    batch = prompts(0, torch.Generator().manual_seed(0))
    assert batch["target_sids"].shape == (6, 3) and batch["has_target"].all()
    tokens, logp, _ = policy.sample(batch, 5, torch.Generator().manual_seed(1))
    seq = logp.sum(-1)
    assert (seq[:, :-1] >= seq[:, 1:]).all()


def test_beam_groups_are_the_beam_search_top_items_scored_by_the_policy():
    codes = catalog()
    trie = SIDTrie.from_codes(codes, VOCAB)
    model = tiny_model()
    policy = GeneratorPolicy(model, trie, GeneratorPolicyConfig(group_sampling="beam"), item_codes=torch.as_tensor(codes))
    batch = {k: v[:4] for k, v in encoded_examples(codes).items()}
    tokens, logp, mask = policy.sample(batch, 5, torch.Generator().manual_seed(0))
    items, _ = constrained_beam_search(model, batch, trie, 5, 5)
    got = trie.lookup(tokens.reshape(-1, 3)).view(4, 5)
    assert torch.equal(got.sort(1).values, items.sort(1).values)  # the beam's items ...
    seq = logp.sum(-1)
    assert (seq[:, :-1] >= seq[:, 1:]).all()  # ... ordered by the policy's (trie-renormalised) log-prob
    assert torch.allclose(policy.log_probs(batch, tokens), logp)  # on-policy ratio 1
    with pytest.raises(ValueError, match="item_codes"):
        GeneratorPolicy(model, trie, GeneratorPolicyConfig(group_sampling="beam"))


def _rl_run(group: str, seed: int = 0):
    from models.rl import RLConfig, train_policy

    codes = catalog()
    trie = SIDTrie.from_codes(codes, VOCAB)
    policy = GeneratorPolicy(tiny_model(), trie, GeneratorPolicyConfig(group_sampling=group), item_codes=torch.as_tensor(codes))
    examples = encoded_examples(codes)
    prompts = PromptSet(examples, 3, PromptConfig(batch_size=8, synthetic_share=0.0))
    reward = MixedReward(None, RewardMix(learned_weight=0.0, prefix_credit=0.3, rank_penalty=0.5))
    history = train_policy(policy, reward, prompts, RLConfig(algorithm="sagcpo", group_size=6, lr=3e-3, steps=15,
                                                               beta=0.0, seed=seed))
    return policy, history, examples


def _target_logp(policy, examples) -> float:
    batch = {k: v for k, v in examples.items() if k not in ("target_sids", "target_item")}
    return float(policy.log_probs(batch, examples["target_sids"][:, None, :]).sum(-1).mean())


@pytest.mark.parametrize("group", ["sample", "beam"])
def test_the_verifiable_reward_raises_the_logged_items_probability(group):
    before = _target_logp(GeneratorPolicy(tiny_model(), SIDTrie.from_codes(catalog(), VOCAB)), encoded_examples(catalog()))
    policy, history, examples = _rl_run(group)
    assert history[-1]["stopped_reason"] == "steps_done"
    assert all(0.0 <= h["group_hit_share"] <= 1.0 for h in history)  # the reward's stats reach the history
    assert _target_logp(policy, examples) > before + 0.1


def test_same_seed_same_rl_result():
    a, history_a, _ = _rl_run("sample", seed=3)
    b, history_b, _ = _rl_run("sample", seed=3)
    assert history_a == history_b
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    _, history_c, _ = _rl_run("sample", seed=4)
    assert history_c != history_a


@pytest.mark.parametrize("group", ["sample", "beam"])
def test_target_in_group_puts_the_logged_item_in_every_real_prompts_group(group):
    codes = catalog()
    trie = SIDTrie.from_codes(codes, VOCAB)
    model = tiny_model()
    prompts = PromptSet(encoded_examples(codes), 3, PromptConfig(batch_size=8, synthetic_share=0.5))
    batch = prompts(0, torch.Generator().manual_seed(0))
    policy = GeneratorPolicy(model, trie, GeneratorPolicyConfig(group_sampling=group, target_in_group=True),
                             item_codes=torch.as_tensor(codes))
    plain = GeneratorPolicy(model, trie, GeneratorPolicyConfig(group_sampling=group), item_codes=torch.as_tensor(codes))
    tokens, logp, _ = policy.sample(batch, 2, torch.Generator().manual_seed(1))
    drawn, _, _ = plain.sample(batch, 2, torch.Generator().manual_seed(1))
    has = (tokens == batch["target_sids"][:, None]).all(-1).any(-1)
    real = ~batch["synthetic"].bool()
    assert bool(real.any()) and bool(has[real].all())
    drawn_has = (drawn == batch["target_sids"][:, None]).all(-1).any(-1)
    assert not bool(drawn_has[real].all())  # some groups lacked it: the option did the work
    assert torch.equal(tokens[~real], drawn[~real])  # synthetic prompts keep the group they drew
    assert torch.allclose(policy.log_probs(batch, tokens), logp)  # the demonstration is scored, ratio 1
    assert (logp.sum(-1)[:, :-1] >= logp.sum(-1)[:, 1:]).all()
