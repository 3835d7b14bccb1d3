"""CLI: `train-clip`, `classify`, `score` (the README's "Train your own CLIP" commands)."""

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from clipforge.cli.train import register


@pytest.fixture(scope="module")
def app():
    try:  # the real CLI when it registers these commands, else a bare app
        from clipforge.cli import app as main_app

        names = {c.name for c in main_app.registered_commands}
        if {"train-clip", "classify", "score"} <= names:
            return main_app
    except ImportError:
        pass
    a = typer.Typer()
    register(a)
    return a


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """A red circle on blue and a yellow star on black, rendered by the shapes set."""
    from PIL import Image

    from clipforge.training.shapes import COLOURS, SHAPES, render

    d = tmp_path_factory.mktemp("pics")
    rgb = lambda *names: torch.tensor([COLOURS[n] for n in names])  # noqa: E731
    imgs = render(torch.tensor([SHAPES.index("circle"), SHAPES.index("star")]),
                  rgb("red", "yellow"), rgb("blue", "black"), torch.full((2, 2), 0.5),
                  torch.tensor([0.3, 0.3]), torch.zeros(2), 64)
    paths = []
    for name, x in zip(("red_circle.png", "yellow_star.png"), imgs):
        Image.fromarray((x.permute(1, 2, 0) * 255).round().byte().numpy()).save(d / name)
        paths.append(str(d / name))
    return paths


def test_readme_train_resume_classify_score(app, tmp_path, pictures):
    r = CliRunner()
    out = tmp_path / "my-clip"
    res = r.invoke(app, ["train-clip", "shapes", "--config", "tiny", "--steps", "3",
                         "--batch-size", "16", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "zero-shot on shapes val" in res.output
    assert (out / "open_clip_config.json").is_file() and (out / "open_clip_model.safetensors").is_file()
    ckpt = tmp_path / "my-clip.ckpt.pt"
    assert ckpt.is_file()
    res = r.invoke(app, ["train-clip", "shapes", "--config", "tiny", "--steps", "5",
                         "--batch-size", "16", "--out", str(out), "--resume", str(ckpt)])
    assert res.exit_code == 0, res.output
    assert "trained 5 steps" in res.output
    assert json.loads((out / "open_clip_config.json").read_text())["clipforge"]["steps"] == 5
    res = r.invoke(app, ["classify", *pictures, "--labels", "red circle,yellow star",
                         "--clip", str(out)])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["classify", *pictures, "--labels", "red circle,yellow star,blue square",
                         "--template", "a {}", "--json"])  # the bundled `shapes` guide
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [row["image"] for row in rows] == pictures
    assert [next(iter(row["probs"])) for row in rows] == ["red circle", "yellow star"]
    assert all(abs(sum(row["probs"].values()) - 1) < 1e-3 for row in rows)
    res = r.invoke(app, ["score", *pictures, "--prompt", "a red circle",
                         "--candidates", "a yellow star,a blue square"])
    assert res.exit_code == 0, res.output
    assert "mean CLIP score" in res.stdout and "R-precision" in res.stdout
    res = r.invoke(app, ["score", pictures[0], "--prompt", "a red circle", "--json"])
    row = json.loads(res.stdout)
    assert row["judge"] == "shapes-judge" and 0 <= row["clip_score"] <= 100


def test_classify_plain_output_is_best_first(app, pictures):
    res = CliRunner().invoke(app, ["classify", pictures[1], "--labels",
                                   "red circle,yellow star"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == pictures[1] and lines[1].endswith("yellow star")


def test_bad_input_exits_2(app, tmp_path, pictures):
    r = CliRunner()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.png").write_bytes(open(pictures[0], "rb").read())
    res = r.invoke(app, ["train-clip", str(tmp_path / "data"), "--steps", "1",
                         "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "a.txt is missing" in res.output
    res = r.invoke(app, ["train-clip", "shapes", "--steps", "0", "--out", str(tmp_path / "m")])
    assert res.exit_code == 2
    res = r.invoke(app, ["train-clip", "shapes", "--precision", "fp16", "--out",
                         str(tmp_path / "m")])
    assert res.exit_code == 2 and "precision" in res.output and "auto, fp32, bf16" in res.output
    res = r.invoke(app, ["classify", str(tmp_path / "nope.png"), "--labels", "a,b"])
    assert res.exit_code == 2 and "nope.png" in res.output
    res = r.invoke(app, ["classify", pictures[0], "--labels", "only-one"])
    assert res.exit_code == 2 and "--labels" in res.output
    res = r.invoke(app, ["classify", pictures[0], "--labels", "a,b", "--clip", "no-such-model"])
    assert res.exit_code == 2 and "unknown model" in res.output
    res = r.invoke(app, ["score", pictures[0], "--prompt", " "])
    assert res.exit_code == 2 and "empty" in res.output
    assert not (tmp_path / "m").exists()


def test_score_with_the_guide_as_judge_warns(app, pictures):
    with pytest.warns(UserWarning, match="also guided"):
        res = CliRunner().invoke(app, ["score", pictures[0], "--prompt", "a red circle",
                                       "--judge", "shapes", "--guide", "shapes"])
    assert res.exit_code == 0, res.output


def test_train_on_a_folder_and_a_csv(app, tmp_path, pictures):
    import shutil

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (pic, cap) in enumerate(zip(pictures * 2, ["a red circle", "a yellow star"] * 2)):
        shutil.copy(pic, folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(cap)
    (tmp_path / "pairs.csv").write_text("path,caption\n" + "".join(
        f"photos/{i}.png,{cap}\n" for i, cap in enumerate(["a red circle", "a yellow star"] * 2)))
    r = CliRunner()
    for data in (folder, tmp_path / "pairs.csv"):
        res = r.invoke(app, ["train-clip", str(data), "--config", "tiny", "--steps", "2",
                             "--batch-size", "4", "--out", str(tmp_path / "m.safetensors")])
        assert res.exit_code == 0, res.output
        assert (tmp_path / "m.safetensors").is_file()
