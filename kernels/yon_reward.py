"""YoN judge reward: sigmoid of the judge's Yes-vs-No logit gap, thresholded, plus the Yes/No mass.

For logits ``x`` of one row (the judge's next-token logits at the last position)::

    z_yes = logsumexp(x[yes_ids])            z_no = logsumexp(x[no_ids])
    s = sigmoid((z_yes - z_no) / tau)         reward = s if s >= delta else 0
    mass = sum of softmax(x)[i] over the union of yes_ids and no_ids (each id once)

``mass`` says how much of the judge's probability went to an answer at all; a low mass flags a
judge that did not follow the "answer Yes or No" instruction. If both sides have zero probability
(every id at -inf) the score is undefined and the reward is 0.

Two entry points:

- :func:`yon_reward` from full logits ``[B, V]``: ONE kernel launch. The mass needs each row's
  full logsumexp; 64 rows are too few programs to fill a GPU, so every row is split over
  ``n_split`` programs that each reduce a chunk of V (online max/sum) and write a partial; the
  last program of a row to take an atomic ticket merges the partials and finishes the row, then
  resets the ticket (the ticket buffer is cached per device and stream and stays zeroed).
- :func:`yon_reward_from_hidden` from the judge's last hidden state ``[B, H]`` and its lm_head
  ``[V, H]``: gathers only the few head rows of the ids (a ``[B,H] x [H,k]`` product in fp32), so
  a judge never computes full-vocab logits (one launch). ``with_mass=True`` adds the exact mass:
  a fused GEMM + online-logsumexp kernel streams the head once in tiles and keeps only per-tile
  (max, sum) partials, never a ``[B, V]`` tensor (the torch backend streams chunks of rows).

Neither is differentiable: the reward is a constant for the policy's loss, so the inputs are
detached and the outputs carry no gradient.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from ._common import (
    HAS_TRITON,
    check_nonempty,
    check_range,
    check_tensor,
    custom_op,
    interpreting,
    next_pow2,
    resolve_backend,
    tl,
    triton,
)

IdsLike = int | Sequence[int] | torch.Tensor

_MAX_BLOCK = 4096  # logits per tile: 8 KB of bf16, 16 per thread at 8 warps
# Grid size aimed at: at B=64, V=151936 this gives one tile per program (2432 programs), so no
# program waits on one load before issuing the next; untuned (the benchmark sweeps it on a GPU).
_TARGET_PROGRAMS = 4096
_HEAD_CHUNK = 4096  # lm_head rows per streamed chunk for the exact mass from hidden (torch)
_DOT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # weights the fused mass takes


# --------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------
if HAS_TRITON:

    @triton.jit
    def _yon_score(g, is_yes, inv_tau, delta):
        """Reward of one row from its gathered id logits ``g`` [K_PAD] (padding at -inf)."""
        neg_inf = float("-inf")
        g_yes = tl.where(is_yes, g, neg_inf)
        g_no = tl.where(is_yes, neg_inf, g)
        m_yes = tl.max(g_yes, 0)
        m_no = tl.max(g_no, 0)
        l_yes = tl.sum(tl.exp(g_yes - tl.where(m_yes == neg_inf, 0.0, m_yes)), 0)
        l_no = tl.sum(tl.exp(g_no - tl.where(m_no == neg_inf, 0.0, m_no)), 0)
        # z_yes - z_no as (max gap) + (log-sum gap): exact even when logits are ~1e4
        gap = (m_yes - m_no) + (tl.log(l_yes) - tl.log(l_no))
        s = 1.0 / (1.0 + tl.exp(-gap * inv_tau))
        return tl.where(s >= delta, s, 0.0)  # NaN (both sides -inf) -> 0

    @triton.jit
    def _yon_logits_kernel(
        logits_ptr, row_stride, V,
        ids_ptr, n_yes, n_ids,
        part_m_ptr, part_l_ptr, ticket_ptr,
        reward_ptr, mass_ptr,
        n_split, tiles_per_prog,
        inv_tau, delta,
        WITH_MASS: tl.constexpr, BLOCK: tl.constexpr,
        SPLIT_PAD: tl.constexpr, K_PAD: tl.constexpr,
    ):
        """Grid (B, n_split). Program (b, s) reduces tiles [s*tiles_per_prog, ...) of row b to a
        partial (max, sum of exp); the row's last program merges them and writes the outputs."""
        neg_inf = float("-inf")
        row = tl.program_id(0)
        row_ptr = logits_ptr + row.to(tl.int64) * row_stride
        if WITH_MASS:
            split = tl.program_id(1)
            cols = tl.arange(0, BLOCK)
            start = split * tiles_per_prog * BLOCK
            m = tl.full([], neg_inf, tl.float32)
            lsum = tl.full([], 0.0, tl.float32)
            for t in tl.range(0, tiles_per_prog):
                offs = start + t * BLOCK + cols
                x = tl.load(row_ptr + offs, mask=offs < V, other=neg_inf,
                            eviction_policy="evict_first").to(tl.float32)
                m_new = tl.maximum(m, tl.max(x, 0))
                shift = tl.where(m_new == neg_inf, 0.0, m_new)  # all -inf so far: no NaN
                lsum = lsum * tl.exp(m - shift) + tl.sum(tl.exp(x - shift), 0)
                m = m_new
            part = row * n_split + split
            tl.store(part_m_ptr + part, m)
            tl.store(part_l_ptr + part, lsum)
            tl.debug_barrier()  # every thread's partial store precedes the ticket (release)
            ticket = tl.atomic_add(ticket_ptr + row, 1, sem="acq_rel")
            last = ticket == n_split - 1
        else:
            last = True
        if last:
            k = tl.arange(0, K_PAD)
            k_ok = k < n_ids
            ids = tl.load(ids_ptr + k, mask=k_ok, other=0)
            g = tl.load(row_ptr + ids, mask=k_ok, other=neg_inf).to(tl.float32)
            tl.store(reward_ptr + row, _yon_score(g, k < n_yes, inv_tau, delta))
            if WITH_MASS:
                s = tl.arange(0, SPLIT_PAD)
                s_ok = s < n_split
                # .cg: read the other programs' partials from L2, not a stale L1 line
                ms = tl.load(part_m_ptr + row * n_split + s, mask=s_ok, other=neg_inf,
                             cache_modifier=".cg")
                ls = tl.load(part_l_ptr + row * n_split + s, mask=s_ok, other=0.0,
                             cache_modifier=".cg")
                big_m = tl.max(ms, 0)
                shift = tl.where(big_m == neg_inf, 0.0, big_m)
                total = tl.sum(ls * tl.exp(ms - shift), 0)
                tl.store(mass_ptr + row, tl.sum(tl.exp(g - shift), 0) / total)
                tl.atomic_xchg(ticket_ptr + row, 0)  # leave the cached tickets zeroed

    @triton.jit
    def _yon_hidden_kernel(
        h_ptr, h_stride, w_ptr, w_stride, bias_ptr, H,
        ids_ptr, n_yes, n_ids,
        inv_tau, delta,
        reward_ptr, z_ptr,
        HAS_BIAS: tl.constexpr, BLOCK_H: tl.constexpr, K_PAD: tl.constexpr,
    ):
        """Grid (B,). Row b's id logits z[k] = hidden[b] . W[ids[k]] (+ bias) in fp32, then the
        reward; z is written too ([B, n_ids]) so the mass can be added from a streamed lse."""
        row = tl.program_id(0)
        k = tl.arange(0, K_PAD)
        k_ok = k < n_ids
        ids = tl.load(ids_ptr + k, mask=k_ok, other=0)
        w_rows = w_ptr + ids.to(tl.int64)[:, None] * w_stride
        h_row = h_ptr + row.to(tl.int64) * h_stride
        acc = tl.zeros([K_PAD, BLOCK_H], dtype=tl.float32)
        for h0 in tl.range(0, H, BLOCK_H):
            cols = h0 + tl.arange(0, BLOCK_H)
            c_ok = cols < H
            h = tl.load(h_row + cols, mask=c_ok, other=0.0).to(tl.float32)
            w = tl.load(w_rows + cols[None, :], mask=k_ok[:, None] & c_ok[None, :],
                        other=0.0).to(tl.float32)
            acc += w * h[None, :]
        g = tl.sum(acc, 1)
        if HAS_BIAS:
            g += tl.load(bias_ptr + ids, mask=k_ok, other=0.0).to(tl.float32)
        g = tl.where(k_ok, g, float("-inf"))
        tl.store(reward_ptr + row, _yon_score(g, k < n_yes, inv_tau, delta))
        tl.store(z_ptr + row * n_ids + k, g, mask=k_ok)


    @triton.jit
    def _head_lse_kernel(
        h_ptr, h_stride, w_ptr, w_stride, bias_ptr,
        B, V, H,
        part_m_ptr, part_l_ptr, n_vt,
        HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, DOT_FP32: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        """Grid (cdiv(B, BLOCK_B), cdiv(V, BLOCK_V)). Logits of a [BLOCK_B, BLOCK_V] tile as
        hidden @ W_tile.T (fp32 accumulation), reduced at once to each row's partial
        (max, sum of exp) at [row, tile]: the logits never reach memory. Row tiles vary fastest,
        so programs that share a tile of W run together and read it from HBM once."""
        rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        vt = tl.program_id(1)
        rv = vt * BLOCK_V + tl.arange(0, BLOCK_V)
        rk = tl.arange(0, BLOCK_K)
        b_ok = rb < B
        v_ok = rv < V
        h_ptrs = h_ptr + rb.to(tl.int64)[:, None] * h_stride + rk[None, :]
        w_ptrs = w_ptr + rv.to(tl.int64)[None, :] * w_stride + rk[:, None]  # [BLOCK_K, BLOCK_V]
        acc = tl.zeros([BLOCK_B, BLOCK_V], dtype=tl.float32)
        for k0 in tl.range(0, H, BLOCK_K, num_stages=3):
            k_ok = k0 + rk < H
            w = tl.load(w_ptrs + k0, mask=k_ok[:, None] & v_ok[None, :], other=0.0)
            h = tl.load(h_ptrs + k0, mask=b_ok[:, None] & k_ok[None, :], other=0.0)
            if DOT_FP32:  # the CPU interpreter's bf16 dot is wrong
                acc = tl.dot(h.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(h.to(w.dtype), w, acc, input_precision=PRECISION)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rv, mask=v_ok, other=0.0).to(tl.float32)[None, :]
        acc = tl.where(v_ok[None, :], acc, float("-inf"))
        m = tl.max(acc, 1)
        shift = tl.where(m == float("-inf"), 0.0, m)
        lsum = tl.sum(tl.exp(acc - shift[:, None]), 1)
        tl.store(part_m_ptr + rb * n_vt + vt, m, mask=b_ok)
        tl.store(part_l_ptr + rb * n_vt + vt, lsum, mask=b_ok)


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------
_ids_cache: dict[tuple, torch.Tensor] = {}
_ticket_cache: dict[tuple, torch.Tensor] = {}


def _ids_tensor(yes: tuple, no: tuple, device: torch.device) -> torch.Tensor:
    """yes ids then no ids as int32 on ``device``, cached so a call copies nothing."""
    key = (yes, no, device)
    if key not in _ids_cache:
        _ids_cache[key] = torch.tensor(yes + no, dtype=torch.int32, device=device)
    return _ids_cache[key]


def _tickets(rows: int, device: torch.device) -> torch.Tensor:
    """A zeroed int32 ticket per row, cached per device and stream (the kernel re-zeroes it)."""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else None
    key = (device, stream)
    buf = _ticket_cache.get(key)
    if buf is None or buf.numel() < rows:
        buf = torch.zeros(max(rows, 64), dtype=torch.int32, device=device)
        _ticket_cache[key] = buf
    return buf


def _plan(rows: int, vocab: int) -> tuple[int, int, int]:
    """(BLOCK, tiles per program, programs per row) for the logits kernel."""
    block = min(_MAX_BLOCK, max(128, next_pow2(triton.cdiv(vocab, 8))))
    n_tiles = triton.cdiv(vocab, block)
    tiles_per_prog = max(1, min(n_tiles, triton.cdiv(rows * n_tiles, _TARGET_PROGRAMS)))
    return block, tiles_per_prog, triton.cdiv(n_tiles, tiles_per_prog)


def _yon_reward_triton(
    logits: torch.Tensor, yes: tuple, no: tuple, tau: float, delta: float, with_mass: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One launch of the logits kernel; reward [B] fp32 and mass [B] fp32 (or None)."""
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    rows, vocab = logits.shape
    dev = logits.device
    ids = _ids_tensor(yes, no, dev)
    reward = torch.empty(rows, dtype=torch.float32, device=dev)
    mass = torch.empty(rows, dtype=torch.float32, device=dev) if with_mass else reward
    if with_mass:
        block, tiles_per_prog, n_split = _plan(rows, vocab)
        parts = torch.empty(2, rows, n_split, dtype=torch.float32, device=dev)
        tickets = _tickets(rows, dev)
    else:  # one program per row: just the gather
        block, tiles_per_prog, n_split = 16, 0, 1
        parts, tickets = reward.new_empty(2, 1, 1), reward
    _yon_logits_kernel[(rows, n_split)](
        logits, logits.stride(0), vocab,
        ids, len(yes), len(ids),
        parts[0], parts[1], tickets,
        reward, mass,
        n_split, tiles_per_prog,
        1.0 / tau, float(delta),
        WITH_MASS=with_mass, BLOCK=block,
        SPLIT_PAD=next_pow2(n_split), K_PAD=max(2, next_pow2(len(ids))),
        num_warps=8 if block >= 2048 else 4,
    )
    return reward, (mass if with_mass else None)


def _head_lse_triton(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """As :func:`_head_logsumexp` in one fused GEMM + online-logsumexp launch (plus a tiny merge
    of the per-tile partials). Hidden is cast to the weight's dtype (as the lm_head would);
    fp32 weights use exact fp32 products, not TF32."""
    if hidden.stride(1) != 1:
        hidden = hidden.contiguous()
    if weight.stride(1) != 1:
        weight = weight.contiguous()
    (rows, width), vocab = hidden.shape, weight.shape[0]
    block_b, block_v, block_k = min(64, max(16, next_pow2(rows))), 128, 64
    n_vt = triton.cdiv(vocab, block_v)
    parts = torch.empty(2, rows, n_vt, dtype=torch.float32, device=hidden.device)
    _head_lse_kernel[(triton.cdiv(rows, block_b), n_vt)](
        hidden, hidden.stride(0), weight, weight.stride(0),
        bias if bias is not None else parts, rows, vocab, width,
        parts[0], parts[1], n_vt,
        HAS_BIAS=bias is not None,
        PRECISION="ieee" if weight.dtype == torch.float32 else "tf32",
        DOT_FP32=interpreting(),
        BLOCK_B=block_b, BLOCK_V=block_v, BLOCK_K=block_k,
        num_warps=4,
    )
    part_m, part_l = parts
    m = part_m.amax(-1)
    shift = torch.where(m == float("-inf"), 0.0, m)
    return shift, (part_l * (part_m - shift[:, None]).exp()).sum(-1)


def _yon_hidden_triton(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    yes: tuple, no: tuple, tau: float, delta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(reward [B], id logits [B, k]) fp32 from the rows-only kernel."""
    if hidden.stride(1) != 1:
        hidden = hidden.contiguous()
    if weight.stride(1) != 1:
        weight = weight.contiguous()
    rows, width = hidden.shape
    ids = _ids_tensor(yes, no, hidden.device)
    reward = torch.empty(rows, dtype=torch.float32, device=hidden.device)
    z = torch.empty(rows, len(ids), dtype=torch.float32, device=hidden.device)
    k_pad = max(2, next_pow2(len(ids)))
    block_h = max(16, min(next_pow2(width), 4096 // k_pad))
    _yon_hidden_kernel[(rows,)](
        hidden, hidden.stride(0), weight, weight.stride(0),
        bias if bias is not None else reward, width,
        ids, len(yes), len(ids),
        1.0 / tau, float(delta),
        reward, z,
        HAS_BIAS=bias is not None, BLOCK_H=block_h, K_PAD=k_pad,
        num_warps=4,
    )
    return reward, z


# --------------------------------------------------------------------------------------------------
# Registered ops (opaque to torch.compile)
# --------------------------------------------------------------------------------------------------
# Registered so torch.compile traces a caller without breaking its graph at the kernel.
@custom_op("rlkd_fast::yon_reward", mutates_args=())
def _yon_reward_op(
    logits: torch.Tensor, yes_ids: list[int], no_ids: list[int], tau: float, delta: float,
    with_mass: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    reward, mass = _yon_reward_triton(logits, tuple(yes_ids), tuple(no_ids), tau, delta,
                                      with_mass)
    return reward, (mass if with_mass else reward.new_empty(0))


@_yon_reward_op.register_fake
def _(logits, yes_ids, no_ids, tau, delta, with_mass):
    rows = logits.shape[0]
    return logits.new_empty(rows, dtype=torch.float32), logits.new_empty(
        rows if with_mass else 0, dtype=torch.float32)


@custom_op("rlkd_fast::yon_reward_from_hidden", mutates_args=())
def _yon_hidden_op(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    yes_ids: list[int], no_ids: list[int], tau: float, delta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _yon_hidden_triton(hidden, weight, bias, tuple(yes_ids), tuple(no_ids), tau, delta)


@_yon_hidden_op.register_fake
def _(hidden, weight, bias, yes_ids, no_ids, tau, delta):
    rows = hidden.shape[0]
    k = len(yes_ids) + len(no_ids)
    return (hidden.new_empty(rows, dtype=torch.float32),
            hidden.new_empty(rows, k, dtype=torch.float32))


# --------------------------------------------------------------------------------------------------
# Torch backend
# --------------------------------------------------------------------------------------------------
def yon_reward_reference(
    logits: torch.Tensor, yes_ids: IdsLike, no_ids: IdsLike, tau: float = 1.0, delta: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-PyTorch YoN reward and mass, computed in float64 (memory: B*V*8 bytes).

    logits [B, V] any float dtype -> (reward [B], mass [B]) float64.
    """
    _check_logits(logits)
    _check_hyper(tau, delta)
    yes, no = _check_ids(yes_ids, no_ids, logits.shape[1])
    x = logits.detach().double()
    gap = x[:, list(yes)].logsumexp(-1) - x[:, list(no)].logsumexp(-1)
    s = torch.sigmoid(gap / tau)
    reward = torch.where(s >= delta, s, torch.zeros_like(s))
    mass = torch.softmax(x, -1)[:, list(yes + no)].sum(-1)
    return reward, mass


def yon_reward_from_hidden_reference(
    hidden: torch.Tensor, lm_head_weight: torch.Tensor, yes_ids: IdsLike, no_ids: IdsLike,
    tau: float = 1.0, delta: float = 0.5, bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The obvious version: full logits ``hidden @ W.T (+ bias)`` in float64, then
    :func:`yon_reward_reference`. hidden [B, H], W [V, H], bias [V] -> (reward, mass) [B] fp64."""
    logits = hidden.detach().double() @ lm_head_weight.detach().double().T
    if bias is not None:
        logits = logits + bias.detach().double()
    return yon_reward_reference(logits, yes_ids, no_ids, tau, delta)


def _head_logsumexp(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """logsumexp over V of ``hidden @ W.T + bias`` as (max, sum of exp(logit - max)), [B] fp32
    each, streaming W in chunks of rows: the largest temporary is [B, _HEAD_CHUNK] fp32."""
    rows = hidden.shape[0]
    fast = (hidden.is_cuda and hidden.dtype in (torch.float16, torch.bfloat16)
            and weight.dtype == hidden.dtype)
    h32 = hidden if fast else hidden.float()
    m = torch.full((rows,), float("-inf"), device=hidden.device)
    total = torch.zeros(rows, device=hidden.device)
    for c0 in range(0, weight.shape[0], _HEAD_CHUNK):
        w = weight[c0:c0 + _HEAD_CHUNK]
        # fp32 logits: bf16-rounded ones would move the lse by up to ~0.1 at |logit| ~ 30
        z = torch.mm(h32, w.T, out_dtype=torch.float32) if fast else h32 @ w.float().T
        if bias is not None:
            z = z + bias[c0:c0 + _HEAD_CHUNK].float()
        m_new = torch.maximum(m, z.amax(-1))
        shift = torch.where(m_new == float("-inf"), 0.0, m_new)
        total = total * (m - shift).exp() + (z - shift[:, None]).exp().sum(-1)
        m = m_new
    return torch.where(m == float("-inf"), 0.0, m), total


def _id_logits_torch(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, ids: list[int]
) -> torch.Tensor:
    """[B, k] float64 logits of the ids only: [B,H] x [H,k] with the gathered head rows."""
    z = hidden.double() @ weight[ids].double().T
    if bias is not None:
        z = z + bias[ids].double()
    return z


def _score_torch(
    z_yes: torch.Tensor, z_no: torch.Tensor, tau: float, delta: float
) -> torch.Tensor:
    """Reward [B] fp32 from the id logits of each side ([B, k_yes], [B, k_no]), in float64."""
    gap = z_yes.double().logsumexp(-1) - z_no.double().logsumexp(-1)
    s = torch.sigmoid(gap / tau)
    return torch.where(s >= delta, s, torch.zeros_like(s)).float()


def _yon_reward_torch(
    logits: torch.Tensor, yes: tuple, no: tuple, tau: float, delta: float, with_mass: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Torch backend: the id gathers in float64, the row logsumexp in fp32 over [B, V]."""
    reward = _score_torch(logits[:, list(yes)], logits[:, list(no)], tau, delta)
    if not with_mass:
        return reward, None
    x = logits.float()
    m = x.amax(-1, keepdim=True)
    m = torch.where(m == float("-inf"), 0.0, m)
    # shifted by the row max, not by the lse: exact at |logits| ~ 1e4, where lse's ulp is 1e-3
    total = (x - m).exp().sum(-1)
    mass = (x[:, list(yes + no)] - m).exp().sum(-1) / total
    return reward, mass


# --------------------------------------------------------------------------------------------------
# Public functions (input checks first)
# --------------------------------------------------------------------------------------------------
def _as_ids(name: str, ids: IdsLike, vocab: int) -> tuple[int, ...]:
    """Token ids as a tuple of Python ints, duplicates dropped (order kept), range-checked."""
    if isinstance(ids, torch.Tensor):
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
        if ids.dim() > 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(ids.shape)}")
        values = ids.reshape(-1).tolist()
    elif hasattr(ids, "__index__") and not isinstance(ids, bool):
        values = [ids]
    elif isinstance(ids, Sequence) and not isinstance(ids, str):
        values = list(ids)
    else:
        raise TypeError(f"{name} must be an int, a sequence of ints or a 1-D integer tensor, "
                        f"got {type(ids).__name__}")
    if not values:
        raise ValueError(f"{name} is empty: each side needs at least one token id")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise TypeError(f"{name} must hold ints, got {v!r}")
        values[i] = v = operator.index(v)  # numpy integers too
        if not 0 <= v < vocab:
            raise ValueError(f"{name} holds token id {v}, outside the vocabulary [0, {vocab})")
    return tuple(dict.fromkeys(values))


_checked_ids: dict[tuple, tuple[tuple, tuple]] = {}


def _check_ids(yes_ids: IdsLike, no_ids: IdsLike, vocab: int) -> tuple[tuple, tuple]:
    """(yes, no) as validated tuples. Ids given as Python ints (alone, in a list or a tuple) are
    checked once and cached, since a judge passes the same few ids on every call."""
    key = (_int_key(yes_ids), _int_key(no_ids), vocab)
    if key in _checked_ids:
        return _checked_ids[key]
    yes, no = _as_ids("yes_ids", yes_ids, vocab), _as_ids("no_ids", no_ids, vocab)
    both = set(yes) & set(no)
    if both:
        raise ValueError(f"yes_ids and no_ids must be disjoint; both hold {sorted(both)}")
    if None not in key:
        _checked_ids[key] = (yes, no)
    return yes, no


def _int_key(ids) -> tuple | None:
    """``ids`` as a tuple if it is an int or a list/tuple of exact ints, else None."""
    items = (ids,) if type(ids) is int else ids
    if isinstance(items, list | tuple) and all(type(v) is int for v in items):
        return tuple(items)
    return None


def _check_hyper(tau: float, delta: float) -> None:
    if not (isinstance(tau, int | float) and tau > 0 and tau != float("inf")):
        raise ValueError(f"tau must be a finite number > 0, got {tau}")
    check_range("delta", delta, 0.0, 1.0)


def _check_logits(logits: torch.Tensor) -> None:
    check_tensor("logits", logits, ndim=2)
    check_nonempty("logits", logits)


def yon_reward(
    logits: torch.Tensor,
    yes_ids: IdsLike,
    no_ids: IdsLike,
    tau: float = 1.0,
    delta: float = 0.5,
    with_mass: bool = True,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """YoN judge reward from next-token logits, in one kernel launch. Not differentiable.

    Args:
        logits: [B, V] fp16/bf16/fp32/fp64, the judge's logits at the answer position (rows may
            be strided, e.g. ``logits[:, -1]`` of a [B, T, V] tensor, if the vocab is contiguous).
        yes_ids, no_ids: token ids of each answer (an int, a sequence or a 1-D integer tensor;
            several ids per side are combined by logsumexp; duplicates count once). Disjoint.
        tau: temperature > 0 of the sigmoid. delta: threshold in [0, 1]; s < delta gives 0.
        with_mass: also return the softmax mass of the yes+no ids (the pass over all of V).
        backend: "auto" | "triton" | "torch".

    Returns:
        reward [B] fp32, and mass [B] fp32 (None if ``with_mass`` is False).
    """
    _check_logits(logits)
    _check_hyper(tau, delta)
    yes, no = _check_ids(yes_ids, no_ids, logits.shape[1])
    logits = logits.detach()
    if resolve_backend(backend, logits) == "torch":
        return _yon_reward_torch(logits, yes, no, float(tau), float(delta), with_mass)
    if not torch.compiler.is_compiling():  # eager: skip the custom op's dispatch overhead
        return _yon_reward_triton(logits, yes, no, float(tau), float(delta), bool(with_mass))
    reward, mass = _yon_reward_op(logits, list(yes), list(no), float(tau), float(delta),
                                  bool(with_mass))
    return reward, (mass if with_mass else None)


def yon_reward_from_hidden(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    yes_ids: IdsLike,
    no_ids: IdsLike,
    tau: float = 1.0,
    delta: float = 0.5,
    bias: torch.Tensor | None = None,
    with_mass: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """YoN judge reward from the judge's last hidden state, reading only the head rows of the
    ids (no full-vocab logits). Not differentiable.

    Args:
        hidden: [B, H] float, the final-norm hidden state at the answer position.
        lm_head_weight: [V, H] float, the judge's output embedding (same device).
        yes_ids, no_ids, tau, delta: as in :func:`yon_reward`.
        bias: optional [V] lm_head bias.
        with_mass: also compute the exact yes+no softmax mass, streaming the whole head once
            with an online logsumexp (reads V*H weights; never a [B, V] tensor).
        backend: "auto" | "triton" | "torch".

    Returns:
        reward [B] fp32, and mass [B] fp32 or None. The id logits are accumulated in fp32 from
        the inputs, not rounded to the weight dtype as a bf16 lm_head's output would be.
    """
    check_tensor("hidden", hidden, ndim=2)
    check_nonempty("hidden", hidden)
    check_tensor("lm_head_weight", lm_head_weight, ndim=2)
    check_nonempty("lm_head_weight", lm_head_weight)
    if lm_head_weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"lm_head_weight has shape {tuple(lm_head_weight.shape)}; expected "
                         f"[V, {hidden.shape[1]}] to match hidden {tuple(hidden.shape)}")
    if lm_head_weight.device != hidden.device:
        raise ValueError(f"lm_head_weight is on {lm_head_weight.device}, hidden on "
                         f"{hidden.device}")
    vocab = lm_head_weight.shape[0]
    if bias is not None:
        check_tensor("bias", bias, ndim=1)
        if bias.shape[0] != vocab or bias.device != hidden.device:
            raise ValueError(f"bias must be [{vocab}] on {hidden.device}, got "
                             f"{tuple(bias.shape)} on {bias.device}")
        bias = bias.detach()
    _check_hyper(tau, delta)
    yes, no = _check_ids(yes_ids, no_ids, vocab)
    hidden, weight = hidden.detach(), lm_head_weight.detach()
    if resolve_backend(backend, hidden) == "torch":
        z = _id_logits_torch(hidden, weight, bias, list(yes + no))
        reward = _score_torch(z[:, :len(yes)], z[:, len(yes):], float(tau), float(delta))
    elif not torch.compiler.is_compiling():
        reward, z = _yon_hidden_triton(hidden, weight, bias, yes, no, float(tau), float(delta))
    else:
        reward, z = _yon_hidden_op(hidden, weight, bias, list(yes), list(no), float(tau),
                                   float(delta))
    if not with_mass:
        return reward, None
    fused = z.dtype == torch.float32 and weight.dtype in _DOT_DTYPES  # the Triton backend
    m, total = (_head_lse_triton if fused else _head_logsumexp)(hidden, weight, bias)
    return reward, (z.float() - m[:, None]).exp().sum(-1) / total
