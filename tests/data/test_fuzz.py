"""Mutation fuzzing of the readers and the importer (the CI-sized slice of ``mammocad bench fuzz``)."""

from __future__ import annotations

import os

from mammocad.benchmarks.fuzz import mutate, run_fuzz, write_seeds
from mammocad.data.images import read_image

# The default keeps the suite fast; a soak: MAMMOCAD_FUZZ_EXAMPLES=100000 (or `mammocad bench fuzz`).
CASES = int(os.environ.get("MAMMOCAD_FUZZ_EXAMPLES", "2000"))


def test_every_mutated_file_is_read_or_refused_never_a_crash(tmp_path):
    result = run_fuzz(CASES, seed=7, keep_dir=tmp_path / "crashes")
    assert result["crashes"] == 0, result["crash_cases"]
    assert result["cases"] == CASES
    refused = sum(n for outcome, n in result["outcomes"].items() if outcome.startswith("refused"))
    assert result["outcomes"].get("ok", 0) > 0 and refused > CASES // 4  # both paths were exercised
    assert result["import"].startswith(("ok", "refused"))  # the batch import finished or refused cleanly
    assert result["peak_rss_spikes"] == []  # no mutated header made a decoder allocate beyond the budget


def test_seeds_cover_every_format_and_mutations_change_them(tmp_path):
    seeds = write_seeds(tmp_path)
    suffixes = {path.suffix for path in seeds}
    assert {".png", ".jpg", ".tif", ".bmp", ".pgm", ".dcm"} <= suffixes
    for path in seeds:
        if not path.name.startswith(("bomb", "panic", "corrupt", "truncated")):
            assert read_image(path).pixels.size > 0  # valid seeds are valid
    import numpy as np

    rng = np.random.default_rng(0)
    data = seeds[0].read_bytes()
    changed = [mutate(data, rng)[0] != data for _ in range(20)]
    assert sum(changed) >= 18
