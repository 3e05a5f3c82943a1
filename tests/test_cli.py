"""The command line: the documented commands work, bad input gives one line and exit code 2."""

import subprocess
import sys

import pytest

from neurodiff.cli import main


def run_cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def trained(slice_folder, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "tiny", "--data", str(slice_folder), "--out", str(run), "--no-progress",
                 "--set", "train.total_nimg=32", "--set", "data.labels=folders"]) == 0
    return run


def test_train_sample_export_from_the_cli(trained, tmp_path, capsys):
    assert main(["export", str(trained), str(tmp_path / "model")]) == 0
    for src in (trained, tmp_path / "model"):
        out = tmp_path / f"s_{src.name}"
        code, stdout, _ = run_cli(["sample", str(src), "--n", "3", "--out", str(out), "--steps", "3",
                                   "--label", "high", "--guidance", "2", "--no-progress"], capsys)
        assert code == 0 and "manifest.csv" in stdout
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["manifest.csv"] + [f"sample_{k:06d}.png" for k in range(3)]
    same = [(tmp_path / f"s_{n}" / "sample_000001.png").read_bytes() for n in ("run", "model")]
    assert same[0] == same[1]


def test_seed_batch_1_and_batch_8_give_identical_files(trained, tmp_path):
    for b in (1, 8):
        assert main(["sample", str(trained), "--n", "9", "--out", str(tmp_path / f"b{b}"), "--seed", "0",
                     "--batch", str(b), "--steps", "3", "--label", "all", "--no-progress"]) == 0
    for k in range(9):
        name = f"sample_{k:06d}.png"
        assert (tmp_path / "b1" / name).read_bytes() == (tmp_path / "b8" / name).read_bytes()


def test_resume_from_the_cli(trained, tmp_path, capsys):
    code, stdout, _ = run_cli(["train", "tiny", "--out", str(trained), "--resume", "--no-progress",
                               "--set", "train.total_nimg=48"], capsys)
    assert code == 0 and "48 images" in stdout


@pytest.mark.parametrize("make_args,needle", [
    (lambda d, t: ["train", "tiny", "--data", str(t / "missing"), "--out", str(t / "r")], "missing"),
    (lambda d, t: ["train", "tiny", "--data", str(t / "empty"), "--out", str(t / "r")], "no image files"),
    (lambda d, t: ["train", "tiny", "--data", str(t / "broken"), "--out", str(t / "r")], "bad.tif"),
    (lambda d, t: ["train", "tiny", "--data", str(d), "--out", str(t / "r"), "--set", "train.bogus=1"],
     "train.bogus"),
    (lambda d, t: ["train", "tiny", "--data", str(d), "--out", str(t / "r"), "--set", "train.lr=abc"], "train.lr"),
    (lambda d, t: ["train", "nonexistent-preset", "--data", str(d), "--out", str(t / "r")], "nonexistent-preset"),
    (lambda d, t: ["sample", str(t / "nomodel"), "--out", str(t / "s")], "nomodel"),
])
def test_bad_input_is_one_line_and_exit_2(slice_folder, tmp_path, capsys, make_args, needle):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bad.tif").write_bytes(b"II*\x00garbage")
    code, out, err = run_cli(make_args(slice_folder, tmp_path), capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("neurodiff: error:")


def test_label_out_of_range_from_the_cli(trained, tmp_path, capsys):
    code, _, err = run_cli(["sample", str(trained), "--n", "1", "--out", str(tmp_path / "s"), "--label", "7"], capsys)
    assert code == 2 and "--label 7" in err and "0..1" in err


def test_no_traceback_unless_debug(tmp_path):
    cmd = [sys.executable, "-m", "neurodiff.cli", "train", "tiny", "--data", str(tmp_path / "nope"),
           "--out", str(tmp_path / "r")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run(cmd[:3] + ["--debug"] + cmd[3:], capture_output=True, text=True)
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_rerun_with_other_settings_is_refused(trained, tmp_path, capsys):
    base = ["sample", str(trained), "--n", "2", "--out", str(tmp_path / "s"), "--steps", "2", "--no-progress"]
    assert run_cli(base, capsys)[0] == 0
    assert run_cli(base + ["--n", "3"], capsys)[0] == 0   # same settings, more samples: completes the set
    assert (tmp_path / "s" / "sample_000002.png").is_file()
    code, _, err = run_cli(base + ["--steps", "5"], capsys)
    assert code == 2 and "other settings (steps)" in err


def test_sampling_with_a_covariate_records_it_in_the_manifest(slice_folder, tmp_path):
    import csv
    import shutil

    data = tmp_path / "data"
    shutil.copytree(slice_folder, data)
    files = sorted(p.relative_to(data) for p in data.rglob("*.png"))
    (data / "m.csv").write_text("\n".join(["file,label,age"] + [f"{f},{'AD' if i % 2 else 'CN'},{60 + i}"
                                                                for i, f in enumerate(files)]))
    run = tmp_path / "run"
    assert main(["train", "tiny", "--data", str(data), "--out", str(run), "--no-progress", "--set", "data.labels=manifest",
                 "--set", "data.manifest=m.csv", "--set", "data.covariates=[age]", "--set", "train.total_nimg=8",
                 "--set", "train.batch=8"]) == 0
    out = tmp_path / "s"
    assert main(["sample", str(run), "--n", "2", "--steps", "2", "--label", "AD", "--covariate", "age=65",
                 "--out", str(out), "--no-progress"]) == 0
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert [r["covariates"] for r in rows] == ["age=65", "age=65"]
    assert main(["sample", str(run), "--n", "1", "--covariate", "weight=3", "--out", str(tmp_path / "t")]) == 2
