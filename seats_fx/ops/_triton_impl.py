"""The Triton kernels of seats_fx.ops.triton_kernels (see there). Loaded by that module only, once per
TRITON_INTERPRET mode, because triton decides at definition time whether a kernel is interpreted."""

import triton
import triton.language as tl

ALWAYS_VALUE = tl.constexpr(2 ** 62)  # keep limit of the text slot (ops.budget.ALWAYS)


# Reductions from core tl.reduce / tl.associative_scan with triton's standard combine functions: what tl.max,
# tl.sum, tl.argmax and tl.cumsum compile to. Calling those @jit wrappers themselves would fail under the
# interpreter when TRITON_INTERPRET was set after triton was imported (torch imports triton early), and the
# interpreter runs these combine functions as numpy reductions (any other one element by element).
@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _maximum(a, b):
    return tl.maximum(a, b)


@triton.jit
def _first_of_largest(value_a, index_a, value_b, index_b):
    take_b = (value_b > value_a) | ((value_b == value_a) & (index_b < index_a))
    return tl.where(take_b, value_b, value_a), tl.where(take_b, index_b, index_a)


_SUM = getattr(tl.standard, "_sum_combine", _add)
_MAX = getattr(tl.standard, "_elementwise_max", _maximum)
_ARGMAX = getattr(tl.standard, "_argmax_combine_tie_break_left", _first_of_largest)


@triton.jit
def _max(x):
    return tl.reduce(x, 0, _MAX)


@triton.jit
def _sum(x):
    return tl.reduce(x, 0, _SUM)


@triton.jit
def _cumsum(x):
    return tl.associative_scan(x, 0, _SUM)


@triton.jit
def _argmax(x, indices):
    """Index of the largest entry of a 1-D block, the lowest index on ties (torch.argmax's rule)."""
    _, index = tl.reduce((x, indices), 0, _ARGMAX)
    return index


@triton.jit
def greedy_kernel(distance, picks, n, k, stride_group, stride_row, BLOCK: tl.constexpr):
    group = tl.program_id(0)
    offsets = tl.arange(0, BLOCK)
    inside = offsets < n
    tile = distance + group.to(tl.int64) * stride_group
    # nearest-neighbour distance of each candidate c: min over the other tokens s of D[s, c]
    nearest = tl.full([BLOCK], float("inf"), tl.float32)
    for s in range(0, n):
        row = tl.load(tile + s * stride_row + offsets, mask=inside, other=float("inf"))
        nearest = tl.minimum(nearest, tl.where(offsets == s, float("inf"), row))
    nearest = tl.where(n == 1, 0.0, nearest)
    nearest = tl.where(inside, nearest, float("-inf"))
    first = _argmax(nearest, offsets)
    out = picks + group.to(tl.int64) * k
    tl.store(out, first.to(tl.int64))
    taken = offsets == first
    to_picks = tl.load(tile + first * stride_row + offsets, mask=inside, other=float("-inf"))
    for step in range(1, k):
        candidates = tl.where(taken | (offsets >= n), float("-inf"), to_picks)
        pick = _argmax(candidates, offsets)
        tl.store(out + step, pick.to(tl.int64))
        taken = taken | (offsets == pick)
        row = tl.load(tile + pick * stride_row + offsets, mask=inside, other=float("-inf"))
        to_picks = tl.minimum(to_picks, row)

@triton.jit
def relevance_logits_kernel(query, keys, key_mask, logits, block_max, block_sum, length, scale,
                            q_batch, q_head, k_batch, k_head, k_pos, mask_batch,
                            HEADS: tl.constexpr, GROUP: tl.constexpr, DIM: tl.constexpr,
                            BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, HAS_MASK: tl.constexpr):
    batch = tl.program_id(0)
    block = tl.program_id(1)
    blocks = tl.num_programs(1)
    positions = block * BLOCK_L + tl.arange(0, BLOCK_L)
    dims = tl.arange(0, BLOCK_D)
    inside = positions < length
    valid = inside
    if HAS_MASK:
        valid = valid & (tl.load(key_mask + batch * mask_batch + positions, mask=inside, other=0) != 0)
    for kv_head in range(0, HEADS // GROUP):
        key_tile = tl.load(keys + batch.to(tl.int64) * k_batch + kv_head * k_head
                           + positions[:, None].to(tl.int64) * k_pos + dims[None, :],
                           mask=inside[:, None] & (dims[None, :] < DIM), other=0.0).to(tl.float32)
        for member in range(0, GROUP):
            head = kv_head * GROUP + member
            q = tl.load(query + batch * q_batch + head * q_head + dims, mask=dims < DIM,
                        other=0.0).to(tl.float32)
            row = tl.reduce(key_tile * q[None, :], 1, _SUM) * scale
            row = tl.where(valid, row, float("-inf"))
            row_base = (batch * HEADS + head).to(tl.int64)
            tl.store(logits + row_base * length + positions, row, mask=inside)
            top = _max(row)
            total = _sum(tl.exp(row - tl.where(top > float("-inf"), top, 0.0)))  # masked keys add 0
            tl.store(block_max + row_base * blocks + block, top)
            tl.store(block_sum + row_base * blocks + block, total)

@triton.jit
def relevance_normalize_kernel(logits, block_max, block_sum, out, length, blocks,
                               HEADS: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_B: tl.constexpr):
    batch = tl.program_id(0)
    block = tl.program_id(1)
    positions = block * BLOCK_L + tl.arange(0, BLOCK_L)
    inside = positions < length
    stats = tl.arange(0, BLOCK_B)
    acc = tl.full([BLOCK_L], 0.0, tl.float32)
    for head in range(0, HEADS):
        row_base = (batch * HEADS + head).to(tl.int64)
        tops = tl.load(block_max + row_base * blocks + stats, mask=stats < blocks, other=float("-inf"))
        sums = tl.load(block_sum + row_base * blocks + stats, mask=stats < blocks, other=0.0)
        top = _max(tops)  # some block of every row holds a real key, so top is finite
        total = _sum(sums * tl.exp(tops - top))
        row = tl.load(logits + row_base * length + positions, mask=inside, other=float("-inf"))
        acc += tl.exp(row - top) / total
    tl.store(out + batch.to(tl.int64) * length + positions, acc / HEADS, mask=inside)

@triton.jit
def _order_key(x):
    # float64 -> int64 with the same order (negative floats: magnitude bits flipped)
    bits = x.to(tl.int64, bitcast=True)
    return tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFFFFFFFFFF)

@triton.jit
def _from_order_key(key):
    return tl.where(key >= 0, key, key ^ 0x7FFFFFFFFFFFFFFF).to(tl.float64, bitcast=True)

@triton.jit
def _slots_at_least(targets, lower, top, level):
    # per window: how many of its free slots j in [lower, top) have priority fl(targets - j) >= level;
    # priorities fall by 1 per slot, so the last such j is floor(targets - level) give or take one
    guess = tl.floor(targets - level) - 1.0
    guess = tl.minimum(tl.maximum(guess, (lower - 1).to(tl.float64)), top.to(tl.float64))
    last = guess.to(tl.int64)
    last += (targets - (last + 1).to(tl.float64) >= level).to(tl.int64)
    last += (targets - (last + 1).to(tl.float64) >= level).to(tl.int64)
    return tl.minimum(tl.maximum(last - lower + 1, 0), top - lower)

@triton.jit
def _round_half_even(x):
    down = tl.floor(x)
    rest = x - down
    odd = (down - 2.0 * tl.floor(down * 0.5)) != 0.0
    return tl.where(rest > 0.5, down + 1.0, tl.where(rest < 0.5, down, tl.where(odd, down + 1.0, down)))

# integer arguments equal to 1 would become compile-time constants (triton's specialization), and a
# comparison of a constant is a Python bool, with no .to(): keep counts and the temperature's bits are 1 at times
@triton.jit(do_not_specialize=["video_keep", "audio_keep", "total", "temperature_bits"])
def budgets_kernel(sums, counts, out, windows, sum_row, sum_col, count_row, count_col, video_keep,
                   audio_keep, total, temperature_bits, BLOCK_W: tl.constexpr):
    # the temperature arrives as the int64 bits of a float64 (a Python float would become a float32)
    temperature = temperature_bits.to(tl.int64).to(tl.float64, bitcast=True)
    lanes = tl.arange(0, BLOCK_W)
    inside = lanes < windows
    video_sum = tl.load(sums + lanes * sum_col, mask=inside, other=0.0).to(tl.float64)
    audio_sum = tl.load(sums + sum_row + lanes * sum_col, mask=inside, other=0.0).to(tl.float64)
    video_count = tl.load(counts + lanes * count_col, mask=inside, other=0).to(tl.float64)
    audio_count = tl.load(counts + count_row + lanes * count_col, mask=inside, other=0).to(tl.float64)
    # softmax over windows of each modality's mean relevance / T (0 everywhere when the modality is absent)
    video_mean = tl.where(video_count > 0, video_sum / tl.maximum(video_count, 1.0), float("-inf"))
    audio_mean = tl.where(audio_count > 0, audio_sum / tl.maximum(audio_count, 1.0), float("-inf"))
    video_scaled = tl.where(inside, video_mean / temperature, float("-inf"))
    audio_scaled = tl.where(inside, audio_mean / temperature, float("-inf"))
    video_top = _max(video_scaled)
    audio_top = _max(audio_scaled)
    # exp(-inf) is 0 for the windows without the modality; a modality absent everywhere weighs nothing
    video_exp = tl.exp(video_scaled - tl.where(video_top > float("-inf"), video_top, 0.0))
    audio_exp = tl.exp(audio_scaled - tl.where(audio_top > float("-inf"), audio_top, 0.0))
    video_weight = video_exp / tl.maximum(_sum(video_exp), 1e-300)
    audio_weight = audio_exp / tl.maximum(_sum(audio_exp), 1e-300)
    present = (_sum(video_count) > 0).to(tl.float64) * (video_keep > 0).to(tl.float64) + \
        (_sum(audio_count) > 0).to(tl.float64) * (audio_keep > 0).to(tl.float64)
    window_weight = (video_weight + audio_weight) / tl.maximum(present, 1.0)
    targets = window_weight * total
    video_size = video_count.to(tl.int64)
    audio_size = audio_count.to(tl.int64)
    size = video_size + audio_size
    # "at least 1 per window holding tokens" whenever the total covers every such window (empty windows,
    # and the lanes past the last window, hold no tokens and do not count)
    occupied = (size > 0).to(tl.int64)
    lower = occupied * (_sum(occupied) <= total).to(tl.int64)
    # slots j < max(1, total) exist; a window's free slots are [lower, min(size, columns))
    top = tl.minimum(size, tl.maximum(total, 1))
    free = total - _sum(lower)
    # the free-th best free priority: bisection over the float64 order (64 halvings of the int64 keys)
    low_key = _order_key(-(tl.maximum(total, 1) + 2).to(tl.float64))
    high_key = _order_key(_max(tl.where(inside, targets, 0.0)) + 1.0)
    for _ in range(0, 64):
        middle = (low_key >> 1) + (high_key >> 1) + (low_key & high_key & 1)
        enough = _sum(_slots_at_least(targets, lower, top, _from_order_key(middle))) >= free
        low_key = tl.where(enough, middle, low_key)
        high_key = tl.where(enough, high_key, middle)
    level = _from_order_key(low_key)
    above = _slots_at_least(targets, lower, top, _from_order_key(low_key + 1))
    tied = _slots_at_least(targets, lower, top, level) - above
    # slots tied at the level go to the lower window index first, as many as are still needed
    needed = free - _sum(above)
    window_budget = lower + above + (tied * (_cumsum(tied) <= needed)).to(tl.int64)
    window_budget = tl.where(inside, window_budget, 0)
    # split each window's budget between video and audio by the modalities' claims
    video_claim = video_weight * video_keep
    audio_claim = audio_weight * audio_keep
    claims = video_claim + audio_claim
    share = tl.where(claims > 0, video_claim / tl.where(claims > 0, claims, 1.0),
                     (video_size > 0).to(tl.float64))
    both = ((video_size > 0) & (audio_size > 0) & (window_budget >= 2)).to(tl.int64)
    low = tl.maximum(window_budget - audio_size, both)
    high = tl.minimum(video_size, window_budget - both)
    video_budget = _round_half_even(window_budget.to(tl.float64) * share).to(tl.int64)
    video_budget = tl.minimum(tl.maximum(video_budget, low), high)
    tl.store(out + lanes, video_budget, mask=inside)
    tl.store(out + windows + lanes, window_budget - video_budget, mask=inside)
    tl.store(out + 2 * windows + tl.arange(0, 2), tl.where(tl.arange(0, 2) == 0, ALWAYS_VALUE, 0))

@triton.jit
def _score_order(scores, positions, inside, stride):
    # a score's place in torch.sort's order as an int32 (larger = earlier in a descending sort; -inf is
    # -0x7F800000): -0.0 equal to 0.0, every NaN above +inf. Integer ops on the bits only: no float compare,
    # so no fast-math rewrite can change how -0.0 and NaN order.
    score = tl.load(scores + positions.to(tl.int64) * stride, mask=inside, other=0.0).to(tl.float32)
    bits = score.to(tl.int32, bitcast=True)
    magnitude = bits & 0x7FFFFFFF
    order = tl.where(bits < 0, -magnitude, magnitude)
    order = tl.where(magnitude > 0x7F800000, 0x7FFFFFFF, order)
    return order

@triton.jit
def _count_ahead(ahead, scores, slot, length, score_stride, slot_stride, start, stop, row_slot, row_threshold,
                 BLOCK: tl.constexpr):
    # adds, per (row, column lane), the columns in [start, stop) of the row's slot whose order exceeds the
    # row's threshold; per-lane counts are summed once at the end, not per step
    for begin in range(start, stop, BLOCK):
        cols = begin + tl.arange(0, BLOCK)
        inside = cols < length
        # lanes past the end get INT32_MIN, below every score: they rank above no row
        col_order = tl.where(inside, _score_order(scores, cols, inside, score_stride), -2147483647 - 1)
        col_slot = tl.load(slot + cols.to(tl.int64) * slot_stride, mask=inside, other=-1).to(tl.int32)
        ahead += ((col_slot[None, :] == row_slot[:, None]) & (col_order[None, :] > row_threshold)).to(tl.int32)
    return ahead

@triton.jit
def slot_keep_kernel(scores, slot, limits, keep, length, score_stride, slot_stride, limit_stride,
                     BLOCK: tl.constexpr):
    # keep[i] = rank of token i in its slot < limits[slot[i]], the rank counting the tokens j of the slot that
    # torch's stable descending sort puts first: a larger score, or an equal one at a lower position (j < i)
    row_start = tl.program_id(0) * BLOCK
    rows = row_start + tl.arange(0, BLOCK)
    row_inside = rows < length
    row_order = _score_order(scores, rows, row_inside, score_stride)
    # slots are below S, a tensor size: int32 holds them
    row_slot = tl.load(slot + rows.to(tl.int64) * slot_stride, mask=row_inside, other=0).to(tl.int32)
    ahead = tl.full([BLOCK, BLOCK], 0, tl.int32)
    # columns before every row of the block: an equal score ranks above (order >= row order; no overflow:
    # row orders are > INT32_MIN); columns after: only a larger one
    ahead = _count_ahead(ahead, scores, slot, length, score_stride, slot_stride, 0, row_start, row_slot,
                         row_order[:, None] - 1, BLOCK)
    ahead = _count_ahead(ahead, scores, slot, length, score_stride, slot_stride, row_start + BLOCK, length,
                         row_slot, row_order[:, None], BLOCK)
    # the block itself: an equal score ranks above when its position is lower
    lower = (tl.arange(0, BLOCK)[None, :] < tl.arange(0, BLOCK)[:, None]).to(tl.int32)
    ahead = _count_ahead(ahead, scores, slot, length, score_stride, slot_stride, row_start, row_start + BLOCK,
                         row_slot, row_order[:, None] - lower, BLOCK)
    rank = tl.reduce(ahead, 1, _SUM)
    limit = tl.load(limits + row_slot.to(tl.int64) * limit_stride, mask=row_inside, other=0)
    tl.store(keep + rows, (rank.to(tl.int64) < limit).to(tl.int8), mask=row_inside)

@triton.jit
def kept_positions_kernel(keep, out, length, count, BLOCK: tl.constexpr):
    # one program: the kept positions in order, a running count of the blocks before carrying the place
    lanes = tl.arange(0, BLOCK)
    kept = tl.full([1], 0, tl.int32)
    for start in range(0, length, BLOCK):
        positions = start + lanes
        flags = tl.load(keep + positions, mask=positions < length, other=0).to(tl.int32)
        place = kept + _cumsum(flags) - 1
        tl.store(out + place, positions.to(tl.int64), mask=(flags != 0) & (place < count))
        kept += _sum(flags)
    # torch pads the tokens not kept with L and sorts them last: places past the kept ones hold L
    for start in range(0, count, BLOCK):
        places = start + lanes
        tl.store(out + places, tl.full([BLOCK], 0, tl.int64) + length, mask=(places >= kept) & (places < count))
