"""Query-image degradations (core/degrade.py, `reloc eval --degrade`): reproducible, as specified, query only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reloc_ros.core.degrade import PRESETS, degrade, parse_presets


def _image(h=96, w=128):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_presets_are_seeded_per_image_and_keep_the_format():
    img = _image()
    for p in PRESETS:
        a, b = degrade(img, (p,), 3, "q1"), degrade(img, (p,), 3, "q1")
        assert a.shape == img.shape and a.dtype == np.uint8 and np.array_equal(a, b), p
    assert not np.array_equal(degrade(img, ("night",), 3, "q1"), degrade(img, ("night",), 3, "q2"))
    grey = img[:, :, 0]
    assert degrade(grey, ("dusk",), 0, "g").shape == grey.shape


def test_dusk_and_night_follow_their_tone_curves():
    """On a flat grey image (no blur or light effects at its centre) the mean follows x' = s x^g times the
    channel gains (RGB order here: the presets' gains are given in BGR), plus noise and JPEG."""
    x = 0.8
    flat = np.full((64, 64, 3), round(255 * x), np.uint8)
    for name, s, g, gains_bgr in (("dusk", 0.30, 1.4, (0.75, 0.95, 1.15)), ("night", 0.12, 1.6, (0.7, 0.9, 1.2))):
        out = degrade(flat, (name,), 0, "flat").astype(np.float64) / 255.0
        want = s * (round(255 * x) / 255.0) ** g * np.array(gains_bgr[::-1])
        if name == "night":  # light blobs can land anywhere: compare the darkest quarter of the pixels
            got = np.array([np.percentile(out[:, :, c], 25) for c in range(3)])
            assert np.all(np.abs(got - want) < 0.05), (name, got, want)
        else:
            assert np.all(np.abs(out.reshape(-1, 3).mean(0) - want) < 0.02), (name, out.mean((0, 1)), want)
    assert degrade(flat, ("overexposed",), 0, "f").min() == 255  # min(1, 2.2 x) saturates 0.8


def test_unknown_preset_is_one_line_with_the_choices():
    assert parse_presets("dusk, jpeg") == ("dusk", "jpeg")
    with pytest.raises(ValueError, match="choose from dusk, night"):
        parse_presets("sunset")


def test_eval_degrade_reports_it_and_changes_only_the_queries(tmp_path, capsys):
    from reloc_ros.cli.main import main
    from reloc_ros.datasets.synthetic import generate

    generate("office", tmp_path / "s", n_map=8, n_query=3, seed=5, stride=20, workers=1, progress=False)
    assert main(["-q", "map", "build", "--dataset", str(tmp_path / "s"), "--format", "7scenes", "--extractor", "sift",
                 "--out", str(tmp_path / "m")]) == 0
    base = ["-q", "eval", "--map", str(tmp_path / "m"), "--dataset", str(tmp_path / "s"), "--format", "7scenes"]
    assert main(base + ["--json", str(tmp_path / "clean.json")]) == 0
    assert main(base + ["--degrade", "night", "--json", str(tmp_path / "night.json")]) == 0
    out = capsys.readouterr().out
    assert "degraded night" in out and "query images degraded: night (seed 0)" in out
    clean, night = (json.loads((tmp_path / f).read_text()) for f in ("clean.json", "night.json"))
    assert "degradation" not in clean and night["degradation"] == {"presets": ["night"], "seed": 0}
    assert night["queries"] == clean["queries"]
    # the same images, darker: fewer matches on average (the map is untouched)
    assert np.mean([r["num_matches"] for r in night["records"]]) < np.mean([r["num_matches"] for r in
                                                                            clean["records"]])
    assert main(base + ["--degrade", "sunset"]) == 2
    assert "choose from" in capsys.readouterr().err
