"""OxygenREC generator: an encoder-decoder that emits an item's semantic ID (L+1 codes) autoregressively.

Batch dict (B users; L+1 = ``cfg.n_levels`` codes per item; padding entries may hold any value):

    scenario         Long[B]            scenario id in [0, n_scenarios)                 (scenario instruction Is)
    profile          Long[B, P]         profile token ids in [0, profile_vocab_size), 0 = padding, P <= n_profile_fields
    profile_mask     Bool[B, P]         optional, default ``profile != 0``
    instruction_emb  Float[B, 384]      reasoning-instruction text embedding            (reasoning instruction Ir)
    has_instruction  Bool[B]            optional (default all True); False -> learnable default instruction
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

Decoder input: instruction token INS = E_scen(s) + W_r r + b_r, placed per ``instruction_position`` (see
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

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GeneratorConfig
from .igr import IGRAdapter, igr_select, q2i_loss
from .layers import DecoderBlock, DecoderCache, EncoderBlock, MoEFeedForward, make_ffn

__all__ = ["OxygenGenerator", "SEGMENTS"]

SEGMENTS = {"profile": 0, "scenario": 1, "instruction": 2, "short": 3, "long": 4}


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
            self.igr = IGRAdapter(d, cfg.igr_dim, cfg.igr_hidden) if cfg.use_igr else None
            self.apply(self._init_weights)
            nn.init.normal_(self.bos, std=0.02)

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

    # ------------------------------------------------------------------ encoder
    def _encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], dict]:
        cfg = self.cfg
        scen, reason = self.instruction_parts(batch)
        b, dev = scen.shape[0], scen.device
        seg = self.segment_emb.weight
        tokens, masks = [], []

        profile = batch.get("profile")
        if profile is not None and profile.shape[-1] > 0:
            if profile.dim() != 2 or profile.shape[0] != b or profile.shape[1] > cfg.n_profile_fields:
                raise ValueError(f"batch['profile'] must be [B={b}, P<={cfg.n_profile_fields}], got {tuple(profile.shape)}")
            pmask = batch.get("profile_mask")
            pmask = (profile != 0) if pmask is None else pmask.bool()
            profile = torch.where(pmask, profile.long(), 0)
            if bool(((profile < 0) | (profile >= cfg.profile_vocab_size)).any()):
                raise ValueError(f"batch['profile'] ids must be in [0, {cfg.profile_vocab_size})")
            p = profile.shape[1]
            tokens.append(self.profile_emb(profile) + self.field_emb.weight[:p] + seg[SEGMENTS["profile"]])
            masks.append(pmask)

        tokens += [(scen + seg[SEGMENTS["scenario"]])[:, None], (reason + seg[SEGMENTS["instruction"]])[:, None]]
        masks += [torch.ones(b, 2, dtype=torch.bool, device=dev)]

        short, smask = self._history(batch, "short_sids", cfg.max_short, b)
        if short.shape[1]:
            tokens.append(self.item_repr(short) + self.short_pos.weight[: short.shape[1]] + seg[SEGMENTS["short"]])
            masks.append(smask)

        info: dict = {}
        long, lmask = self._history(batch, "long_sids", cfg.max_long, b)
        if long.shape[1]:
            long_e = self.item_repr(long)  # [B, M, d], newest first
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
        instr = (scen + reason)[:, None]  # decoder instruction token INS, stored in the last memory slot
        memory = torch.cat([x, instr], dim=1)
        memory_mask = torch.cat([key_mask, torch.zeros(b, 1, dtype=torch.bool, device=dev)], dim=1)
        info.update(scenario_emb=scen, reasoning_emb=reason)
        return memory, memory_mask, auxes, info

    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory Float[B, T+1, d], memory_mask Bool[B, T+1]); the last slot is the decoder instruction token."""
        memory, memory_mask, _, _ = self._encode(batch)
        return memory, memory_mask

    # ------------------------------------------------------------------ decoder
    def init_cache(self, memory: torch.Tensor, memory_mask: torch.Tensor) -> DecoderCache:
        """Cross-attention K/V of every decoder layer, computed once per request."""
        ks, vs = zip(*(blk.cross_kv(memory) for blk in self.dec_blocks))
        return DecoderCache(list(ks), list(vs), memory_mask[:, None, None, :], memory[:, -1])

    def _decoder_inputs(self, instruction: torch.Tensor, codes: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Decoder input positions start .. n_prefix + t - 1, [B', n_prefix + t - start, d], for instruction rows
        [B', d] and codes [B', t] (levels 0..t-1)."""
        bp, t = codes.shape
        n_prefix = self.cfg.n_prefix
        if start >= n_prefix:  # only code positions are new (incremental decoding)
            l0 = start - n_prefix
            x = self.code_emb(codes[:, l0:] + self.code_offsets[l0:t])
            return x + self.dec_pos.weight[start : n_prefix + t]
        bos = self.bos.expand(bp, 1, -1)
        ins = instruction[:, None]
        pos_mode = self.cfg.instruction_position
        prefix = {
            "none": [bos],
            "replace_bos": [ins],
            "add_to_bos": [bos + ins],
            "left_of_bos": [ins, bos],
            "right_of_bos": [bos, ins],
        }[pos_mode]
        x = torch.cat([*prefix, self.code_emb(codes + self.code_offsets[:t])], dim=1)
        return (x + self.dec_pos.weight[: x.shape[1]])[:, start:]

    def _run_decoder(self, x: torch.Tensor, cache: DecoderCache) -> tuple[torch.Tensor, list, list, list]:
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
        h, _, _, auxes = self._run_decoder(self._decoder_inputs(instr, sids[:, : cfg.n_levels - 1]), cache)
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
        h, ks, vs, _ = self._run_decoder(x, cache)
        new_cache = DecoderCache(cache.cross_k, cache.cross_v, cache.cross_mask, cache.instruction, ks, vs)
        return self.heads[t](h[:, -1]), new_cache

    # ------------------------------------------------------------------ training / scoring
    def forward(self, batch: dict) -> dict:
        cfg = self.cfg
        memory, memory_mask, enc_aux, info = self._encode(batch)
        b = memory.shape[0]
        if "target_sids" not in batch:
            raise ValueError("forward needs batch['target_sids'] (Long[B, L+1]); use encode/decode_step for inference")
        target = self._check_sids("target_sids", batch["target_sids"], None, (b,))
        logits, dec_aux = self.decoder_logits(memory, memory_mask, target)
        nll = torch.stack([F.cross_entropy(lg, target[:, l], reduction="none") for l, lg in enumerate(logits)], 1)
        if cfg.label_smoothing > 0:
            ce = torch.stack([F.cross_entropy(lg, target[:, l], label_smoothing=cfg.label_smoothing)
                              for l, lg in enumerate(logits)]).mean()
        else:
            ce = nll.mean()
        zero = memory.new_zeros(())
        q2i = {"total": zero, "nce": zero, "var": zero, "decor": zero}
        if self.igr is not None:
            h_q = self.igr.query(info["scenario_emb"], info["reasoning_emb"])
            h_t = self.igr.item(self.item_repr(target))
            same = (target[:, None, :] == target[None, :, :]).all(-1)
            q2i = q2i_loss(h_q, h_t, cfg.q2i_temperature, cfg.q2i_var_weight, cfg.q2i_decor_weight, cfg.q2i_var_gamma, same)
        moe_aux = [a for a, blk in zip(enc_aux + dec_aux, [*self.enc_blocks, *self.dec_blocks])
                   if isinstance(blk.ffn, MoEFeedForward)]
        aux = torch.stack(moe_aux).mean() if moe_aux else zero
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
