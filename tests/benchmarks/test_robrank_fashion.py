"""RobRank's Fashion-MNIST protocol profile: its rows share RobRank's setting, and the report
reads finished and running rows."""

from __future__ import annotations

import json

from benchmarks import robrank_fashion as rf
from eat_models.train import TrainConfig, train


def test_every_row_trains_in_robranks_setting(tmp_path):
    names = [r.name for r in rf.ROWS]
    assert names[:4] == ["vanilla", "vanilla-rc2f2", "hm", "eat"]  # the decisive ones first
    for row in rf.ROWS:
        config = rf.row_config(row, tmp_path, threads=1)
        assert (config.loss, config.optimizer, config.schedule) == ("triplet", "adam", "constant")
        assert config.classes_per_batch * config.samples_per_class == 128
        assert config.epochs == 16 and config.resume and config.val_images == 2000
        assert (
            abs(config.train_eps - 77 / 255) < 1e-12
            and abs(config.train_step_size - 3 / 255) < 1e-12
        )
        assert config.out == str(tmp_path / "runs" / row.name)
    assert rf.row_config(rf.ROWS[2], tmp_path, 1, seed=2).out.endswith("hm-s2")
    assert rf.row_config(rf.ROWS[2], tmp_path, 1).hm_ics_weight == 0.5


def test_the_report_lists_running_rows_with_their_progress(tmp_path):
    train(
        TrainConfig(
            epochs=2,
            stop_after=1,
            max_train=200,
            width=8,
            embedding_dim=16,
            out=str(tmp_path / "runs" / "hm"),
        ),
        progress=False,
    )
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "vanilla.json").write_text(
        json.dumps({"train": {"history": [{}] * 16, "epochs": 16, "train_wall_s": 417.0}})
    )
    text = rf.report(tmp_path)
    assert "| vanilla | 16/16 | 417 s |" in text and "0.876 / 0.778 / 4.5" in text
    assert "| hm | 1/2 (running) |" in text
    assert (tmp_path / "results.md").read_text() == text
