"""Shared fixtures: hypothesis profiles and small random-weight thinkers."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings

# torch and seats_fx (transformers: ~10 s of imports here) are imported where a test process needs them, not at
# the top: pytest-xdist's controller process loads this file too, before it starts the workers, and runs no test

# Hypothesis profiles, chosen by SEATS_HYPOTHESIS_PROFILE: `dev` (the default: new random cases each run, so
# repeated local runs search further) and `ci` (derandomized: the same cases every run, so a CI failure
# reproduces with the same profile, and CI time does not vary with the draw). Both keep each test's own
# max_examples; the wide searches are in the slow tier and the fuzz.
_PROFILE_ENV = "SEATS_HYPOTHESIS_PROFILE"
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# ci also skips shrinking: each shrink step of an end-to-end case is another compiled run (one failing Qwen3-Omni
# generate case shrank for 11 minutes), and print_blob reproduces the failing case as drawn
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
                          print_blob=True, phases=[Phase.explicit, Phase.reuse, Phase.generate])
_profile = os.environ.get(_PROFILE_ENV, "ci" if os.environ.get("CI") else "dev")
if _profile not in ("dev", "ci"):
    raise pytest.UsageError(f"{_PROFILE_ENV} must be 'dev' or 'ci', got {_profile!r}")
settings.load_profile(_profile)

# one Inductor cache for the whole run (and for the tiers after it, which compile many of the same graphs);
# its keys cover everything that changes a compiled piece, so sharing it is safe. Set it to a fresh directory
# to measure cold compiles.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), ".cache", "inductor"))


def pytest_configure(config):
    """Under pytest-xdist (make test) each test process gets one core's worth of threads; SEATS_TEST_THREADS
    sets it for a process that shares the cores another way (CI runs the compat tier beside the slow tier)."""
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # xdist's controller: runs no test
    import torch

    threads = os.environ.get("SEATS_TEST_THREADS")
    torch.set_num_threads(int(threads) if threads else 1 if os.environ.get("PYTEST_XDIST_WORKER")
                          else max(1, min(2, torch.get_num_threads())))


# Cases moved from the default suite (`make test`, <= 5 min on 2 cores) to the slow tier (`make test-slow`, run
# by CI) for time: each costs a Dynamo trace of a whole thinker (20-60 s here) and repeats what a default case
# already checks with another option set, modality, dtype or entry point. Kept in one list so the split is
# reviewed in one place; a name without [...] takes every parametrization. Measured with --durations.
SLOW_FOR_TIME = (
    # one equivalence case per option family stays in the default suite: test_backend's property (3 examples),
    # one generate corner, one batch corner, one Qwen3-Omni prompt, the headline usage, glue counts, mutations
    "tests/e2e/test_backend.py::test_inductor_matches_reference_and_recompiles_at_most_once_over_three_lengths",
    "tests/e2e/test_backend.py::test_unsupported_decoder_is_left_untouched_with_one_log_line",
    "tests/e2e/test_backend.py::test_partial_clips_match_reference",
    "tests/e2e/test_backend.py::test_single_modality_prompts_match_reference[audio-only]",
    "tests/e2e/test_backend.py::test_bad_options_raise_with_the_known_ones",
    "tests/e2e/test_reliability.py::test_invalid_options_raise_value_error_naming_field_range_and_value[fusion-beyond-depth]",
    "tests/e2e/test_reliability.py::test_invalid_options_raise_value_error_naming_field_range_and_value[block-out-of-range]",
    "tests/e2e/test_reliability.py::test_invalid_options_raise_value_error_naming_field_range_and_value[switch-as-int]",
    "tests/e2e/test_reliability.py::test_very_short_audio_track_in_a_clip",
    "tests/e2e/test_reliability.py::test_half_precision_models_and_inputs_match_the_reference",
    "tests/e2e/test_reliability.py::test_training_is_never_pruned_and_gradients_are_the_models",
    "tests/e2e/test_reliability.py::test_no_grad_and_inference_mode_prune_alike",
    "tests/e2e/test_user_path.py::test_processor_inputs_run_pruned_and_match_the_reference",
    "tests/e2e/test_user_path.py::test_cli_report_writes_plots_and_a_summary",
    "tests/e2e/test_qwen3_omni.py::test_backend_matches_reference[video-only]",
    "tests/e2e/test_qwen3_omni.py::test_backend_matches_reference[audio-only]",
    "tests/e2e/test_qwen3_omni.py::test_backend_matches_reference[image-only]",
    "tests/e2e/test_qwen3_omni.py::test_batch_samples_keep_what_they_keep_alone",
    "tests/e2e/test_qwen3_omni.py::test_retention_one_generate_is_the_model",
    "tests/e2e/test_qwen3_omni.py::test_static_trace_of_the_moe_decoder_is_refused_with_the_fix",
    "tests/e2e/test_generate.py::test_continuing_a_prompt_over_a_pruned_cache_raises[ragged-cache]",
    "tests/e2e/test_generate.py::test_bare_compile_names_seats_fx_compile_when_generate_encodes_video_eagerly",
    "tests/e2e/test_generate.py::test_text_only_generate_is_untouched",
    "tests/e2e/test_torchao.py::test_quantized_thinker_matches_its_eager_reference",
    "tests/test_config.py::test_hash_is_the_same_in_another_process",
    # the mutation check of generate()'s decode positions: a generate compile of its own (its module's
    # Dynamo cache is not the generate tests'); the other mutants run in the default suite
    "tests/ops/test_mutations.py::test_a_decode_position_shift_is_caught_by_the_generate_test",
    # keep-everything in the default suite: test_generate.py::test_retention_one_generate_is_the_model (the
    # same untouched graphs through seats_fx.compile, every step's logits equal to the model's)
    "tests/e2e/test_headline_usage.py::test_retention_one_is_the_unpruned_model_exactly",
    # the headline usage with audio covers the towers in the graph; video-only clips: test_backend's property
    "tests/e2e/test_headline_usage.py::test_bare_torch_compile_prunes_a_clip_like_the_reference_and_warns_nothing"
    "[video-only]",
)


# Slow cases CI does not run (`make test-slow` and `make test-all` do): each repeats, with another option set,
# modality, dtype or model, a property CI checks on the case named beside it. CI's budget (35 min on 2 cores)
# goes to the 200-case searches, the Inductor cases and the cases with a claim of their own.
EXTENDED = (
    # Qwen3-Omni's one-modality prompts: its clip with audio (default suite, compat) and Qwen2.5-Omni's
    # one-modality prompts (test_backend.py)
    "tests/e2e/test_qwen3_omni.py::test_backend_matches_reference[video-only]",
    "tests/e2e/test_qwen3_omni.py::test_backend_matches_reference[audio-only]",
    "tests/e2e/test_qwen3_omni.py::test_backend_matches_reference[image-only]",
    # keep-everything: test_generate.py::test_retention_one_generate_is_the_model (default suite) and the
    # pipeline fuzz's retention 1.0 option (compat tier)
    "tests/e2e/test_qwen3_omni.py::test_retention_one_generate_is_the_model",
    "tests/e2e/test_headline_usage.py::test_retention_one_is_the_unpruned_model_exactly",
    # bf16 (the GPU dtype) runs; inference_mode runs (and every other equivalence case runs under no_grad)
    "tests/e2e/test_reliability.py::test_half_precision_models_and_inputs_match_the_reference[fp16]",
    "tests/e2e/test_reliability.py::test_no_grad_and_inference_mode_prune_alike[no_grad]",
    # a depth-derived range: [fusion-beyond-depth] runs
    "tests/e2e/test_reliability.py::test_invalid_options_raise_value_error_naming_field_range_and_value"
    "[block-out-of-range]",
    # the quantized thinker with Inductor runs
    "tests/e2e/test_torchao.py::test_quantized_thinker_matches_its_eager_reference[False]",
    # the headline usage with audio (default suite, compat); video-only clips: test_backend's property
    "tests/e2e/test_headline_usage.py::test_bare_torch_compile_prunes_a_clip_like_the_reference_and_warns_nothing"
    "[video-only]",
    # one-window audio and image-only prompts run in the default suite
    "tests/e2e/test_backend.py::test_single_modality_prompts_match_reference[audio-only]",
    # padded batches: [padded] (default suite) and [three-padded]
    "tests/e2e/test_batch.py::test_batch_generate_matches_each_sample_alone[equal-lengths]",
    # a text-only prompt through the backend: test_backend.py::test_text_only_prompt_is_left_unpruned
    "tests/e2e/test_generate.py::test_text_only_generate_is_untouched",
    # keep-everything with Inductor: the untouched graphs, lowered; every Inductor case CI runs lowers pieces,
    # and keep-everything runs through generate (default suite) and the fuzz's retention 1.0 option
    "tests/e2e/test_backend.py::test_keep_everything_equals_plain_inductor",
    # the warning naming seats_fx.compile when generate() encodes video eagerly: asserted by
    # test_headline_usage.py::test_model_compile_then_generate_prunes_with_the_signal_it_has_like_the_reference
    "tests/e2e/test_generate.py::test_bare_compile_names_seats_fx_compile_when_generate_encodes_video_eagerly",
    # an unknown option and late_block_layer past the depth: test_reliability.py's invalid-options cases
    # [unknown-key] (default suite) and [fusion-beyond-depth] (slow tier)
    "tests/e2e/test_backend.py::test_bad_options_raise_with_the_known_ones",
)


# The smoke subset `make test-compat` runs under the lowest and highest supported torch/transformers: each
# part that depends on what a release records or calls, once (graph metadata, locate, the bare and the
# Inductor backend, generate, a batch, a missing-metadata refusal, Qwen3-Omni). The other cases only repeat
# these with other options, and cost a whole-thinker trace each (about a minute on these CPUs).
COMPAT_SMOKE = (
    "tests/passes/test_dynamo_meta.py",
    # Dynamo marks code FX generates while it compiles as never to trace (the pieces ran eagerly under 2.11)
    "tests/passes/test_piece_lowering.py",
    # Dynamo's float specialization, scoped to seats_fx.compile's compiles (the stock image's torch is 2.11)
    "tests/test_float_constants.py",
    # where transformers keeps get_placeholder_mask, and whether a new clip length still compiles a graph
    "tests/models/test_placeholder_mask.py",
    # Qwen3-Omni's positions against the installed transformers' own get_rope_index
    "tests/models/test_qwen3_rope_index.py",
    "tests/e2e/test_new_clip_length.py",
    # what the decoder pieces take and return (module state, lifted floats, caches) decides what a CUDA graph
    # of one reads in place, copies and hands out; transformers 5.17 writes one-width caches
    "tests/e2e/test_cuda_graph_pieces.py::test_generate_over_a_replayed_prefill_matches_the_reference",
    # under inference_mode a piece is recorded only if its graph has no in-place op: what transformers' decoder
    # layer records, per release
    "tests/passes/test_in_place.py::test_traced_decoders_write_no_input",
    "tests/passes/test_locate.py::test_locate_finds_every_layer_and_the_per_token_inputs[False]",
    "tests/passes/test_locate.py::test_locate_finds_modality_taps_and_encoder_attention",
    "tests/e2e/test_backend.py::test_kept_indices_and_logits_match_reference_without_inductor[drops-3-5]",
    "tests/e2e/test_backend.py::test_kept_indices_and_logits_match_reference_with_inductor[no-stage3]",
    "tests/e2e/test_batch.py::test_each_sample_keeps_what_it_keeps_alone[drops-3-5-text-video-image]",
    "tests/e2e/test_generate.py::test_greedy_tokens_step_logits_and_cache_match_the_reference_decoder"
    "[drops-3-5-fusion-7-2s]",
    "tests/e2e/test_headline_usage.py::test_bare_torch_compile_prunes_a_clip_like_the_reference_and_warns_nothing"
    "[with-audio]",
    "tests/e2e/test_headline_usage.py::test_bare_torch_compile_with_inductor_prunes_like_the_reference",
    "tests/e2e/test_headline_usage.py::test_missing_graph_metadata_is_never_a_silent_no_op",
    # the towers' per-segment attention graphs differ between transformers releases: one call per layer in each
    "tests/e2e/test_headline_usage.py::test_bare_torch_compile_makes_one_attention_call_per_encoder_layer",
    "tests/e2e/test_qwen3_omni.py::test_backend_matches_reference[clip-with-audio]",
    "tests/e2e/test_qwen3_omni.py::test_backend_with_the_towers_in_the_graph_matches_reference",
    # how Dynamo splits Qwen3-Omni's decoder at the deepstack step (one graph per layer) and what the layer
    # graphs take as inputs differ between releases; transformers 5.17 shares one decode mask by all layers
    "tests/e2e/test_layer_graphs.py::test_headline_usage_prunes_qwen3_layer_graphs_like_the_reference_and_warns_nothing"
    "[with-audio]",
    "tests/e2e/test_layer_graphs.py::test_model_compile_then_generate_prunes_qwen3_like_the_reference",
)


def _listed(nodeid: str, names: tuple[str, ...]) -> bool:
    """True when a list names the case itself, its test (every parametrization) or its file."""
    nodeid = nodeid.split("@")[0]  # pytest-xdist's --dist loadgroup appends "@<group>"
    return nodeid in names or nodeid.split("[")[0] in names or nodeid.split("::")[0] in names


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _listed(item.nodeid, SLOW_FOR_TIME):
            item.add_marker(pytest.mark.slow)
        if _listed(item.nodeid, COMPAT_SMOKE):
            item.add_marker(pytest.mark.compat)
        if _listed(item.nodeid, EXTENDED):
            item.add_marker(pytest.mark.extended)


def pytest_runtest_setup(item):
    """Under `--dist loadgroup` (make test-slow), fails a grouped case that pytest-xdist did not tag with its
    group: each group would be split across the processes, and its shared compiled models built in each."""
    if getattr(item.config.option, "loadgroup", False) and item.get_closest_marker("xdist_group") is not None \
            and "@" not in item.nodeid:
        import xdist

        pytest.fail(f"pytest-xdist {xdist.__version__} did not put this case in its xdist_group under pytest "
                    f"{pytest.__version__}: see the pytest pin in pyproject.toml", pytrace=False)


@pytest.fixture(scope="session")
def tiny_thinker():
    """A tiny random-weight Qwen2.5-Omni thinker (8 layers) in eval mode."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from seats_fx.models.configs import tiny_qwen2_5_omni_config

    import torch

    torch.manual_seed(0)
    return Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config()).eval()


@pytest.fixture(autouse=True)
def _fresh_seats_state():
    """Each test starts without stats of an earlier call; Dynamo may hold many compiled variants."""
    import torch._dynamo

    from seats_fx.runtime import set_last_stats

    # many option sets compile the same code objects; past these limits Dynamo reuses any cached graph,
    # whichever backend built it (RUN_ONLY), and results would cross between option sets
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.accumulated_recompile_limit = 100_000
    set_last_stats(None)
    yield


@pytest.fixture(autouse=True, scope="module")
def _dynamo_cache_per_module():
    """Each test module leaves Dynamo's cache empty: every thinker compiled in a process adds entries to code
    objects they all share (transformers' decorator wrappers), and over a whole tier one process passed
    recompile_limit there, after which Dynamo runs such frames without seats (measured: a fuzz shard and the
    CLI report test then found no seats prefill). A module's compiled models recompile if a later module
    calls them again."""
    import torch._dynamo

    yield
    torch._dynamo.reset()


@pytest.fixture(scope="session")
def thinker_eager_towers(tiny_thinker):
    """tiny_thinker's weights, towers run eagerly (towers_run_eagerly): the decoder-selection tests' model."""
    from eager_towers import fresh_copy, towers_run_eagerly  # tests/ is on sys.path (rootdir conftest)

    return towers_run_eagerly(fresh_copy(tiny_thinker))


@pytest.fixture(scope="session")
def tiny_qwen3():
    """A tiny random-weight Qwen3-Omni MoE thinker (8 layers, deepstack and experts kept) in eval mode."""
    from transformers import Qwen3OmniMoeThinkerForConditionalGeneration

    from seats_fx.models.configs import tiny_qwen3_omni_moe_config

    import torch

    torch.manual_seed(0)
    return Qwen3OmniMoeThinkerForConditionalGeneration(tiny_qwen3_omni_moe_config()).eval()
