"""Independent oracles for what SEATS adds, written from the definitions in /work/shared/design/SEATS.md.

No oracle here calls the code it checks: stage-2 budgets (window softmax with a temperature -> window budgets
-> modality split -> top-k per group) and greedy max-min diversity are plain Python loops over floats; the
stage-1 grouping oracle runs `diversity_select` once per (window, modality) group (the op it groups, itself
checked against the loops here); the encoder weights are recomputed from the last encoder layers' own q/k with
an explicit softmax per attention segment. tests/ops/test_mutations.py breaks the code on purpose and checks
that these tests notice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import assume, currently_in_test_context, example, given, settings
from hypothesis import strategies as st

from seats_fx.ops import diversity
from seats_fx.ops.budget import AUDIO, VIDEO, window_modality_budgets
from seats_fx.ops.stage_select import stage1_keep_index, stage2_keep_index

TEXT = 0
# two floats closer than this are a tie the definitions leave open; such cases are skipped, not guessed
TIE = 1e-9


def _decided(tie: bool) -> None:
    """Skips a generated case the definition leaves open; a fixed corner must not be one."""
    if currently_in_test_context():
        assume(not tie)
    elif tie:  # not an AssertionError: the mutation check must not count it as a detection
        pytest.fail("this corner is a tie the definition leaves open: pick another seed")


# ---- stage 2: the definition, as loops ---------------------------------------------------------------
@dataclass(frozen=True)
class Stage2Case:
    """A sequence entering a stage-2 step: per token relevance, modality and window id (-1 for text)."""

    relevance: tuple[float, ...]
    modality: tuple[int, ...]
    window: tuple[int, ...]
    num_windows: int
    video_keep: int
    audio_keep: int
    temperature: float

    def tensors(self):
        return (torch.tensor(self.relevance, dtype=torch.float64), torch.tensor(self.modality),
                torch.tensor(self.window))

    def members(self, window: int, kind: int) -> list[int]:
        return [i for i, (m, w) in enumerate(zip(self.modality, self.window)) if m == kind and w == window]


def _softmax_over_present(means: list[float | None], temperature: float) -> list[float]:
    """softmax(mean / T) over the windows holding the modality; 0 for the others (and all 0 if none does)."""
    present = [m for m in means if m is not None]
    if not present:
        return [0.0] * len(means)
    top = max(present)
    exps = [0.0 if m is None else math.exp((m - top) / temperature) for m in means]
    return [e / sum(exps) for e in exps]


def _nearest_integer_budgets(targets: list[float], lower: list[int], upper: list[int],
                             total: int) -> tuple[list[int], bool]:
    """Brute force over every integer vector with lower <= b <= upper and sum(b) == total: returns the one
    nearest to `targets` (squared distance) and whether another one is as near (a tie).

    "round each target, then move single tokens towards the largest remaining gap until the sum is exact"
    ends at exactly this vector (the cost is convex and separable, so one-token moves reach its minimum)."""
    best: list[tuple[float, list[int]]] = []

    def extend(prefix: list[int], left: int) -> None:
        i = len(prefix)
        if i == len(targets):
            if left == 0:
                best.append((sum((b - t) ** 2 for b, t in zip(prefix, targets)), prefix))
            return
        room_after = sum(upper[i + 1:])
        for b in range(lower[i], min(upper[i], left) + 1):
            if left - b <= room_after and left - b >= sum(lower[i + 1:]):
                extend(prefix + [b], left - b)

    extend([], total)
    best.sort(key=lambda entry: entry[0])
    tie = len(best) > 1 and best[1][0] - best[0][0] < 1e-7
    return best[0][1], tie


def oracle_window_budgets(case: Stage2Case) -> tuple[list[tuple[int, int]], bool]:
    """Returns SEATS.md's [video, audio] budgets per window and whether the definition leaves a tie open.

    Window weight = (softmax(video means / T) + softmax(audio means / T)) / 2; window budget: the integers
    nearest to weight * total, at least 1 per window holding tokens (when the total allows it), at most the
    window's size; split: video share w_v*vk / (w_v*vk + w_a*ak), rounded, clamped to each side's size with
    the leftover to the other side, and at least one token of each modality the window holds.
    """
    windows = range(case.num_windows)
    video = [case.members(w, VIDEO) for w in windows]
    audio = [case.members(w, AUDIO) for w in windows]
    mean = lambda ids: sum(case.relevance[i] for i in ids) / len(ids) if ids else None
    video_weight = _softmax_over_present([mean(ids) for ids in video], case.temperature)
    audio_weight = _softmax_over_present([mean(ids) for ids in audio], case.temperature)
    total = case.video_keep + case.audio_keep
    weight = [(v + a) / 2 for v, a in zip(video_weight, audio_weight)]
    sizes = [len(v) + len(a) for v, a in zip(video, audio)]
    occupied = sum(1 for size in sizes if size)
    lower = [1 if size and total >= occupied else 0 for size in sizes]
    budgets, tie = _nearest_integer_budgets([w * total for w in weight], lower, sizes, total)
    split = []
    for w, budget in enumerate(budgets):
        nv, na = len(video[w]), len(audio[w])
        claim_v, claim_a = video_weight[w] * case.video_keep, audio_weight[w] * case.audio_keep
        share = claim_v / (claim_v + claim_a) if claim_v + claim_a > 0 else float(nv > 0)
        exact = budget * share
        tie |= abs(exact - math.floor(exact) - 0.5) < TIE
        v = min(round(exact), nv)
        if budget - v > na:  # audio cannot take its share: the leftover goes to video
            v = budget - na
        if nv and na and budget >= 2:  # at least one of each modality the window holds
            v = min(max(v, 1), budget - 1)
        split.append((v, budget - v))
    return split, tie


def _top(case: Stage2Case, ids: list[int], count: int) -> tuple[list[int], bool]:
    """The `count` most relevant of `ids` (ties: lower position), and whether a tie decided the cut."""
    ranked = sorted(ids, key=lambda i: (-case.relevance[i], i))
    tie = 0 < count < len(ranked) and abs(case.relevance[ranked[count - 1]] - case.relevance[ranked[count]]) < TIE
    return ranked[:count], tie


def oracle_stage2_kept(case: Stage2Case) -> tuple[list[int], bool]:
    """Returns the sorted positions SEATS.md keeps at a stage-2 step, and whether a tie decided any of them.

    Text is never dropped. With a single window holding tokens, or with one modality absent from the whole
    sequence, the rule is plain top-k per modality; otherwise the window budgets above, then top-k inside
    each (window, modality) group.
    """
    text = [i for i, m in enumerate(case.modality) if m == TEXT]
    videos = [i for i, m in enumerate(case.modality) if m == VIDEO]
    audios = [i for i, m in enumerate(case.modality) if m == AUDIO]
    occupied = {w for w, m in zip(case.window, case.modality) if m != TEXT}
    if len(occupied) <= 1 or not videos or not audios:
        top_video, video_tie = _top(case, videos, case.video_keep)
        top_audio, audio_tie = _top(case, audios, case.audio_keep)
        return sorted(text + top_video + top_audio), video_tie or audio_tie
    budgets, tie = oracle_window_budgets(case)
    kept = list(text)
    for w, (video_budget, audio_budget) in enumerate(budgets):
        for kind, budget in ((VIDEO, video_budget), (AUDIO, audio_budget)):
            chosen, cut_tie = _top(case, case.members(w, kind), budget)
            kept += chosen
            tie |= cut_tie
    return sorted(kept), tie


# ---- stage 2: cases ----------------------------------------------------------------------------------
TEMPERATURES = (0.02, 0.1, 0.3, 1.0, 5.0)


def _case(groups: list[tuple[int, int]], seed: int, temperature: float, keep: tuple[float, float],
          spread: float = 1.0, text: tuple[int, int] = (2, 2)) -> Stage2Case:
    """groups: (video, audio) token counts per window ((0, 0): an empty window, as after earlier drops).
    Window w's relevance is drawn around a level of its own (spread), so the windows weigh differently."""
    gen = torch.Generator().manual_seed(seed)
    levels = (torch.rand(len(groups), generator=gen, dtype=torch.float64) * spread).tolist()
    relevance, modality, window = [], [], []
    for _ in range(text[0]):
        relevance.append(float(torch.rand(1, generator=gen, dtype=torch.float64)))
        modality.append(TEXT)
        window.append(-1)
    for w, (nv, na) in enumerate(groups):
        for kind, count in ((VIDEO, nv), (AUDIO, na)):
            for _ in range(count):
                relevance.append(levels[w] + 0.3 * float(torch.rand(1, generator=gen, dtype=torch.float64)))
                modality.append(kind)
                window.append(w)
    for _ in range(text[1]):
        relevance.append(float(torch.rand(1, generator=gen, dtype=torch.float64)))
        modality.append(TEXT)
        window.append(-1)
    n_video, n_audio = sum(v for v, _ in groups), sum(a for _, a in groups)
    video_keep = max(1, min(n_video, round(keep[0] * n_video))) if n_video else 0
    audio_keep = max(1, min(n_audio, round(keep[1] * n_audio))) if n_audio else 0
    return Stage2Case(tuple(relevance), tuple(modality), tuple(window), len(groups), video_keep, audio_keep,
                      temperature)


# corners: distinct window levels at several temperatures, an empty window between occupied ones,
# one-modality windows, a budget smaller than the number of windows, keep-everything
STAGE2_CORNERS = [
    _case([(4, 4), (4, 4), (4, 4)], seed=1, temperature=0.05, keep=(0.5, 0.5), spread=0.3),
    _case([(4, 4), (4, 4), (4, 4)], seed=1, temperature=0.1, keep=(0.5, 0.5), spread=0.3),
    _case([(4, 4), (4, 4), (4, 4)], seed=1, temperature=0.3, keep=(0.5, 0.5), spread=0.3),
    _case([(5, 3), (0, 0), (2, 6), (4, 4)], seed=2, temperature=0.1, keep=(0.4, 0.3)),
    _case([(6, 0), (0, 5), (3, 3)], seed=3, temperature=0.3, keep=(0.5, 0.6)),
    _case([(3, 3), (3, 3), (3, 3), (3, 3)], seed=4, temperature=0.1, keep=(0.1, 0.1)),
    _case([(2, 2), (3, 1)], seed=5, temperature=0.1, keep=(1.0, 1.0)),
    _case([(6, 6), (6, 6)], seed=6, temperature=5.0, keep=(0.3, 0.7)),
]


@st.composite
def stage2_cases(draw, both_modalities: bool = True):
    """Sequences with 1-4 windows of up to 5 video and 5 audio tokens each (empty and one-modality windows
    included), at one of several temperatures and keep fractions."""
    groups = draw(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=4))
    if both_modalities:
        assume(sum(v for v, _ in groups) and sum(a for _, a in groups))
    else:  # one modality absent from the whole sequence
        absent = draw(st.sampled_from([0, 1]))
        groups = [(0, a) if absent == 0 else (v, 0) for v, a in groups]
        assume(sum(v + a for v, a in groups))
    return _case(groups, draw(st.integers(0, 2 ** 31 - 1)), draw(st.sampled_from(TEMPERATURES)),
                 (draw(st.floats(0.05, 1.0)), draw(st.floats(0.05, 1.0))), spread=draw(st.sampled_from([0.05, 1.0])),
                 text=(draw(st.integers(0, 3)), draw(st.integers(1, 3))))


def _total_between_occupied_and_all_windows(case: Stage2Case) -> bool:
    """The budget covers every window holding tokens but not every window id (some are empty)."""
    occupied = len({w for w, m in zip(case.window, case.modality) if m != TEXT})
    return occupied <= case.video_keep + case.audio_keep < case.num_windows


def check_stage2_budgets(case: Stage2Case) -> None:
    expected, tie = oracle_window_budgets(case)
    _decided(tie)
    relevance, modality, window = case.tensors()
    got = window_modality_budgets(relevance, modality, window, case.num_windows, case.video_keep,
                                  case.audio_keep, case.temperature)
    assert got.tolist() == [list(pair) for pair in expected], case


def check_stage2_kept(case: Stage2Case) -> None:
    expected, tie = oracle_stage2_kept(case)
    _decided(tie)
    relevance, modality, window = case.tensors()
    got = stage2_keep_index(relevance, modality, window, case.num_windows, case.video_keep, case.audio_keep,
                            case.temperature)
    assert got.tolist() == expected, case


def test_stage2_corner_budgets_on_the_definition():
    """Fixed corners, every run (and what the mutation check runs under a broken op); a failure names its case."""
    for case in STAGE2_CORNERS:
        check_stage2_budgets(case)
        check_stage2_kept(case)


def test_the_corners_depend_on_temperature_and_relevance():
    """The oracle itself must see the knobs, or agreeing with it would prove nothing: the first three
    corners differ only in temperature and get different budgets; uniform window weights would give others."""
    budgets = [oracle_window_budgets(case)[0] for case in STAGE2_CORNERS[:3]]
    assert budgets[0] != budgets[1] and budgets[0] != budgets[2], budgets
    flat = Stage2Case(*[getattr(STAGE2_CORNERS[0], f) for f in ("relevance", "modality", "window", "num_windows",
                                                                "video_keep", "audio_keep")], temperature=1e6)
    assert oracle_window_budgets(flat)[0] != budgets[0]


@settings(max_examples=150)
@given(stage2_cases())
def test_stage2_budgets_and_kept_tokens_equal_the_brute_force_definition(case):
    check_stage2_budgets(case)
    check_stage2_kept(case)


def test_empty_windows_do_not_cancel_at_least_one_per_occupied_window():
    """Two windows hold tokens, four window ids exist, the total is 2: each occupied window gets one token
    (a rule counting every window id, empty ones included, would give the best window both)."""
    case = _case([(3, 3), (0, 0), (0, 0), (3, 3)], seed=2, temperature=0.1, keep=(0.2, 0.2))
    assert _total_between_occupied_and_all_windows(case)
    check_stage2_budgets(case)
    check_stage2_kept(case)
    assert [sum(pair) for pair in oracle_window_budgets(case)[0]] == [1, 0, 0, 1]


@settings(max_examples=50)
@given(stage2_cases(), st.integers(0, 3))
def test_stage2_with_a_single_occupied_window_is_plain_top_k_per_modality(case, keep_window):
    # empty every window but one (as earlier drops can): the window split must reduce to top-k per modality
    keep_window = keep_window % case.num_windows
    kept = [i for i, (m, w) in enumerate(zip(case.modality, case.window)) if m == TEXT or w == keep_window]
    modality = tuple(case.modality[i] for i in kept)
    assume(VIDEO in modality and AUDIO in modality)
    n_video, n_audio = modality.count(VIDEO), modality.count(AUDIO)
    case = Stage2Case(tuple(case.relevance[i] for i in kept), modality, tuple(case.window[i] for i in kept),
                      case.num_windows, min(case.video_keep, n_video), min(case.audio_keep, n_audio),
                      case.temperature)
    check_stage2_kept(case)


@settings(max_examples=30)
@given(stage2_cases(both_modalities=False))
@example(_case([(6, 0), (6, 0), (6, 0)], seed=7, temperature=0.1, keep=(0.3, 0.3)))
def test_stage2_with_one_modality_absent_is_plain_top_k_over_all_windows(case):
    check_stage2_kept(case)


# ---- greedy max-min diversity: the definition, as loops ----------------------------------------------
def oracle_max_min(embeds: list[list[float]], weights: list[float], k: int) -> tuple[list[int], bool]:
    """Returns the sorted picks of SEATS.md's greedy max-min and whether a near-tie decided a pick.

    d(s, c) = (1 - cos(x_s, x_c)) * a_c. First pick: the token whose nearest other token is farthest; then,
    k - 1 times, the token whose smallest distance to the picks is largest; ties: the lower index.
    """
    n = len(embeds)
    if k >= n:
        return list(range(n)), False
    norm = [math.sqrt(sum(v * v for v in x)) for x in embeds]

    def distance(s: int, c: int) -> float:
        cosine = sum(p * q for p, q in zip(embeds[s], embeds[c])) / max(norm[s] * norm[c], 1e-300)
        return max(0.0, 1.0 - cosine) * weights[c]

    # the op compares distances on a grid of 2**-14 of the largest weight: closer values are a tie
    resolution = 2.0 * 2.0 ** -14 * max(weights) + 1e-12
    tie = False

    def pick(scores: dict[int, float]) -> int:
        nonlocal tie
        order = sorted(scores, key=lambda c: (-scores[c], c))
        if len(order) > 1 and scores[order[0]] - scores[order[1]] < resolution:
            tie = True
        return order[0]

    first = pick({c: min(distance(s, c) for s in range(n) if s != c) for c in range(n)} if n > 1 else {0: 0.0})
    chosen = [first]
    while len(chosen) < k:
        chosen.append(pick({c: min(distance(s, c) for s in chosen) for c in range(n) if c not in chosen}))
    return sorted(chosen), tie


def _group(seed: int, n: int, dim: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=gen), torch.rand(n, generator=gen) + 0.05


def check_max_min(embeds: torch.Tensor, weights: torch.Tensor, k: int) -> None:
    expected, tie = oracle_max_min(embeds.double().tolist(), weights.double().tolist(), k)
    _decided(tie)
    got = diversity.diversity_select(embeds[None], weights[None], k)[0].tolist()
    assert got == expected, (k, weights.tolist())


# corners: weights that change the picks (checked below), k = 1, k = n - 1, duplicate tokens
MAX_MIN_CORNERS = [(seed, n, k) for seed, n, k in ((11, 6, 2), (12, 7, 3), (13, 5, 1), (14, 6, 5), (15, 8, 4))]


def test_max_min_corners_on_the_definition():
    for seed, n, k in MAX_MIN_CORNERS:
        check_max_min(*_group(seed, n), k)


def test_the_max_min_corners_depend_on_the_weights():
    changed = [oracle_max_min(e.double().tolist(), w.double().tolist(), k)[0]
               != oracle_max_min(e.double().tolist(), [1.0] * n, k)[0]
               for (seed, n, k), (e, w) in ((c, _group(*c[:2])) for c in MAX_MIN_CORNERS)]
    assert sum(changed) >= 2, changed


@settings(max_examples=150)
@given(st.integers(1, 7), st.data(), st.integers(0, 2 ** 31 - 1), st.sampled_from([2, 6]))
def test_diversity_select_equals_the_greedy_max_min_definition(n, data, seed, dim):
    k = data.draw(st.integers(1, n))
    embeds, weights = _group(seed, n, dim)
    if data.draw(st.booleans()) and n >= 3:  # an exact duplicate: its distance to the original is 0
        embeds[2] = embeds[0]
    check_max_min(embeds, weights, k)


# ---- stage 1: grouping per window x modality ---------------------------------------------------------
def _level_count(level: float, size: int) -> int:
    """SEATS.md: keep max(1, round(level * size)) of a group, never more than it holds."""
    return max(1, min(size, round(level * size)))


def oracle_stage1_kept(embeds: torch.Tensor, weights: torch.Tensor, modality: list[int], window: list[int],
                       levels: dict[int, float]) -> list[int]:
    """Returns all text plus, for each (window, modality) group on its own, the attention-weighted max-min
    picks of diversity_select over that group's embeddings and encoder weights."""
    kept = [i for i, m in enumerate(modality) if m == TEXT]
    for group in sorted({(w, m) for w, m in zip(window, modality) if m != TEXT}):
        members = [i for i, (m, w) in enumerate(zip(modality, window)) if (w, m) == group]
        index = torch.tensor(members)
        picks = diversity.diversity_select(embeds[index][None], weights[index][None],
                                           _level_count(levels[group[1]], len(members)))[0]
        kept += [members[p] for p in picks.tolist()]
    return sorted(kept)


def _stage1_layout(groups: list[tuple[int, int]], seed: int, dim: int = 8):
    modality, window = [TEXT, TEXT], [-1, -1]
    for w, (nv, na) in enumerate(groups):
        modality += [VIDEO] * nv + [AUDIO] * na
        window += [w] * (nv + na)
    modality += [TEXT] * 3
    window += [-1] * 3
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(len(modality), dim, generator=gen), torch.rand(len(modality), generator=gen) + 0.05,
            modality, window)


def check_stage1(groups, seed, video_level, audio_level) -> None:
    embeds, weights, modality, window = _stage1_layout(groups, seed)
    levels = {VIDEO: video_level, AUDIO: audio_level}
    got = stage1_keep_index(embeds, weights, torch.tensor(modality), torch.tensor(window), levels)
    assert got.tolist() == oracle_stage1_kept(embeds, weights, modality, window, levels), groups


# corners: equal-sized groups (batched together by the op), one-modality windows, a group of one token
STAGE1_CORNERS = [
    ([(6, 6), (6, 6), (6, 6)], 21, 0.34, 0.34),
    ([(8, 5), (0, 7), (6, 0)], 22, 0.25, 0.5),
    ([(1, 9), (9, 1)], 23, 0.5, 0.3),
    ([(10, 10)], 24, 0.2, 0.2),
]


def test_stage1_corners_on_the_definition():
    for corner in STAGE1_CORNERS:
        check_stage1(*corner)


@settings(max_examples=100)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=4),
       st.integers(0, 2 ** 31 - 1), st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_stage1_keeps_text_and_each_groups_own_weighted_max_min_picks(groups, seed, video_level, audio_level):
    check_stage1(groups, seed, video_level, audio_level)


# ---- stage-1 weights: attention received in the encoders' last layers --------------------------------
def _received(q: torch.Tensor, k: torch.Tensor, bounds: list[int], scaling: float) -> torch.Tensor:
    """(n,) attention each token receives: per segment, softmax over keys of q·k * scaling for every head
    and query, then the mean over heads and over the segment's queries. Written out per segment."""
    out = torch.zeros(q.shape[0], dtype=torch.float64)
    for start, end in zip(bounds[:-1], bounds[1:]):
        qs, ks = q[start:end].double(), k[start:end].double()  # (m, H, hd)
        logits = torch.einsum("qhd,khd->hqk", qs, ks) * scaling
        probs = torch.exp(logits - logits.amax(-1, keepdim=True))
        probs = probs / probs.sum(-1, keepdim=True)
        out[start:end] = probs.sum(dim=(0, 1)) / (probs.shape[0] * probs.shape[1])
    return out


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def _capture(module: torch.nn.Module, outputs: bool = False):
    """Records the (args, kwargs) of every call of `module` (or its outputs); returns (records, handle)."""
    records = []
    if outputs:
        handle = module.register_forward_hook(lambda mod, args, out: records.append(out))
    else:
        handle = module.register_forward_pre_hook(lambda mod, args, kwargs: records.append((args, kwargs)),
                                                  with_kwargs=True)
    return records, handle


def _first_input(args: tuple, kwargs: dict) -> tuple[torch.Tensor, dict]:
    return (args[0] if args else kwargs["hidden_states"]), kwargs


@torch.no_grad()
def oracle_token_weights(model, inputs: dict) -> torch.Tensor:
    """Returns (L,) SEATS.md's stage-1 weights of one prompt: 0 for text; an audio token gets the mean of the
    2 encoder frames it pools; a video token the mean of its 2x2 patches. The model runs once, eagerly; the
    attention is recomputed here from its last encoder layers' inputs."""
    audio_attn = model.model.audio_tower.layers[-1].self_attn
    vision_attn = model.model.visual.blocks[-1].attn
    audio_calls, audio_handle = _capture(audio_attn)
    vision_calls, vision_handle = _capture(vision_attn)
    merged_rows, merger_handle = _capture(model.model.visual.merger, outputs=True)
    try:
        with torch.no_grad():
            pooled = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"],
                                                    return_dict=True).pooler_output
            model.model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"],
                                           return_dict=True)
    finally:
        for handle in (audio_handle, vision_handle, merger_handle):
            handle.remove()
    weights = torch.zeros(inputs["input_ids"].shape[1], dtype=torch.float64)
    ids = inputs["input_ids"][0]

    hidden, kwargs = _first_input(*audio_calls[-1])
    heads = audio_attn.num_heads
    q = audio_attn.q_proj(hidden).view(hidden.shape[0], heads, -1)
    k = audio_attn.k_proj(hidden).view(hidden.shape[0], heads, -1)
    frames = _received(q, k, kwargs["cu_seqlens"].tolist(), q.shape[-1] ** -0.5)
    audio_positions = torch.nonzero(ids == model.config.audio_token_id).flatten()
    # one audio: token t pools encoder frames 2t and 2t + 1 (the tower's stride-2 average pooling)
    for t, position in enumerate(audio_positions.tolist()):
        weights[position] = (frames[2 * t] + frames[2 * t + 1]) / 2

    hidden, kwargs = _first_input(*vision_calls[-1])
    heads = vision_attn.num_heads
    cos, sin = kwargs["position_embeddings"]
    q = _rotate(vision_attn.q(hidden).view(hidden.shape[0], heads, -1).float(), cos.float(), sin.float())
    k = _rotate(vision_attn.k(hidden).view(hidden.shape[0], heads, -1).float(), cos.float(), sin.float())
    patches = _received(q, k, kwargs["cu_seqlens"].tolist(), q.shape[-1] ** -0.5)
    per_token = patches.view(-1, 4).mean(dim=1)  # the merger's rows, in the tower's window order
    # the order the LLM sees: match the tower's output rows to the merger's (found, not recomputed)
    merged, final = merged_rows[-1], torch.cat(list(pooled))
    order = torch.cdist(final.double(), merged.double()).argmin(dim=1)
    assert torch.equal(torch.sort(order).values, torch.arange(len(order))), "merger rows do not match the output"
    video_positions = torch.nonzero(ids == model.config.video_token_id).flatten()
    weights[video_positions] = per_token[order]
    return weights


def weight_clip_inputs(config) -> dict:
    """224 px wide: two vision windows per frame, so the tower's window order differs from the LLM's;
    4 s of audio: two attention segments (chunks) in the audio tower."""
    from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs

    return synthetic_clip_inputs(config, ClipSpec(video_seconds=4, height=112, width=224, seed=9))


@pytest.fixture(scope="module")
def weight_clip(tiny_thinker):
    return weight_clip_inputs(tiny_thinker.config)


def test_encoder_weights_are_the_attention_received_in_the_last_encoder_layers(tiny_thinker, weight_clip):
    from seats_fx.models import adapter_for

    expected = oracle_token_weights(tiny_thinker, weight_clip)
    got = adapter_for(tiny_thinker).encode(weight_clip, 2.0).token_weights[0]
    media = (weight_clip["input_ids"][0] == tiny_thinker.config.video_token_id) | \
        (weight_clip["input_ids"][0] == tiny_thinker.config.audio_token_id)
    assert bool((got[~media] == 0).all())
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-5)
    # the weights must differ between tokens, or the test above could not see a wrong order or pooling
    assert float(expected[media].std()) > 1e-3 * float(expected[media].mean())
