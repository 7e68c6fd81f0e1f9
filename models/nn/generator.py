"""OxygenREC generator: an encoder-decoder that emits an item's semantic ID (L+1 codes) autoregressively.

Batch dict (B users; L+1 = ``cfg.n_levels`` codes per item; padding entries may hold any value):

    scenario         Long[B]            scenario id in [0, n_scenarios)                 (scenario instruction Is)
    profile          Long[B, P]         profile token ids in [0, profile_vocab_size), 0 = padding, P <= n_profile_fields
    profile_mask     Bool[B, P]         optional, default ``profile != 0``
    instruction_emb  Float[B, 384]      reasoning-instruction text embedding            (reasoning instruction Ir)
    has_instruction  Bool[B]            optional (default all True); False -> learnable default instruction
    instruction_age  Float[B]           optional, read with ``instruction_age``: the instruction's age in days
                                        (-1 = none/unknown; models/nn/instruction_age.py buckets it)
    short_sids       Long[B, S, L+1]    short-term behaviour (most recent first), S <= max_short
    short_mask       Bool[B, S]         True = real item
    long_sids        Long[B, M, L+1]    long-term behaviour, M <= max_long
    long_mask        Bool[B, M]
    target_sids      Long[B, L+1]       training target (``forward`` only)

Item representation: e(item) = sum_l E[offset_l + c_l] (one shared table ``code_emb`` for all levels; the
same vectors are the encoder's item tokens, the IGR item input and the decoder's input tokens).

Encoder input (bidirectional, padding-masked), each token + a segment embedding:

    [profile_1..P (+ field emb)] [Is = E_scen(s)] [Ir = W_r r + b_r] [short_1..S (+ position emb)]
    [recent_1..R (+ per-slot recency emb)] [IGR top-K long]

with r = instruction_emb, or the learnable ``default_instruction`` (in the 384-d text space) where
has_instruction is False. short is the user's history in the request's scenario; recent is the R = n_recent
newest long items over all scenarios (the session so far, whatever page it happened on). IGR picks the K of the
remaining long items closest to the instruction query (models/nn/igr.py); with use_igr=False the K newest of
the remaining items are used.

Decoder input: instruction token INS = E_scen(s) + W_r r + b_r (+ E_age(bucket(age)) with ``instruction_age``;
bucket 0 where has_instruction is False), placed per ``instruction_position`` (see
config.INSTRUCTION_POSITIONS), then the codes c_0..c_{L-1} (E[offset_l + c_l]), plus decoder position
embeddings; causal self-attention, cross-attention to the encoder. Level l is predicted from position
n_prefix - 1 + l by its own head: logits_l = W_l LN(h) + b_l over [0, V_l).

Memory convention: ``encode`` returns memory [B, T+1, d] and memory_mask [B, T+1]; the last slot holds the
decoder's instruction token INS and is masked out of cross-attention (mask False). This keeps the
encoder -> decoder interface at two tensors (for export) while the decoder can still read INS.

Losses (``forward``):

    ce   = (1 / (L+1)) sum_l mean_b CE(logits_l[b], target[b, l])       (optional label smoothing)
    q2i  = L_Q2I(h_q, h_t) (igr.py), h_t = adapter item output of the target item; 0 if use_igr=False
    aux  = mean over MoE layers of the Switch load-balancing loss (layers.py); 0 for dense FFN
    loss = ce + q2i_weight * q2i + moe_aux_weight * aux
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GeneratorConfig
from .igr import IGRAdapter, igr_select, q2i_loss
from .instruction_age import N_AGE_BUCKETS, NO_AGE, age_bucket
from .layers import DecoderBlock, DecoderCache, EncoderBlock, MoEFeedForward, make_ffn

__all__ = ["OxygenGenerator", "SEGMENTS"]

SEGMENTS = {"profile": 0, "scenario": 1, "instruction": 2, "short": 3, "long": 4}
_HASH_P = 2**31 - 1
_HASH_A = torch.tensor([1_103_515_245, 69_069])
_HASH_B = torch.tensor([12_345, 1_013_904_223])


class OxygenGenerator(nn.Module):
    def __init__(self, cfg: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        d, L1 = cfg.d_model, cfg.n_levels
        with torch.random.fork_rng(devices=[]):  # initialisation depends on cfg.seed only
            torch.manual_seed(cfg.seed)
            self.register_buffer("code_offsets", torch.tensor([0, *cfg.vocab_sizes[:-1]]).cumsum(0), persistent=False)
            self.code_emb = nn.Embedding(sum(cfg.vocab_sizes), d)
            self.profile_emb = nn.Embedding(cfg.profile_vocab_size, d)
            self.field_emb = nn.Embedding(cfg.n_profile_fields, d)
            self.scenario_emb = nn.Embedding(cfg.n_scenarios, d)
            self.instr_proj = nn.Linear(cfg.instruction_dim, d)
            self.default_instruction = nn.Parameter(torch.randn(cfg.instruction_dim) / cfg.instruction_dim**0.5)
            self.short_pos = nn.Embedding(cfg.max_short, d)
            self.recent_pos = nn.Embedding(cfg.n_recent, d) if cfg.n_recent else None
            self.segment_emb = nn.Embedding(len(SEGMENTS), d)
            self.enc_drop = nn.Dropout(cfg.dropout)
            hidden = cfg.ffn_mult * d

            def ffn() -> nn.Module:
                return make_ffn(cfg.ffn, d, hidden, cfg.n_experts, cfg.moe_top_k, cfg.dropout)

            self.enc_blocks = nn.ModuleList(EncoderBlock(d, cfg.n_heads, ffn(), cfg.dropout) for _ in range(cfg.enc_layers))
            self.enc_ln = nn.LayerNorm(d)
            self.bos = nn.Parameter(torch.zeros(d))
            self.dec_pos = nn.Embedding(cfg.n_prefix + L1, d)
            self.dec_drop = nn.Dropout(cfg.dropout)
            self.dec_blocks = nn.ModuleList(DecoderBlock(d, cfg.n_heads, ffn(), cfg.dropout) for _ in range(cfg.dec_layers))
            self.dec_ln = nn.LayerNorm(d)
            self.heads = nn.ModuleList(nn.Linear(d, v) for v in cfg.vocab_sizes)
            causal = cfg.history_encoder == "causal"
            self.igr = IGRAdapter(d, cfg.igr_dim, cfg.igr_hidden) if cfg.use_igr and not causal else None
            # causal history encoder: right-aligned positions (the newest item always at max_long - 1), and a
            # LayerNorm for the context tokens that enter the memory without passing the causal encoder
            self.seq_pos = nn.Embedding(cfg.max_long, d) if causal else None
            self.ctx_ln = nn.LayerNorm(d) if causal else None
            # an always-valid memory slot: a request without profile and history still has a slot to attend to
            self.null_memory = nn.Parameter(torch.zeros(d)) if causal else None
            self.item_hash = nn.Embedding(cfg.item_buckets, d) if cfg.item_buckets else None
            self.age_emb = nn.Embedding(N_AGE_BUCKETS, d) if cfg.instruction_age else None
            self.apply(self._init_weights)
            self.repeat_bias = nn.Parameter(torch.zeros(cfg.n_scenarios, L1)) if cfg.history_bias else None
            nn.init.normal_(self.bos, std=0.02)
            if self.null_memory is not None:
                nn.init.normal_(self.null_memory, std=0.02)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    # ------------------------------------------------------------------ inputs
    def item_repr(self, sids: torch.Tensor) -> torch.Tensor:
        """Float[..., d] = sum over levels of the code embeddings of ``sids`` Long[..., L+1]."""
        return self.code_emb(sids + self.code_offsets).sum(-2)

    def item_buckets(self, sids: torch.Tensor) -> torch.Tensor:
        """Long[..., 2]: two hash buckets in [0, item_buckets) of each full SID tuple ``sids`` Long[..., L+1].

        key = mixed-radix number of the tuple (unique per tuple), bucket_i = ((a_i key + b_i) mod p) mod n,
        p = 2^31 - 1 (all products stay below 2^63 for tuples with prod(vocab) < 2^31)."""
        vs = self.cfg.vocab_sizes
        radix = torch.tensor([math.prod(vs[l + 1:]) for l in range(len(vs))], dtype=torch.long, device=sids.device)
        key = (sids * radix).sum(-1, keepdim=True) % _HASH_P
        return ((key * _HASH_A.to(sids.device) + _HASH_B.to(sids.device)) % _HASH_P) % self.cfg.item_buckets

    def history_repr(self, sids: torch.Tensor) -> torch.Tensor:
        """Encoder token of history items: ``item_repr`` plus the hashed item-level embedding (if configured)."""
        x = self.item_repr(sids)
        if self.item_hash is not None:
            x = x + self.item_hash(self.item_buckets(sids)).sum(-2)
        return x

    def _check_sids(self, name: str, sids: torch.Tensor, mask: torch.Tensor | None, lead: tuple[int, ...]) -> torch.Tensor:
        L1 = self.cfg.n_levels
        if sids.dim() != len(lead) + 1 or tuple(sids.shape[:-1])[: len(lead)] != lead or sids.shape[-1] != L1:
            raise ValueError(f"batch[{name!r}] must have shape {(*lead, L1)}, got {tuple(sids.shape)}")
        sids = sids.long()
        if mask is not None:
            sids = torch.where(mask[..., None], sids, 0)  # padding may hold anything (e.g. -1)
        vocab = torch.tensor(self.cfg.vocab_sizes, device=sids.device)
        bad = (sids < 0) | (sids >= vocab)
        if bool(bad.any()):
            where = [int(i) for i in bad.nonzero()[0]]
            raise ValueError(f"batch[{name!r}]{where} = {int(sids[tuple(where)])} is outside the level's vocab {self.cfg.vocab_sizes}")
        return sids

    def _history(self, batch: dict, key: str, limit: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        mkey = key.replace("_sids", "_mask")
        if key not in batch:
            dev = self.code_offsets.device
            return torch.zeros(b, 0, self.cfg.n_levels, dtype=torch.long, device=dev), torch.zeros(b, 0, dtype=torch.bool, device=dev)
        sids = batch[key]
        if sids.dim() != 3 or sids.shape[0] != b:
            raise ValueError(f"batch[{key!r}] must be [B={b}, n, {self.cfg.n_levels}], got {tuple(sids.shape)}")
        if sids.shape[1] > limit:
            raise ValueError(f"batch[{key!r}] has {sids.shape[1]} items, more than the configured maximum {limit}")
        mask = batch.get(mkey)
        if mask is None:
            raise ValueError(f"batch has {key!r} but no {mkey!r}")
        if tuple(mask.shape) != tuple(sids.shape[:2]):
            raise ValueError(f"batch[{mkey!r}] must have shape {tuple(sids.shape[:2])}, got {tuple(mask.shape)}")
        mask = mask.bool()
        return self._check_sids(key, sids, mask, tuple(sids.shape[:2])), mask

    def instruction_parts(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(Is, Ir) in model space: scenario embedding [B, d] and projected reasoning instruction [B, d]."""
        cfg = self.cfg
        if "scenario" not in batch:
            raise ValueError("batch needs 'scenario' (Long[B])")
        scen = batch["scenario"].long()
        if scen.dim() != 1:
            raise ValueError(f"batch['scenario'] must be Long[B], got shape {tuple(scen.shape)}")
        if bool(((scen < 0) | (scen >= cfg.n_scenarios)).any()):
            raise ValueError(f"batch['scenario'] values must be in [0, {cfg.n_scenarios}), got {scen.tolist()[:8]}...")
        b = scen.shape[0]
        default = self.default_instruction.expand(b, -1)
        r = batch.get("instruction_emb")
        if r is None:
            r = default
        else:
            if tuple(r.shape) != (b, cfg.instruction_dim):
                raise ValueError(f"batch['instruction_emb'] must be [{b}, {cfg.instruction_dim}], got {tuple(r.shape)}")
            has = batch.get("has_instruction")
            if has is not None:
                if tuple(has.shape) != (b,):
                    raise ValueError(f"batch['has_instruction'] must be Bool[{b}], got {tuple(has.shape)}")
                r = torch.where(has.bool()[:, None], r.to(default.dtype), default)
        return self.scenario_emb(scen), self.instr_proj(r.to(default.dtype))

    def instruction_token(self, batch: dict, scen: torch.Tensor, reason: torch.Tensor) -> torch.Tensor:
        """The decoder's instruction token INS [B, d] = Is + Ir (+ the age embedding with ``instruction_age``)."""
        ins = scen + reason
        if self.age_emb is None:
            return ins
        b = scen.shape[0]
        age = batch.get("instruction_age")
        if age is None:
            age = torch.full((b,), NO_AGE, device=scen.device)
        elif tuple(age.shape) != (b,):
            raise ValueError(f"batch['instruction_age'] must be Float[{b}], got {tuple(age.shape)}")
        has = batch.get("has_instruction")
        if batch.get("instruction_emb") is None:  # instruction_parts used the default instruction
            has = torch.zeros(b, dtype=torch.bool, device=scen.device)
        return ins + self.age_emb(age_bucket(age, has))

    # ------------------------------------------------------------------ encoder
    def _profile_tokens(self, batch: dict, b: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(profile tokens Float[B, P, d] incl. field and segment embeddings, mask Bool[B, P]) or None."""
        cfg = self.cfg
        profile = batch.get("profile")
        if profile is None or profile.shape[-1] == 0:
            return None
        if profile.dim() != 2 or profile.shape[0] != b or profile.shape[1] > cfg.n_profile_fields:
            raise ValueError(f"batch['profile'] must be [B={b}, P<={cfg.n_profile_fields}], got {tuple(profile.shape)}")
        pmask = batch.get("profile_mask")
        pmask = (profile != 0) if pmask is None else pmask.bool()
        profile = torch.where(pmask, profile.long(), 0)
        if bool(((profile < 0) | (profile >= cfg.profile_vocab_size)).any()):
            raise ValueError(f"batch['profile'] ids must be in [0, {cfg.profile_vocab_size})")
        p = profile.shape[1]
        tokens = self.profile_emb(profile) + self.field_emb.weight[:p] + self.segment_emb.weight[SEGMENTS["profile"]]
        return tokens, pmask

    def _encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], dict]:
        cfg = self.cfg
        if cfg.history_encoder == "causal":
            return self._encode_causal(batch)
        scen, reason = self.instruction_parts(batch)
        b, dev = scen.shape[0], scen.device
        seg = self.segment_emb.weight
        tokens, masks = [], []

        prof = self._profile_tokens(batch, b)
        if prof is not None:
            tokens.append(prof[0])
            masks.append(prof[1])

        tokens += [(scen + seg[SEGMENTS["scenario"]])[:, None], (reason + seg[SEGMENTS["instruction"]])[:, None]]
        masks += [torch.ones(b, 2, dtype=torch.bool, device=dev)]

        short, smask = self._history(batch, "short_sids", cfg.max_short, b)
        if short.shape[1]:
            tokens.append(self.history_repr(short) + self.short_pos.weight[: short.shape[1]] + seg[SEGMENTS["short"]])
            masks.append(smask)

        info: dict = {}
        long, lmask = self._history(batch, "long_sids", cfg.max_long, b)
        if long.shape[1]:
            long_e = self.history_repr(long)  # [B, M, d], newest first
            n_recent = min(cfg.n_recent, long.shape[1])
            if n_recent:
                tokens.append(long_e[:, :n_recent] + self.recent_pos.weight[:n_recent])  # per-slot emb = segment
                masks.append(lmask[:, :n_recent])
                # retrieval picks from the older items only: the recent ones are already in the encoder
                lmask = lmask & (torch.arange(long.shape[1], device=dev) >= n_recent)
            if self.igr is not None:
                q = F.normalize(self.igr.query(scen, reason), dim=-1)
                z = F.normalize(self.igr.item(long_e), dim=-1)
                idx, sel_mask, _ = igr_select(q, z, lmask, cfg.igr_top_k)
            else:  # the K newest real candidates (ablation "w/o IGR")
                pos = torch.arange(long.shape[1], device=dev, dtype=torch.float32)
                order = torch.where(lmask, -pos, -pos - long.shape[1])  # padding last, in a distinct order
                idx = order.topk(min(cfg.igr_top_k, long.shape[1]), dim=-1).indices
                sel_mask = lmask.gather(1, idx)
            sel = long_e.gather(1, idx[..., None].expand(-1, -1, long_e.shape[-1]))
            tokens.append(sel + seg[SEGMENTS["long"]])
            masks.append(sel_mask)
            info.update(igr_index=idx, igr_mask=sel_mask)

        x = self.enc_drop(torch.cat(tokens, dim=1))
        key_mask = torch.cat(masks, dim=1)
        auxes = []
        for blk in self.enc_blocks:
            x, aux = blk(x, key_mask)
            auxes.append(aux)
        x = self.enc_ln(x)
        instr = self.instruction_token(batch, scen, reason)[:, None]  # decoder token INS, in the last memory slot
        memory = torch.cat([x, instr], dim=1)
        memory_mask = torch.cat([key_mask, torch.zeros(b, 1, dtype=torch.bool, device=dev)], dim=1)
        info.update(scenario_emb=scen, reasoning_emb=reason)
        return memory, memory_mask, auxes, info

    # ------------------------------------------------------------------ repeat awareness
    def history_hits(self, hist: torch.Tensor, hmask: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Bool[R, V_l], l = prefix.shape[1]: code v continues ``prefix`` Long[R, l] into an item of the row's history
        ``hist`` Long[R, M, L+1] (mask Bool[R, M])."""
        level = prefix.shape[1]
        match = hmask & (hist[:, :, :level] == prefix[:, None, :]).all(-1)  # [R, M]
        hot = torch.zeros(prefix.shape[0], self.cfg.vocab_sizes[level], device=prefix.device)
        hot.scatter_add_(1, hist[:, :, level], match.to(hot.dtype))
        return hot > 0

    def repeat_logit_bias(self, scenario: torch.Tensor, hist: torch.Tensor, hmask: torch.Tensor,
                          prefix: torch.Tensor) -> torch.Tensor:
        """Float[R, V_l]: b[scenario_r, l] where code v continues row r's prefix into one of its history items, else 0
        (``history_bias``); ``scenario`` Long[R]."""
        hits = self.history_hits(hist, hmask, prefix)
        return hits.to(self.repeat_bias.dtype) * self.repeat_bias[scenario, prefix.shape[1]][:, None]

    def history_for_bias(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scenario Long[B], long history Long[B, M, L+1], mask Bool[B, M]) of a request batch, for the repeat bias."""
        b = batch["scenario"].shape[0]
        long, lmask = self._history(batch, "long_sids", self.cfg.max_long, b)
        return batch["scenario"].long(), long, lmask

    # ------------------------------------------------------------------ causal history encoder
    def _causal_states(self, items: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Item states Float[B, T, d] of a right-aligned, oldest-first history ``items`` Long[B, T, L+1] (mask
        Bool[B, T], real items at the right end): state j attends to the real items <= j only (padding queries
        attend to themselves, so no attention row is empty). Position of slot j = max_long - T + j."""
        t, dev = items.shape[1], items.device
        if t > self.cfg.max_long:
            raise ValueError(f"history has {t} slots, more than max_long={self.cfg.max_long}")
        pos = self.seq_pos.weight[self.cfg.max_long - t :]
        x = self.enc_drop(self.history_repr(items) + pos + self.segment_emb.weight[SEGMENTS["long"]])
        ar = torch.arange(t, device=dev)
        allowed = (ar[None, :] <= ar[:, None])[None] & mask[:, None, :]  # [B, T(query), T(key)]
        allowed = (allowed | (ar[None, :] == ar[:, None])[None])[:, None]  # (no EyeLike: ONNX has none for bool)
        auxes = []
        for blk in self.enc_blocks:
            x, aux = blk(x, mask, allowed)
            auxes.append(aux)
        return self.enc_ln(x), auxes

    def _context_memory(self, batch: dict, b: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory slots of the causal encoder's context: [null slot (always valid), profile tokens], LayerNormed."""
        null = self.null_memory.expand(b, 1, -1)
        ones = torch.ones(b, 1, dtype=torch.bool, device=dev)
        prof = self._profile_tokens(batch, b)
        if prof is None:
            return self.ctx_ln(null), ones
        return self.ctx_ln(self.enc_drop(torch.cat([null, prof[0]], 1))), torch.cat([ones, prof[1]], 1)

    def _encode_causal(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], dict]:
        """memory = [profile tokens, causal states of the newest max_long long items (oldest first), INS]."""
        scen, reason = self.instruction_parts(batch)
        b, dev = scen.shape[0], scen.device
        ctx, ctx_mask = self._context_memory(batch, b, dev)
        long, lmask = self._history(batch, "long_sids", self.cfg.max_long, b)  # newest first, real items first
        states, auxes = self._causal_states(long.flip(1), lmask.flip(1))
        instr = self.instruction_token(batch, scen, reason)[:, None]
        memory = torch.cat([ctx, states, instr], dim=1)
        memory_mask = torch.cat([ctx_mask, lmask.flip(1), torch.zeros(b, 1, dtype=torch.bool, device=dev)], dim=1)
        return memory, memory_mask, auxes, {"scenario_emb": scen, "reasoning_emb": reason}

    def forward_sequence(self, batch: dict) -> dict:
        """Teacher-forced loss of every position of right-aligned windows of users' sequences (causal encoder only).

        Batch (B windows of W = T + 1 slots, oldest first, real slots at the right end):

            seq_sids             Long[B, W, L+1]   the window's items
            seq_mask             Bool[B, W]        real slots
            seq_loss_mask        Bool[B, W]        slots whose item is a training target (a subset of seq_mask)
            seq_scenario         Long[B, W]        per slot: the scenario of the request that led to that item
            seq_instruction_emb  Float[B, W, D_r]  per slot: its reasoning instruction (has_instruction False ->
            seq_has_instruction  Bool[B, W]          the learnable default)
            seq_instruction_age  Float[B, W]       optional: per slot, its instruction's age in days (-1 = none)
            profile (+ profile_mask)               Long[B, P]: the user's profile

        Row r predicts item r from memory = [profile, causal states of items 0..r-1] and the decoder instruction
        token of slot r. The states of items 0..r-1 are those of the full window (causal: item j never sees j' > j),
        so row W - 1 is exactly ``encode`` of a request whose history is items 0..W-2 followed by decoding.

            ce = (1 / (L+1)) sum_l mean_{rows with loss} CE(logits_l, code_l)
        """
        cfg = self.cfg
        if cfg.history_encoder != "causal":
            raise ValueError("forward_sequence needs history_encoder='causal'")
        for key in ("seq_sids", "seq_mask", "seq_loss_mask", "seq_scenario"):
            if key not in batch:
                raise ValueError(f"forward_sequence needs batch[{key!r}]")
        seq, smask, lmask = batch["seq_sids"], batch["seq_mask"].bool(), batch["seq_loss_mask"].bool()
        if seq.dim() != 3 or seq.shape[1] < 2:
            raise ValueError(f"batch['seq_sids'] must be [B, W>=2, {cfg.n_levels}], got {tuple(seq.shape)}")
        b, w = seq.shape[:2]
        for key in ("seq_mask", "seq_loss_mask", "seq_scenario"):
            if tuple(batch[key].shape) != (b, w):
                raise ValueError(f"batch[{key!r}] must have shape {(b, w)}, got {tuple(batch[key].shape)}")
        if bool((lmask & ~smask).any()):
            raise ValueError("batch['seq_loss_mask'] marks slots that batch['seq_mask'] says are padding")
        seq = self._check_sids("seq_sids", seq, smask, (b, w))
        dev = seq.device
        # per-slot instruction token INS = Is + Ir (+ age)
        rows = {"scenario": batch["seq_scenario"].reshape(-1)}
        if "seq_instruction_emb" in batch:
            rows["instruction_emb"] = batch["seq_instruction_emb"].reshape(b * w, -1)
        if "seq_has_instruction" in batch:
            rows["has_instruction"] = batch["seq_has_instruction"].reshape(-1)
        if "seq_instruction_age" in batch:
            rows["instruction_age"] = batch["seq_instruction_age"].reshape(-1)
        scen, reason = self.instruction_parts(rows)
        instr = self.instruction_token(rows, scen, reason)  # [B * W, d]
        ctx, ctx_mask = self._context_memory(batch, b, dev)
        states, enc_aux = self._causal_states(seq[:, :-1], smask[:, :-1])  # items 0..W-2 are memory
        memory = torch.cat([ctx, states], dim=1)  # [B, P + W - 1, d]
        ar = torch.arange(w, device=dev)
        see_item = (ar[None, :-1] < ar[:, None])[None] & smask[:, None, :-1]  # [B, W(row), W-1(item)]
        cross = torch.cat([ctx_mask[:, None, :].expand(b, w, -1), see_item], dim=2)  # [B, W, S]
        n_dec = cfg.n_prefix + cfg.n_levels - 1
        cross = cross.repeat_interleave(n_dec, dim=1)[:, None]  # [B, 1, W * n_dec, S]: row-major like grouped queries
        # only rows from the first one with a loss in any window are decoded (loss rows are a suffix of each
        # window: batches of windows with equally many targets waste no decoder work)
        r0 = int(lmask.any(0).long().argmax()) if bool(lmask.any()) else w - 1
        cross = cross[:, :, r0 * n_dec :]
        ks, vs = zip(*(blk.cross_kv(memory) for blk in self.dec_blocks))
        instr = instr.view(b, w, -1)[:, r0:].reshape(b * (w - r0), -1)
        cache = DecoderCache(list(ks), list(vs), cross, instr)
        flat = seq[:, r0:].reshape(b * (w - r0), -1)
        h, _, _, dec_aux = self.run_decoder(self._decoder_inputs(instr, flat[:, : cfg.n_levels - 1]), cache)
        sel = lmask[:, r0:].reshape(-1)
        target = flat[sel]
        first = cfg.n_prefix - 1
        hs = h[sel]
        logits = [head(hs[:, first + l]) for l, head in enumerate(self.heads)]
        if self.repeat_bias is not None:  # row (b, r)'s history = window items 0..r-1
            rows = torch.arange(b, device=dev)[:, None].expand(b, w - r0).reshape(-1)[sel]
            pos = torch.arange(r0, w, device=dev)[None, :].expand(b, w - r0).reshape(-1)[sel]
            hist = seq[rows, :-1]
            hmask = smask[rows, :-1] & (torch.arange(w - 1, device=dev)[None, :] < pos[:, None])
            scen_rows = batch["seq_scenario"][:, r0:].reshape(-1)[sel].long()
            logits = [lg + self.repeat_logit_bias(scen_rows, hist, hmask, target[:, :l]) for l, lg in enumerate(logits)]
        nll, ce = self._token_loss(logits, target)
        zero = ce.new_zeros(())
        aux = self._moe_aux(enc_aux + dec_aux, zero)
        return {"loss": ce + cfg.moe_aux_weight * aux, "ce_loss": ce, "q2i_loss": zero, "q2i_nce": zero,
                "q2i_var": zero, "q2i_decor": zero, "aux_loss": aux, "logits": logits, "nll": nll.sum(1),
                "n_targets": int(sel.sum())}

    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory Float[B, T+1, d], memory_mask Bool[B, T+1]); the last slot is the decoder instruction token."""
        memory, memory_mask, _, _ = self._encode(batch)
        return memory, memory_mask

    # ------------------------------------------------------------------ decoder
    def init_cache(self, memory: torch.Tensor, memory_mask: torch.Tensor) -> DecoderCache:
        """Cross-attention K/V of every decoder layer, computed once per request."""
        ks, vs = zip(*(blk.cross_kv(memory) for blk in self.dec_blocks))
        return DecoderCache(list(ks), list(vs), memory_mask[:, None, None, :], memory[:, -1])

    def prefix_inputs(self, instruction: torch.Tensor) -> torch.Tensor:
        """The decoder's prefix positions [B', n_prefix, d] (BOS and INS as ``instruction_position`` places them) for
        instruction rows [B', d]; they depend on no code, so serving runs them once per request."""
        bos = self.bos.expand(instruction.shape[0], 1, -1)
        ins = instruction[:, None]
        prefix = {
            "none": [bos],
            "replace_bos": [ins],
            "add_to_bos": [bos + ins],
            "left_of_bos": [ins, bos],
            "right_of_bos": [bos, ins],
        }[self.cfg.instruction_position]
        return torch.cat(prefix, dim=1) + self.dec_pos.weight[: self.cfg.n_prefix]

    def code_inputs(self, codes: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Decoder inputs [B', n, d] of codes [B', n] at decoder positions Long[n] (>= n_prefix; the level of a
        position is position - n_prefix). Positions are a tensor so that the exported step graph can take its
        position from the length of the cache it is given."""
        levels = positions - self.cfg.n_prefix
        return self.code_emb(codes + self.code_offsets.index_select(0, levels)) + self.dec_pos.weight.index_select(0, positions)

    def _decoder_inputs(self, instruction: torch.Tensor, codes: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Decoder input positions start .. n_prefix + t - 1, [B', n_prefix + t - start, d], for instruction rows
        [B', d] and codes [B', t] (levels 0..t-1)."""
        n_prefix, t = self.cfg.n_prefix, codes.shape[1]
        first = max(start, n_prefix)  # the first code position to build
        x = self.code_inputs(codes[:, first - n_prefix:], torch.arange(first, n_prefix + t, device=codes.device))
        if start < n_prefix:
            x = torch.cat([self.prefix_inputs(instruction)[:, start:], x], dim=1)
        return x

    def level_logits(self, h: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Logits Float[R, V*] (V* = max vocab size, -inf beyond the level's vocabulary) of level ``level`` Long[1]
        from final decoder states h [R, d]: all heads padded into one table, so a traced graph can pick the head
        by a tensor (the exported step graph's level comes from its cache length)."""
        vmax = max(self.cfg.vocab_sizes)
        w = torch.stack([F.pad(head.weight, (0, 0, 0, vmax - head.out_features)) for head in self.heads])
        b = torch.stack([F.pad(head.bias, (0, vmax - head.out_features), value=float("-inf")) for head in self.heads])
        return h @ w.index_select(0, level)[0].T + b.index_select(0, level)[0]

    def run_decoder(self, x: torch.Tensor, cache: DecoderCache) -> tuple[torch.Tensor, list, list, list]:
        """(final states LN(x) [B', T_new, d], self K and V per layer incl. the new positions, MoE aux losses) of the
        new decoder positions x [B', T_new, d] given ``cache`` (the one decoder of training, search and export)."""
        x = self.dec_drop(x)
        new_k, new_v, auxes = [], [], []
        for i, blk in enumerate(self.dec_blocks):
            past = None if cache.self_k is None else (cache.self_k[i], cache.self_v[i])
            x, (k, v), aux = blk(x, cache.cross_k[i], cache.cross_v[i], cache.cross_mask, past)
            new_k.append(k)
            new_v.append(v)
            auxes.append(aux)
        return self.dec_ln(x), new_k, new_v, auxes

    def _groups(self, memory: torch.Tensor, rows: int) -> int:
        b = memory.shape[0]
        if rows % b:
            raise ValueError(f"{rows} decoder rows is not a multiple of {b} encoder rows")
        return rows // b

    def decoder_logits(
        self, memory: torch.Tensor, memory_mask: torch.Tensor, sids: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Teacher-forced logits of all levels for ``sids`` [B', L+1] (B' = G * B rows, row r -> encoder row r // G).
        Returns ([Float[B', V_l] for l in 0..L], MoE aux losses)."""
        cfg = self.cfg
        g = self._groups(memory, sids.shape[0])
        cache = self.init_cache(memory, memory_mask)
        instr = cache.instruction.repeat_interleave(g, 0) if g > 1 else cache.instruction
        h, _, _, auxes = self.run_decoder(self._decoder_inputs(instr, sids[:, : cfg.n_levels - 1]), cache)
        first = cfg.n_prefix - 1
        return [head(h[:, first + l]) for l, head in enumerate(self.heads)], auxes

    def decode_step(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        prefix_tokens: torch.Tensor,
        cache: DecoderCache | None = None,
    ) -> tuple[torch.Tensor, DecoderCache]:
        """Logits Float[B', V_t] of level t = prefix_tokens.shape[1] and the updated cache.

        ``prefix_tokens`` Long[B', t] are the codes chosen so far (B' = G * B rows; row r uses encoder row r // G).
        With ``cache=None`` the cross K/V are computed and the whole prefix is run; otherwise only the positions
        the cache has not seen yet (normally one). Reorder the cache with ``cache.reorder(index)`` between steps.
        """
        cfg = self.cfg
        bp, t = prefix_tokens.shape
        if t >= cfg.n_levels:
            raise ValueError(f"prefix_tokens has {t} codes; an item has only {cfg.n_levels} levels")
        g = self._groups(memory, bp)
        if cache is None:
            cache = self.init_cache(memory, memory_mask)
        if cache.rows is not None and cache.rows != bp:
            raise ValueError(f"cache holds {cache.rows} rows but prefix_tokens has {bp}; reorder the cache first")
        n_pos = cfg.n_prefix + t
        start = cache.length
        if start >= n_pos:
            raise ValueError(f"cache already covers {start} decoder positions, nothing new in a prefix of {t} codes")
        instr = cache.instruction.repeat_interleave(g, 0) if g > 1 else cache.instruction
        x = self._decoder_inputs(instr, prefix_tokens.long(), start)
        h, ks, vs, _ = self.run_decoder(x, cache)
        new_cache = DecoderCache(cache.cross_k, cache.cross_v, cache.cross_mask, cache.instruction, ks, vs)
        return self.heads[t](h[:, -1]), new_cache

    # ------------------------------------------------------------------ training / scoring
    def _token_loss(self, logits: list[torch.Tensor], target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(nll Float[B', L+1] per level, ce = mean per-level cross-entropy, label-smoothed if configured)."""
        nll = torch.stack([F.cross_entropy(lg, target[:, l], reduction="none") for l, lg in enumerate(logits)], 1)
        if self.cfg.label_smoothing <= 0:
            return nll, nll.mean()
        ce = torch.stack([F.cross_entropy(lg, target[:, l], label_smoothing=self.cfg.label_smoothing)
                          for l, lg in enumerate(logits)]).mean()
        return nll, ce

    def _moe_aux(self, auxes: list[torch.Tensor], zero: torch.Tensor) -> torch.Tensor:
        """Mean Switch load-balancing loss over the MoE layers (encoder then decoder order); ``zero`` if none."""
        moe = [a for a, blk in zip(auxes, [*self.enc_blocks, *self.dec_blocks]) if isinstance(blk.ffn, MoEFeedForward)]
        return torch.stack(moe).mean() if moe else zero

    def forward(self, batch: dict) -> dict:
        cfg = self.cfg
        if "seq_sids" in batch:
            return self.forward_sequence(batch)
        memory, memory_mask, enc_aux, info = self._encode(batch)
        b = memory.shape[0]
        if "target_sids" not in batch:
            raise ValueError("forward needs batch['target_sids'] (Long[B, L+1]); use encode/decode_step for inference")
        target = self._check_sids("target_sids", batch["target_sids"], None, (b,))
        logits, dec_aux = self.decoder_logits(memory, memory_mask, target)
        if self.repeat_bias is not None:
            scen_b, hist, hmask = self.history_for_bias(batch)
            logits = [lg + self.repeat_logit_bias(scen_b, hist, hmask, target[:, :l]) for l, lg in enumerate(logits)]
        nll, ce = self._token_loss(logits, target)
        zero = memory.new_zeros(())
        q2i = {"total": zero, "nce": zero, "var": zero, "decor": zero}
        if self.igr is not None:
            h_q = self.igr.query(info["scenario_emb"], info["reasoning_emb"])
            h_t = self.igr.item(self.item_repr(target))
            same = (target[:, None, :] == target[None, :, :]).all(-1)
            q2i = q2i_loss(h_q, h_t, cfg.q2i_temperature, cfg.q2i_var_weight, cfg.q2i_decor_weight, cfg.q2i_var_gamma, same)
        aux = self._moe_aux(enc_aux + dec_aux, zero)
        loss = ce + cfg.q2i_weight * q2i["total"] + cfg.moe_aux_weight * aux
        out = {
            "loss": loss,
            "ce_loss": ce,
            "q2i_loss": q2i["total"],
            "q2i_nce": q2i["nce"],
            "q2i_var": q2i["var"],
            "q2i_decor": q2i["decor"],
            "aux_loss": aux,
            "logits": logits,
            "nll": nll.sum(1),  # [B] -log p(target item)
        }
        if "igr_index" in info:
            out["igr_index"], out["igr_mask"] = info["igr_index"], info["igr_mask"]
        return out

    def token_log_probs(self, batch: dict, sids: torch.Tensor) -> torch.Tensor:
        """Float[B, G, L+1]: log p(code_l | codes_<l, user) for G candidate items per user, ``sids`` Long[B, G, L+1]
        (differentiable; e.g. policy log-probs for RL). Sum over the last dim for the sequence log-prob."""
        memory, memory_mask = self.encode(batch)
        b = memory.shape[0]
        if sids.dim() != 3 or sids.shape[0] != b:
            raise ValueError(f"sids must be [B={b}, G, {self.cfg.n_levels}], got {tuple(sids.shape)}")
        g = sids.shape[1]
        flat = self._check_sids("sids", sids.reshape(b * g, -1), None, (b * g,))
        logits, _ = self.decoder_logits(memory, memory_mask, flat)
        lp = torch.stack([F.log_softmax(lg.float(), -1).gather(1, flat[:, l : l + 1])[:, 0] for l, lg in enumerate(logits)], 1)
        return lp.view(b, g, -1)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
