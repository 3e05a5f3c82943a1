"""Distribution metrics with known answers, sensitivity on real images, and `neurodiff evaluate` end to end."""

import json
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurodiff.data import io
from neurodiff.metrics import distances


def exact_moments(n, mu, cov, rng):
    """n samples whose empirical mean and (ddof=1) covariance are exactly mu and cov."""
    z = rng.standard_normal((n, len(mu)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return z @ np.linalg.cholesky(cov).T + mu


def test_fd_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(0).standard_normal((500, 16))
    assert abs(distances.frechet_distance(f, f)) < 1e-6


def test_fd_between_gaussians_equals_the_closed_form():
    rng = np.random.default_rng(1)
    d = 8
    a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    c1, c2 = a @ a.T / d + np.eye(d), b @ b.T / d + 0.5 * np.eye(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    # closed form via the symmetric square root: tr((S1^1/2 S2 S1^1/2)^1/2) = tr((S1 S2)^1/2)
    w, v = np.linalg.eigh(c1)
    s1h = v @ np.diag(np.sqrt(w)) @ v.T
    w2 = np.linalg.eigvalsh(s1h @ c2 @ s1h)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.sqrt(w2).sum()
    got = distances.frechet_distance(exact_moments(400, mu1, c1, rng), exact_moments(300, mu2, c2, rng))
    assert abs(got - expected) < 1e-3


def test_kid_is_zero_within_noise_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((600, 32)), rng.standard_normal((600, 32))
    mean, sd = distances.kid(a, b, subsets=50, subset_size=200)
    assert abs(mean) < 3 * sd
    shifted, _ = distances.kid(a, b + 0.5, subsets=50, subset_size=200)
    assert shifted > 10 * sd


def test_precision_recall_same_and_disjoint():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((300, 4)), rng.standard_normal((300, 4))
    p, r = distances.precision_recall(a, b)
    assert p > 0.8 and r > 0.8
    p, r = distances.precision_recall(a, b + 20)
    assert p == 0 and r == 0


def test_sliced_wasserstein_small_for_one_distribution_and_grows_with_a_shift_2d_and_3d():
    rng = np.random.default_rng(4)
    for shape in ((20, 1, 16, 16), (8, 1, 12, 12, 12)):
        x, y = rng.standard_normal(shape), rng.standard_normal(shape)
        same = distances.sliced_wasserstein(x, y, patch=5, n_patches=4000)
        shifts = [distances.sliced_wasserstein(x, y + s, patch=5, n_patches=4000) for s in (0.25, 0.5, 1.0)]
        assert same < 0.05 and same < shifts[0] < shifts[1] < shifts[2]


@pytest.fixture(scope="module")
def real_slices(mni):
    """64 axial MNI slices at 48x48, normalised to [-1, 1]."""
    sl = torch.from_numpy(mni[:, :, 40:168:2].astype(np.float32)).permute(2, 0, 1)[:, None] / 127.5 - 1
    return F.interpolate(sl, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)


@pytest.fixture(scope="module")
def features_file(real_slices, tmp_path_factory):
    from neurodiff.data.normalize import Normalizer
    from neurodiff.metrics.features import train_features

    path = tmp_path_factory.mktemp("feat") / "features.safetensors"
    meta = train_features(real_slices, None, Normalizer("minmax", 0, 255), path, steps=60, batch=32, width=16,
                          progress=False)
    assert meta["last_loss"] < meta["first_loss"]
    return path


@pytest.mark.parametrize("kind", ["noise", "blur"])
def test_fd_and_kid_grow_with_degradation_strength(real_slices, features_file, kind):
    from neurodiff.metrics.features import load_features

    feats = load_features(features_file)
    ref, test = real_slices[::2], real_slices[1::2]
    fr = feats(ref).numpy()
    g = torch.Generator().manual_seed(0)
    fds, kids = [], []
    for level in (0.1, 0.3, 0.6) if kind == "noise" else (1.0, 2.0, 4.0):
        if kind == "noise":
            x = test + level * torch.randn(test.shape, generator=g)
        else:
            k = int(4 * level) * 2 + 1
            t = torch.arange(k) - k // 2
            w = torch.exp(-t.float() ** 2 / (2 * level ** 2))
            w = (w / w.sum())
            x = F.conv2d(F.pad(test, (k // 2,) * 4, mode="reflect"), (w[:, None] * w[None])[None, None])
        ff = feats(x).numpy()
        fds.append(distances.frechet_distance(fr, ff))
        kids.append(distances.kid(fr, ff, subsets=20, subset_size=32)[0])
    assert fds[0] < fds[1] < fds[2], fds
    assert kids[0] < kids[1] < kids[2], kids


def test_torchscript_features_are_accepted(tmp_path, real_slices):
    from neurodiff.metrics.features import load_features

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    torch.jit.script(net).save(str(tmp_path / "f.pt"))
    feats = load_features(tmp_path / "f.pt")
    assert feats(real_slices[:5]).shape == (5, 4)


class _Check(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images = [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        src = dict(attrs).get("src", "")
        self.images += tag == "img" and src.startswith("data:image/png;base64,")


def test_evaluate_cli_writes_metrics_and_a_self_contained_report(tmp_path, real_slices, features_file, capsys):
    from neurodiff.cli import main

    u8 = ((real_slices + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    for i, x in enumerate(u8):   # real: 4 depth classes as sub-folders; fake: noisy copies with a manifest
        io.write(tmp_path / "real" / f"{i * 4 // len(u8):02d}" / f"s{i:03d}.png", x)
    rows = ["file,index,seed,label,label_name,covariates,guidance,sampler,steps,model_digest"]
    noisy = (u8.astype(np.int16) + np.random.default_rng(0).integers(-20, 20, u8.shape)).clip(0, 255)
    for i, x in enumerate(noisy.astype(np.uint8)[::2]):
        io.write(tmp_path / "fake" / f"sample_{i:06d}.png", x)
        rows.append(f"sample_{i:06d}.png,{i},0,{2 * i * 4 // len(u8)},,,2.0,dpmpp_2m,30,x")
    (tmp_path / "fake" / "manifest.csv").write_text("\n".join(rows) + "\n")
    code = main(["evaluate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                 "--out", str(tmp_path / "rep"), "--task", "conditioning", "--features", str(features_file),
                 "--repeats", "2"])
    assert code == 0
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["n_real"] == 64 and m["n_fake"] == 32 and m["fd"] >= 0 and len(m["kid"]["values"]) == 2
    assert 0 <= m["conditioning"]["label"]["accuracy_generated"] <= 1
    assert len(m["per_condition"]) == 4
    page = (tmp_path / "rep" / "report.html").read_text()
    check = _Check()
    check.feed(page)
    assert check.images == 2 and "svg" in check.tags and "table" in check.tags
    assert "wrote" in capsys.readouterr().out


def test_evaluate_paired_task_and_bad_input(tmp_path, real_slices, capsys):
    from neurodiff.cli import main

    u8 = ((real_slices[:6] + 1) * 127.5).round().to(torch.uint8).numpy()
    for i, x in enumerate(u8):
        io.write(tmp_path / "a" / f"{i}.png", x)
        io.write(tmp_path / "b" / f"{i}.png", x)
    assert main(["evaluate", "--real", str(tmp_path / "a"), "--fake", str(tmp_path / "b"), "--out",
                 str(tmp_path / "r"), "--task", "paired"]) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["paired"]["mean"]["ssim"] == pytest.approx(1.0, abs=1e-9)
    io.write(tmp_path / "b" / "other.png", u8[0])
    capsys.readouterr()
    assert main(["evaluate", "--real", str(tmp_path / "a"), "--fake", str(tmp_path / "b"), "--out",
                 str(tmp_path / "r"), "--task", "paired"]) == 2
    assert "other.png" in capsys.readouterr().err


def test_training_logs_kid_and_fd_every_n_images(slice_folder, tmp_path, features_file):
    from neurodiff import config
    from neurodiff.metrics.evaluate import training_evaluator
    from neurodiff.train.loop import train

    cfg = config.load("tiny", [f"data.path={slice_folder}", "train.total_nimg=32", "train.eval_every_nimg=16",
                               f"train.eval_features={features_file}", "train.eval_samples=8", "train.eval_steps=2",
                               "train.preview_every_nimg=1000"])
    train(cfg, tmp_path / "run", progress=False, evaluator=training_evaluator(str(features_file), 8, 2))
    evals = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if '"eval"' in line]
    assert [e["nimg"] for e in evals] == [16, 32]
    assert all(e["eval"]["fd"] > 0 and np.isfinite(e["eval"]["kid"]) for e in evals)


def test_volumes_use_the_2p5d_protocol(features_file):
    from neurodiff.metrics.features import load_features

    feats = load_features(features_file)
    vol = torch.randn(3, 1, 20, 24, 28)
    f = feats(vol)
    assert f.shape == (3, 3 * 128)
    # the three blocks are the features of the central axial, coronal and sagittal slices
    assert torch.allclose(f[:, 128:256], feats(vol[:, :, :, 12]), atol=1e-5)


def test_train_features_cli_on_volumes(volume_folder, tmp_path, capsys):
    from neurodiff.cli import main
    from neurodiff.metrics.features import load_features

    out = tmp_path / "f.safetensors"
    assert main(["train-features", "--data", str(volume_folder), "--out", str(out), "--steps", "3", "--batch", "8",
                 "--size", "16", "--no-progress"]) == 0
    assert "trained a feature network on 384 images" in capsys.readouterr().out   # 8 volumes x 3 x 16 slices
    assert load_features(out).size == 16


def test_labels_match_by_name_and_real_covariate_columns_are_read(tmp_path, real_slices, features_file):
    from neurodiff.metrics.evaluate import evaluate

    u8 = ((real_slices + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    # real: class sub-folders named by depth in mm; a covariate column in a training-format manifest
    names = ["10mm", "20mm", "5mm"]
    rows = ["file,volume"]
    for i, x in enumerate(u8):
        f = f"{names[i % 3]}/r{i:03d}.png"
        io.write(tmp_path / "real" / f, x)
        rows.append(f"{f},{float(x.mean())}")
    (tmp_path / "real" / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = ["file,index,seed,label,label_name,covariates,guidance,sampler,steps,model_digest"]
    for i, x in enumerate(u8[:12]):
        io.write(tmp_path / "fake" / f"s{i}.png", x)
        out.append(f"s{i}.png,{i},0,9,{names[i % 3]},volume={float(x.mean())},1,euler,5,x")
    (tmp_path / "fake" / "manifest.csv").write_text("\n".join(out) + "\n")
    m = evaluate(tmp_path / "real", tmp_path / "fake", tmp_path / "rep", task="conditioning",
                 features_path=str(features_file), repeats=1)
    # 'label' 9 is ignored: label_name is matched against the real sub-folders
    assert [r["label"] for r in m["per_condition"]] == ["10mm", "20mm", "5mm"]
    assert all(r["n_real"] > 0 for r in m["per_condition"])
    assert m["conditioning"]["volume"]["pearson_generated"] > 0.5   # copies of real slices: the regressor works
    assert "Infinity" not in (tmp_path / "rep" / "metrics.json").read_text()


def test_paired_psnr_uses_the_explicit_data_range(tmp_path):
    from neurodiff.metrics.evaluate import evaluate

    rng = np.random.default_rng(0)
    a = rng.integers(20, 200, (4, 1, 32, 32)).astype(np.uint8)
    b = (a.astype(np.int16) + rng.integers(-5, 6, a.shape)).clip(0, 255).astype(np.uint8)
    for i in range(4):
        io.write(tmp_path / "a" / f"{i}.png", a[i])
        io.write(tmp_path / "b" / f"{i}.png", b[i])
    m = evaluate(tmp_path / "a", tmp_path / "b", tmp_path / "r", task="paired", data_range=255.0, repeats=1)
    mse = ((a.astype(float) - b) ** 2).reshape(4, -1).mean(1)
    assert m["paired"]["mean"]["psnr"] == pytest.approx(np.mean(10 * np.log10(255 ** 2 / mse)), abs=1e-3)
