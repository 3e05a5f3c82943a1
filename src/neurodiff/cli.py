"""The ``neurodiff`` command: train, sample, export, demo. A thin layer over the Python API.

Errors for users are one line on stderr and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neurodiff.errors import NeurodiffError

PRECISIONS = ("auto", "fp32", "bf16")   # neurodiff.precision.PRECISIONS, spelled out: the CLI imports no torch
PRECISION_HELP = ("the network's precision while sampling: auto (bf16 on GPUs, float32 on CPUs), fp32, or bf16 "
                  "(about 2x faster on CPUs with native bf16; float32 with a warning on CPUs without)")
JUMP_UNTIL_HELP = "RePaint jumps only in this first, noisiest fraction of the steps (default 1: all of them)"
ETA_HELP = "fresh noise of each step down inside the mask: 1 ancestral as in RePaint (default), 0 deterministic"
EPILOG = "Multi-GPU / multi-node: the same command under torchrun, e.g. torchrun --nproc_per_node 2 -m neurodiff.cli train ..."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurodiff", description="Diffusion models for brain and microscopy images.",
                                epilog=EPILOG)
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a diffusion model", epilog=EPILOG)
    t.add_argument("config", help="preset name (tiny, tiny3d, mridiff, zebrafish-depth, demo) or a YAML/JSON file")
    t.add_argument("--data", help="folder or file with the training data (sets data.path)")
    t.add_argument("--out", required=True, help="run folder: config, checkpoints, previews, metrics.jsonl")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=1e-4 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    t.add_argument("--codec", default=None, help="latent diffusion: autoencoder run or model folder (train-ae)")
    t.add_argument("--covariates", default=None, metavar="CSV",
                   help="table with a 'file' column and covariate columns (sets data.manifest, data.covariates)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="generate samples from a run or an exported model", epilog=EPILOG)
    s.add_argument("model", help="run folder (uses the newest checkpoint's EMA weights) or exported model folder")
    s.add_argument("--n", "--num-samples", dest="n", type=int, default=16,
                   help="number of samples (default 16); under torchrun write --num-samples")
    s.add_argument("--out", required=True, help="output folder (samples + manifest.csv); finished files are kept")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch", type=int, default=None, help="samples per batch (does not change the results)")
    s.add_argument("--label", default=None,
                   help="class index or name; 'all' cycles through the classes; default: unconditional")
    s.add_argument("--covariate", action="append", default=[], metavar="NAME=VALUE",
                   help="a covariate value (repeat for each covariate the model knows)")
    s.add_argument("--covariates", default=None, metavar="CSV",
                   help="table of covariates, one row per sample (sample k takes row k mod the rows)")
    s.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    s.add_argument("--steps", type=int, default=None, help="sampler steps")
    s.add_argument("--sampler", default=None, choices=["euler", "ddim", "heun", "dpmpp_2m", "ancestral"])
    s.add_argument("--fast", action="store_true",
                   help="batch the net over samples (faster on GPUs; results then depend slightly on --batch)")
    s.add_argument("--no-progress", action="store_true")

    vo = sub.add_parser("volume", help="generate whole stacks slice by slice from a neighbour-slice model",
                        epilog=EPILOG)
    vo.add_argument("model", help="run or exported model folder trained with data.context_slices > 0")
    vo.add_argument("--n", "--num-volumes", dest="n", type=int, default=4,
                    help="number of stacks (default 4); under torchrun write --num-volumes")
    vo.add_argument("--out", required=True, help="output folder (stacks + manifest.csv); finished files are kept")
    vo.add_argument("--slices", type=int, default=None, help="slices per stack (default: the training stacks')")
    vo.add_argument("--seed", type=int, default=0)
    vo.add_argument("--batch", type=int, default=4, help="stacks generated together (does not change the results)")
    vo.add_argument("--guidance", type=float, default=None, help="classifier-free guidance on the depth (1 = off)")
    vo.add_argument("--steps", type=int, default=None, help="sampler steps per slice")
    vo.add_argument("--sampler", default=None, choices=["euler", "ddim", "heun", "dpmpp_2m", "ancestral"])
    vo.add_argument("--fast", action="store_true", help="batch the net over stacks (faster on GPUs)")
    vo.add_argument("--no-progress", action="store_true")

    ca = sub.add_parser("cascade", help="chain a base model (or real low-res images) through super-resolution stages",
                        epilog=EPILOG)
    ca.add_argument("spec", nargs="*", metavar="KEY=VALUE", help="base=RUN and stages=RUN1,RUN2,... (as --base/--stages)")
    ca.add_argument("--base", default=None, help="base model (run or exported folder)")
    ca.add_argument("--lowres", default=None, help="folder of real low-res images to start from instead of a base")
    ca.add_argument("--stages", default=None, help="comma-separated super-resolution stages, lowest first")
    ca.add_argument("--n", "--num-samples", dest="n", type=int, default=4)
    ca.add_argument("--out", required=True, help="output folder: final images, manifest.csv (+ stage_k/ with --keep)")
    ca.add_argument("--label", default=None, help="base model's class index or name")
    ca.add_argument("--guidance", type=float, default=None, help="base model's guidance")
    ca.add_argument("--steps", type=int, default=None, help="sampler steps (every model)")
    ca.add_argument("--seed", type=int, default=0)
    ca.add_argument("--keep", action="store_true", help="also write every intermediate stage")
    ca.add_argument("--no-progress", action="store_true")

    ip = sub.add_parser("inpaint", help="fill artefacts (tears, missing sections) with RePaint, at any image size")
    ip.add_argument("model", help="run or exported model folder")
    ip.add_argument("--image", required=True, help="image or volume to repair (TIFF/BigTIFF, PNG, NIfTI, NumPy)")
    ip.add_argument("--mask", default=None, help="mask file (non-zero = fill) of the image's size or an overview's")
    ip.add_argument("--box", action="append", default=[], metavar="Y0:Y1,X0:X1",
                    help="a box to fill (repeatable; Z0:Z1,Y0:Y1,X0:X1 in 3D); with or instead of --mask")
    ip.add_argument("--out", required=True, help="output file (the format from its suffix; known pixels kept exactly)")
    ip.add_argument("--steps", type=int, default=250, help="noise levels of the schedule (default 250)")
    ip.add_argument("--jump", type=int, default=10, help="RePaint jump length (default 10)")
    ip.add_argument("--resample", type=int, default=10, help="RePaint resampling count (default 10; 1 = no jumps)")
    ip.add_argument("--jump-until", type=float, default=1.0, help=JUMP_UNTIL_HELP)
    ip.add_argument("--eta", type=float, default=1.0, help=ETA_HELP)
    ip.add_argument("--tile", type=int_or_auto, default=None, help="tile size for large images (default: the model's "
                    "training size; 0 = whole image; auto = the least under which no tile lies wholly in the mask, up to 4x)")
    ip.add_argument("--overlap", type=int, default=None, help="tile overlap, half refilled softly (default 32, <= tile/4)")
    ip.add_argument("--label", default=None, help="class index or name for a conditional model")
    ip.add_argument("--covariate", action="append", default=[], metavar="NAME=VALUE")
    ip.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (1 = off)")
    ip.add_argument("--seed", type=int, default=0)
    ip.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    ip.add_argument("--resume", action="store_true", help="continue a stopped run into the same .zarr/.tif --out "
                    "(the tiles written, and the tile in progress from its last minute)")
    ip.add_argument("--no-progress", action="store_true")

    tr = sub.add_parser("translate", help="paired translation (source -> target) with per-pixel uncertainty maps")
    tr.add_argument("model", help="run or exported model folder (train translate / translate-regression)")
    tr.add_argument("--input", required=True, help="a source image or a folder of them")
    tr.add_argument("--out", required=True, help="output folder: mean/, median/, std/, mad/ (+ samples/)")
    tr.add_argument("--samples", type=int, default=16, help="diffusion samples per input (default 16)")
    tr.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    tr.add_argument("--sampler", default=None, choices=["euler", "ddim", "heun", "dpmpp_2m", "ancestral"])
    tr.add_argument("--batch", type=int, default=16, help="samples per network batch (default 16)")
    tr.add_argument("--exact", action="store_true",
                    help="one sample at a time: sample k bit-identical for any --batch (slower)")
    tr.add_argument("--tile", type=int, default=None, help="tile size for large inputs (default: the training size)")
    tr.add_argument("--save-samples", action="store_true", help="also write every sample (samples/sample_KKK/)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("export", help="write EMA weights as model.safetensors + config.json")
    e.add_argument("run", help="run folder")
    e.add_argument("model_dir", help="output model folder")

    v = sub.add_parser("evaluate", help="compare real and generated images: metrics.json + report.html")
    v.add_argument("--real", required=True, help="folder of real images (class sub-folders or manifest.csv for labels)")
    v.add_argument("--fake", default=None, help="folder of generated images (its manifest.csv gives the conditions)")
    v.add_argument("--out", required=True, help="report folder")
    v.add_argument("--task", default="generation",
                   choices=["generation", "paired", "inpainting", "conditioning", "volume"],
                   help="volume: coherence of stacks (adjacent-slice similarity, through-plane smoothness, depth)")
    v.add_argument("--axis", type=int, default=0,
                   help="volume task: the depth axis of the stacks (0 for TIFF [Z, Y, X]; 2 for axial NIfTI)")
    v.add_argument("--features", default=None, help="feature network: a file from train-features, or TorchScript")
    v.add_argument("--repeats", type=int, default=3, help="seeds for the sampled metrics (mean ± sd)")
    v.add_argument("--limit", type=int, default=None, help="use at most this many files of each set")
    v.add_argument("--mask", default=None, help="paired/inpainting: folder of masks (non-zero = evaluated)")
    v.add_argument("--data-range", type=float, default=None,
                   help="paired metrics: the data range L in data units (PSNR, SSIM); default: the real set's max - min")
    v.add_argument("--uncertainty", default=None,
                   help="paired: folder of uncertainty maps (translate's std/) scored against the error: Spearman, AUSE")
    v.add_argument("--cells", action="store_true", help="also compare nuclei statistics (microscopy; per-image errors for paired/inpainting)")

    v.add_argument("--model", default=None, help="inpainting: repaint random 5-50%% masks on the --real images "
                   "with this model and compare nuclei statistics (instead of --fake)")
    v.add_argument("--steps", type=int, default=250, help="inpainting with --model: RePaint steps")
    v.add_argument("--jump", type=int, default=10, help="inpainting with --model: jump length")
    v.add_argument("--resample", type=int, default=10, help="inpainting with --model: resampling count")
    v.add_argument("--jump-until", type=float, default=1.0, help="inpainting with --model: " + JUMP_UNTIL_HELP)
    v.add_argument("--eta", type=float, default=1.0, help="inpainting with --model: " + ETA_HELP)
    v.add_argument("--tile", type=int_or_auto, default=None, help="inpainting with --model: tile size (or auto)")
    v.add_argument("--seed", type=int, default=0, help="inpainting with --model: masks and noise")
    v.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="inpainting with --model: " + PRECISION_HELP)
    v.add_argument("--masks-per-bin", type=int, default=1, help="inpainting with --model: random masks per image "
                   "and mask-size bin (more masks, less noise in the medians)")
    v.add_argument("--batch", type=int, default=1, help="inpainting with --model: repaint this many masks at once "
                   "(of several images when above the masks per image), whole image as one tile (faster on a GPU)")
    v.add_argument("--resume", action="store_true", help="inpainting with --model: keep the images a cut-off run "
                   "with the same settings finished in --out (metrics.json is written after each image) and go on "
                   "with the repaint in progress from its last minute")
    v.add_argument("--classifier", default=None, help="inpainting with --model: count classification flips with "
                   "this classifier (a train-features file trained on class sub-folders, or TorchScript "
                   "[N, C, H, W] in [-1, 1] -> logits)")

    f = sub.add_parser("train-features", help="train a small domain feature network for FD/KID on real data")
    f.add_argument("--data", required=True, help="folder of real images or volumes (labels from sub-folders used)")
    f.add_argument("--out", required=True, help="output file (.safetensors)")
    f.add_argument("--size", type=int, default=64, help="input size of the network (default 64)")
    f.add_argument("--steps", type=int, default=1000)
    f.add_argument("--batch", type=int, default=64)
    f.add_argument("--no-labels", action="store_true", help="self-supervised only, even when labels exist")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--no-progress", action="store_true")

    d = sub.add_parser("demo", help="train on the MNI152 template's axial slices (14 depths) and sample every depth")
    d.add_argument("--out", default="neurodiff-demo", help="output folder (default ./neurodiff-demo)")
    d.add_argument("--minutes", type=float, default=None,
                   help="training time in minutes (default 2 for fine-tuning; from scratch: the preset's images)")
    d.add_argument("--from-scratch", action="store_true", help="train from random weights instead of fine-tuning "
                   "the shipped ones")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    d.add_argument("--no-progress", action="store_true")
    from neurodiff.cli_latent import add_parsers

    add_parsers(sub)
    return p


def _positive(name: str, value: int | float | None) -> None:
    if value is not None and value <= 0:
        raise NeurodiffError(f"{name}: expected a positive number, got {value}")


def int_or_auto(text: str) -> int | str:
    if text != "auto" and not text.lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer or auto, got {text!r}")
    return text if text == "auto" else int(text)


def cmd_train(args) -> int:
    from neurodiff import config as config_mod, dist
    from neurodiff.train.loop import train

    out = Path(args.out)
    source = out / "config.yaml" if args.resume and (out / "config.yaml").is_file() else args.config
    overrides = list(args.overrides)
    if args.covariates and not args.resume:
        from neurodiff.cli_latent import covariate_overrides

        overrides = covariate_overrides(args.covariates) + overrides
    if args.codec and not args.resume:
        overrides.append(f"data.codec={Path(args.codec).resolve()}")
    cfg = config_mod.load(source, overrides)
    if args.data:
        cfg.data.path = args.data   # a path, taken as it is (not parsed as YAML)
    if not cfg.data.path:
        raise NeurodiffError("--data: no training data given (or set data.path in the config)")
    evaluator = None
    if cfg.train.eval_every_nimg:
        from neurodiff.metrics.evaluate import training_evaluator
        evaluator = training_evaluator(cfg.train.eval_features, cfg.train.eval_samples, cfg.train.eval_steps)
    summary = train(cfg, out, resume=args.resume, progress=not args.no_progress, evaluator=evaluator)
    dist.print0(f"trained to {summary['nimg']} images; run folder: {out}")
    dist.shutdown()
    return 0


def cmd_sample(args) -> int:
    from neurodiff import dist
    from neurodiff.tasks.generate import generate, parse_covariates
    from neurodiff.train.state import load_model

    for name in ("--n", "--batch", "--steps"):
        _positive(name, getattr(args, name.strip("-")))
    if args.guidance is not None and args.guidance < 0:
        raise NeurodiffError(f"--guidance: expected a value >= 0 (1 = off, 0 = unconditional), got {args.guidance}")
    model = load_model(args.model, device := dist.init())
    sc = model.cfg.sample
    covariates = parse_covariates(args.covariate) or None
    if args.covariates:
        from neurodiff.tasks.generate import read_covariate_table

        if covariates:
            raise NeurodiffError("--covariates and --covariate: give one or the other")
        covariates = read_covariate_table(args.covariates, model.cfg)
    from neurodiff.codec import Identity

    codec = model.codec
    label = None if args.label is not None and args.label.lower() in ("none", "") else args.label
    rows = generate(model.net, model.cfg, args.out, args.n, seed=args.seed, batch=args.batch or sc.batch,
                    label=label, covariates=covariates, codec=None if isinstance(codec, Identity) else codec,
                    guidance=args.guidance if args.guidance is not None else sc.guidance,
                    steps=args.steps or sc.steps, sampler=args.sampler or sc.sampler,
                    exact=not args.fast and sc.exact, digest=model.digest, device=device,
                    progress=not args.no_progress)
    dist.print0(f"wrote {args.n} samples and manifest.csv to {args.out}" if rows is not None else "")
    dist.shutdown()
    return 0


def cmd_volume(args) -> int:
    from neurodiff import dist
    from neurodiff.tasks.volume import generate_volumes
    from neurodiff.train.state import load_model

    for name in ("--n", "--batch", "--steps", "--slices"):
        _positive(name, getattr(args, name.strip("-")))
    if args.guidance is not None and args.guidance < 0:
        raise NeurodiffError(f"--guidance: expected a value >= 0 (1 = off), got {args.guidance}")
    model = load_model(args.model, device := dist.init())
    sc = model.cfg.sample
    generate_volumes(model.net, model.cfg, args.out, args.n, n_slices=args.slices, seed=args.seed,
                     batch=args.batch, guidance=args.guidance if args.guidance is not None else sc.guidance,
                     steps=args.steps or sc.steps, sampler=args.sampler or sc.sampler,
                     exact=not args.fast and sc.exact, digest=model.digest, device=device,
                     progress=not args.no_progress)
    dist.print0(f"wrote {args.n} stacks and manifest.csv to {args.out}")
    dist.shutdown()
    return 0


def cmd_cascade(args) -> int:
    from neurodiff.tasks.cascade_cli import run_cascade
    from neurodiff.train.state import load_model

    for item in args.spec:
        key, _, value = item.partition("=")
        if key not in ("base", "stages", "lowres") or not value:
            raise NeurodiffError(f"{item!r}: expected base=RUN, stages=RUN1,RUN2 or lowres=DIR")
        setattr(args, key, value)
    if not args.stages:
        raise NeurodiffError("stages: give at least one super-resolution stage (stages=RUN1,RUN2)")
    if bool(args.base) == bool(args.lowres):
        raise NeurodiffError("give either a base model (base=RUN) or real low-res images (--lowres DIR)")
    _positive("--n", args.n)
    _positive("--steps", args.steps)
    run_cascade(args, load_model)
    return 0


def cmd_inpaint(args) -> int:
    from neurodiff.tasks.inpaint_cli import run_inpaint
    from neurodiff.train.state import load_model

    if not args.mask and not args.box:
        raise NeurodiffError("give what to fill: --mask FILE (non-zero = fill) and/or --box Y0:Y1,X0:X1")
    run_inpaint(args, load_model)
    return 0


def cmd_translate(args) -> int:
    from neurodiff.tasks.translate_cli import run_translate
    from neurodiff.train.state import load_model

    _positive("--samples", args.samples)
    _positive("--batch", args.batch)
    if args.steps is not None:
        _positive("--steps", args.steps)
    run_translate(args, load_model)
    return 0


def cmd_export(args) -> int:
    from neurodiff.train.state import export_model

    out = export_model(Path(args.run), Path(args.model_dir))
    print(f"exported EMA weights to {out / 'model.safetensors'} and {out / 'config.json'}")
    return 0


def cmd_evaluate(args) -> int:
    from neurodiff.metrics.evaluate import evaluate

    if args.model:
        if args.task != "inpainting":
            raise NeurodiffError("--model: only with --task inpainting (the other tasks compare --real with --fake)")
        from neurodiff import dist
        from neurodiff.metrics.inpainting import evaluate_inpainting, summary_lines
        from neurodiff.train.state import load_model

        m = evaluate_inpainting(load_model(args.model, dist.init()), args.real, args.out, steps=args.steps,
                                jump=args.jump, resample=args.resample, jump_until=args.jump_until, eta=args.eta,
                                tile=args.tile, limit=args.limit, seed=args.seed, masks_per_bin=args.masks_per_bin,
                                classifier=args.classifier, precision=args.precision, batch=args.batch,
                                resume=args.resume)
        print("\n".join(summary_lines(m)) + f"; wrote {Path(args.out) / 'metrics.json'}")
        return 0
    if args.classifier or args.resume:
        raise NeurodiffError(f"--{'classifier' if args.classifier else 'resume'}: only with --task inpainting --model")
    if args.precision != "auto":
        raise NeurodiffError("--precision: only with --task inpainting --model (the precision of its repaints)")
    if not args.fake:
        raise NeurodiffError("--fake: the folder of generated images is required (or --task inpainting --model)")

    if args.task == "volume":
        from neurodiff.metrics.volume import evaluate_volumes

        m = evaluate_volumes(args.real, args.fake, args.out, axis=args.axis)
        print(f"adjacent-slice similarity: generated {m['adjacent_similarity_fake']:.4f}, real "
              f"{m['adjacent_similarity_real']:.4f} ({m['adjacent_similarity_rel_diff']:+.1%}); through-plane "
              f"smoothness: generated {m['through_plane_smoothness_fake']:.3f}, real "
              f"{m['through_plane_smoothness_real']:.3f}; depth Pearson r {m['depth']['pearson_r']:.3f} "
              f"(held-out real {m['depth']['pearson_r_real_heldout']:.3f})")
        print(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'report.html'}")
        return 0
    m = evaluate(args.real, args.fake, args.out, task=args.task, features_path=args.features, repeats=args.repeats,
                 limit=args.limit, mask_dir=args.mask, cells=args.cells, data_range=args.data_range,
                 uncertainty_dir=args.uncertainty)
    keys = [k for k in ("fd", "kid", "precision", "recall", "swd_patches", "ms_ssim_diversity_fake",
                        "ms_ssim_diversity_real") if k in m]
    for k in keys:
        v = m[k]
        print(f"{k}: {v['mean']:.4g} ± {v['sd']:.2g}" if isinstance(v, dict) else f"{k}: {v:.4g}")
    if "paired" in m:
        print("paired: " + ", ".join(f"{k} {v:.4g}" for k, v in m["paired"]["mean"].items()))
    if "uncertainty" in m:
        u = m["uncertainty"]
        print(f"uncertainty: Spearman(std, |error|) {u['spearman_pooled']:.3f} pooled, "
              f"{u['spearman_per_image_mean']:.3f} per image; AUSE {u['ause_pooled']:.3f}")
    for k, v in (m.get("conditioning") or {}).items():
        print(f"conditioning {k}: " + ", ".join(f"{a} {b:.3g}" for a, b in v.items() if isinstance(b, float)))
    print(f"wrote {Path(args.out) / 'metrics.json'} and {Path(args.out) / 'report.html'}")
    return 0


def cmd_train_features(args) -> int:
    from neurodiff.metrics.evaluate import train_features_on_folder

    if args.size < 16:
        raise NeurodiffError(f"--size: expected at least 16 (the network halves it four times), got {args.size}")
    _positive("--steps", args.steps)
    meta = train_features_on_folder(args.data, args.out, size=args.size, steps=args.steps, batch=args.batch,
                                    use_labels=not args.no_labels, seed=args.seed, progress=not args.no_progress)
    print(f"trained a feature network on {meta['num_images']} images ({meta['num_classes']} classes; loss "
          f"{meta['first_loss']:.3f} -> {meta['last_loss']:.3f}); wrote {args.out}")
    return 0


def cmd_demo(args) -> int:
    from neurodiff.demo import run_demo

    run_demo(args.out, minutes=args.minutes, overrides=args.overrides, progress=not args.no_progress,
             from_scratch=args.from_scratch)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"train": cmd_train, "sample": cmd_sample, "volume": cmd_volume, "cascade": cmd_cascade,
               "inpaint": cmd_inpaint, "translate": cmd_translate, "export": cmd_export, "demo": cmd_demo,
               "evaluate": cmd_evaluate, "train-features": cmd_train_features}.get(args.command)
    if handler is None:
        from neurodiff import cli_latent

        handler = {"train-ae": cli_latent.cmd_train_ae, "reconstruct": cli_latent.cmd_reconstruct}[args.command]
    try:
        return handler(args)
    except NeurodiffError as e:
        if args.debug:
            raise
        print(f"neurodiff: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neurodiff: interrupted", file=sys.stderr)
        return 130
    except OSError as e:   # disk full, read-only file system, a file where a folder should be: the path and why
        if args.debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"neurodiff: error: {where}{e.strerror or e} (nothing finished before was changed)", file=sys.stderr)
        return 2
    except Exception as e:  # a bug or an unforeseen failure: still one line, the traceback with --debug
        if args.debug:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"neurodiff: error: {type(e).__name__}: {first} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
