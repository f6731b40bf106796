"""Reports say what a model is fit for: the evaluation report's fitness box, and comparison tables that
flag runs whose confidence intervals reach chance."""

from __future__ import annotations

import json

from mammocad.evaluation.compare import compare_runs
from mammocad.evaluation.evaluate import evaluate_run
from mammocad.training.model_card import model_card
from mammocad.training.run import train
from tests.conftest import config


def test_evaluation_and_comparison_reports_show_fitness(dataset, tmp_path):
    run = train(config(dataset, tmp_path, **{"train.epochs": 1}), progress=False).run_dir
    result = evaluate_run(run, split="test", n_resamples=50, tsne=False)
    document = json.loads((result.out_dir / "metrics.json").read_text())
    assert "balanced_accuracy" in document["confidence_intervals"] and document["temperature"] > 0
    html = result.report.read_text()
    assert 'class="fitness' in html and "NOT FOR CLINICAL USE" in html and "synthetic phantoms" in html
    card = model_card(run)
    assert card["evaluation"]["split"] == "test" and card["evaluation"]["metrics"]["auc"]["ci"] is not None

    comparison = compare_runs([run, run], tmp_path / "cmp", split="test")
    fitness = json.loads((comparison.out_dir / "comparison.json").read_text())["fitness"]
    assert len(fitness) == 2 and all("[" in row["AUC [95% CI]"] for row in fitness)
    assert all(row["trained on"].startswith("SYNTHETIC") for row in fitness)
    html = comparison.report.read_text()
    assert 'class="fitness' in html and "balanced accuracy [95% CI]" in html
    flagged = card["evaluation"]["at_chance"]
    assert all(bool(row["flag"]) == flagged for row in fitness)
    if flagged:
        assert "AT CHANCE" in html
