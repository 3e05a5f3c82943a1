"""Latent diffusion: KL autoencoder (2D/3D), latent cache and scale, covariates by MLP, channels and tokens,
unconditional and conditional sampling from one model, NIfTI export with affine, resume of a sample set."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from neurodiff.cli import main
from neurodiff.data import io
from neurodiff.errors import NeurodiffError
from neurodiff.nn.autoencoder import KLAutoencoder, PatchDiscriminator, kl_loss, ssim_loss
from neurodiff.nn.unet import Cond, UNet

AE_TINY = ["--set", "autoencoder.channels=8", "--set", "autoencoder.channel_mult=[1,2]", "--set",
           "autoencoder.z_channels=2", "--set", "autoencoder.adv_start_nimg=8", "--set", "autoencoder.disc_channels=8",
           "--set", "train.batch=4", "--set", "train.total_nimg=16", "--set", "train.log_every_nimg=4",
           "--set", "train.checkpoint_every_nimg=8", "--set", "train.preview_every_nimg=16", "--set", "train.lr=1e-3"]
LDM_TINY = ["--set", "model.channels=8", "--set", "model.channel_mult=[1,2]", "--set", "model.num_res_blocks=1",
            "--set", "model.attn_levels=[1]", "--set", "model.num_heads=2", "--set", "model.checkpointing=false",
            "--set", "train.batch=4", "--set", "train.total_nimg=16", "--set", "train.log_every_nimg=8",
            "--set", "train.checkpoint_every_nimg=8", "--set", "train.preview_every_nimg=16"]


@pytest.mark.parametrize("dims", [2, 3])
def test_autoencoder_shapes_factor_and_losses(dims):
    ae = KLAutoencoder(dims=dims, channels=8, channel_mult=(1, 2, 2), z_channels=3)
    x = torch.randn(2, 1, *([16] * dims))
    mean, logvar = ae.encode(x)
    assert mean.shape == (2, 3, *([4] * dims)) and ae.factor == 4
    y, m, lv = ae(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert kl_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)) == 0
    assert kl_loss(torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)) == pytest.approx(0.5 * 48)
    assert ssim_loss(x, x).abs() < 1e-5 and ssim_loss(x, torch.zeros_like(x)) > 0.9
    assert PatchDiscriminator(dims, 1, 8)(x).shape[1] == 1
    with pytest.raises(NeurodiffError, match="multiple of 4"):
        ae.encode(torch.randn(1, 1, *([18] * dims)))


def test_unet_covariates_as_channels_and_tokens_change_the_output_and_drop_to_null():
    torch.manual_seed(0)
    net = UNet(dims=2, channels=8, channel_mult=(1, 2), attn_levels=(1,), num_heads=2, num_scalars=2,
               scalar_channels=True, cross_attn=True)
    x, t = torch.randn(2, 1, 8, 8), torch.zeros(2)
    a = net(x, t, Cond(scalars=torch.tensor([[1.0, -1.0], [1.0, -1.0]])))
    b = net(x, t, Cond(scalars=torch.tensor([[-2.0, 0.5], [-2.0, 0.5]])))
    assert not torch.allclose(a, b)
    dropped = net(x, t, Cond(scalars=torch.tensor([[1.0, -1.0], [-2.0, 0.5]]), drop=torch.tensor([True, True])))
    assert torch.allclose(dropped, net(x, t, Cond()), atol=1e-6)     # dropped == no covariates at all
    # each mechanism on its own carries the covariate
    for kw in ({"scalar_channels": True}, {"cross_attn": True}):
        torch.manual_seed(0)
        only = UNet(dims=2, channels=8, channel_mult=(1, 2), attn_levels=(1,), num_heads=2, num_scalars=1, **kw)
        with torch.no_grad():
            only.scalar_mlp[-1].weight.zero_()
            only.scalar_mlp[-1].bias.zero_()
        assert not torch.allclose(only(x, t, Cond(scalars=torch.ones(2, 1))), only(x, t, Cond(scalars=-torch.ones(2, 1))))
    with pytest.raises(NeurodiffError, match="num_scalars"):
        UNet(dims=2, cross_attn=True)


def test_slab_decoding_matches_the_whole_decode_closely():
    from neurodiff.codec import KLCodec

    torch.manual_seed(0)
    ae = KLAutoencoder(dims=3, channels=8, channel_mult=(1, 2), z_channels=2).eval()
    z = torch.randn(1, 2, 24, 6, 6)
    whole = KLCodec(ae).decode(z)
    slabs = KLCodec(ae, slab=4).decode(z)     # default halo: the decoder's receptive field
    assert slabs.shape == whole.shape == (1, 1, 48, 12, 12)
    assert (slabs - whole).abs().max() < 1e-4 * whole.abs().max()     # per-voxel norms: no seams
    thin = KLCodec(ae, slab=4, halo=1).decode(z)
    assert (thin - whole).abs().max() > 1e-2 * whole.abs().max()      # really decoded in parts


def _covariate_folder(root, mni, n=8):
    """n 2D slices 16x16 with a brightness covariate: the image is scaled by it, so it is learnable."""
    rows = []
    for i in range(n):
        b = 0.5 + 0.5 * i / (n - 1)
        sl = (mni[30:158:8, 40:200:10, 60 + 4 * i][:16, :16].astype(np.float32) * b).astype(np.uint8)
        io.write(root / f"s{i}.png", np.ascontiguousarray(sl)[None])
        rows.append({"file": f"s{i}.png", "brightness": f"{b:.4f}"})
    with open(root / "cov.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "brightness"])
        w.writeheader()
        w.writerows(rows)
    return root / "cov.csv"


def test_train_ae_ldm_with_covariates_sample_both_ways_export_and_reconstruct(tmp_path, mni, capsys):
    data = tmp_path / "data"
    cov = _covariate_folder(data, mni)
    ae = tmp_path / "ae"
    assert main(["train-ae", "ae-2d", "--data", str(data), "--out", str(ae), "--no-progress",
                 "--set", "data.crop=[]"] + AE_TINY) == 0
    import json
    recs = [json.loads(line) for line in (ae / "metrics.jsonl").read_text().splitlines()]
    assert {"l1", "ssim", "kl"} <= set(recs[0]) and "adv_g" in recs[-1] and "disc" in recs[-1]  # GAN after warm-up
    assert "adv_g" not in recs[0]
    # resume continues from the checkpoint, the discriminator state included
    assert main(["train-ae", "ae-2d", "--data", str(data), "--out", str(ae), "--resume", "--no-progress",
                 "--set", "train.total_nimg=24"]) == 0
    assert main(["reconstruct", str(ae), "--input", str(data), "--out", str(tmp_path / "rec"), "--no-progress"]) == 0
    rec = io.read(tmp_path / "rec" / "s3.png")[0]
    assert rec.shape == io.read(data / "s3.png")[0].shape and rec.dtype == np.uint8

    ldm = tmp_path / "ldm"
    assert main(["train", "ldm-2d", "--data", str(data), "--codec", str(ae), "--covariates", str(cov), "--out",
                 str(ldm), "--no-progress"] + LDM_TINY) == 0
    assert (ldm / "latents.safetensors").is_file()
    from neurodiff.train.state import load_model

    m = load_model(ldm)
    lat = m.cfg.data.meta["latent"]
    assert m.cfg.data.meta["shape"] == [2, 8, 8] and lat["factor"] == 2 and lat["scale"] > 0
    assert m.cfg.model.num_scalars == 1 and m.cfg.model.cross_attn and m.cfg.model.scalar_channels
    st = m.cfg.data.meta["covariate_stats"]["brightness"]
    assert st["min"] == pytest.approx(0.5) and st["max"] == pytest.approx(1.0)
    # the cached latents are reused by a resumed run (same key): the file is not rewritten
    mtime = (ldm / "latents.safetensors").stat().st_mtime_ns
    assert main(["train", "ldm-2d", "--data", str(data), "--out", str(ldm), "--resume", "--no-progress",
                 "--set", "train.total_nimg=24"]) == 0
    assert (ldm / "latents.safetensors").stat().st_mtime_ns == mtime

    table = tmp_path / "table.csv"
    table.write_text("brightness\n0.6\n0.9\n1.3\n")
    out = tmp_path / "cond"
    assert main(["sample", str(ldm), "--n", "3", "--covariates", str(table), "--out", str(out), "--steps", "3",
                 "--no-progress"]) == 0
    assert "outside the training range" in capsys.readouterr().out     # 1.3 > 1.0: allowed, with a warning
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert [r["covariates"] for r in rows] == ["brightness=0.6", "brightness=0.9", "brightness=1.3"]
    y = io.read(out / "sample_000000.png")[0]
    assert y.shape == (1, 16, 16)                       # decoded to pixels, the training size
    unc = tmp_path / "uncond"
    assert main(["sample", str(ldm), "--n", "2", "--out", str(unc), "--steps", "3", "--no-progress"]) == 0
    assert not np.array_equal(io.read(unc / "sample_000000.png")[0], y)
    # an exported latent model carries its autoencoder and samples the same files
    assert main(["export", str(ldm), str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "codec" / "model.safetensors").is_file()
    assert main(["sample", str(tmp_path / "exp"), "--n", "2", "--out", str(tmp_path / "unc2"), "--steps", "3",
                 "--no-progress"]) == 0
    assert np.array_equal(io.read(tmp_path / "unc2" / "sample_000001.png")[0], io.read(unc / "sample_000001.png")[0])
    # inpainting in latent space: a box is filled, every known pixel is restored exactly
    img = data / "s5.png"
    rep = tmp_path / "inpainted.png"
    assert main(["inpaint", str(ldm), "--image", str(img), "--box", "4:11,3:13", "--out", str(rep), "--steps", "6",
                 "--jump", "2", "--resample", "2", "--covariate", "brightness=0.8", "--no-progress"]) == 0
    x0, x1 = io.read(img)[0][0], io.read(rep)[0][0]
    keep = np.ones(x0.shape, bool)
    keep[4:11, 3:13] = False
    assert np.array_equal(x0[keep], x1[keep]) and not np.array_equal(x0[~keep], x1[~keep])
    # in tiles: each latent tile also refills its neighbours' feathered band (a soft latent mask)
    assert main(["inpaint", str(ldm), "--image", str(img), "--box", "4:11,3:13", "--out", str(rep), "--steps", "6",
                 "--jump", "2", "--resample", "2", "--covariate", "brightness=0.8", "--tile", "8", "--overlap", "4",
                 "--no-progress"]) == 0
    assert "in 9 of 9 tiles" in capsys.readouterr().out.splitlines()[-1]
    x2 = io.read(rep)[0][0]
    assert np.array_equal(x0[keep], x2[keep]) and not np.array_equal(x1[~keep], x2[~keep])
    bad = tmp_path / "bad.csv"
    bad.write_text("age\n3\n")
    assert main(["sample", str(ldm), "--n", "1", "--covariates", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "missing covariate columns ['brightness']" in capsys.readouterr().err


def test_ldm_3d_writes_nifti_with_affine_and_a_rerun_completes_the_set(tmp_path, volume_folder):
    ae = tmp_path / "ae"
    assert main(["train-ae", "ae-3d", "--data", str(volume_folder), "--out", str(ae), "--no-progress",
                 "--set", "data.size=[16,16,16]", "--set", "data.crop=[]", "--set", "autoencoder.checkpointing=true",
                 "--set", "autoencoder.decode_slab=2"] + AE_TINY) == 0
    ldm = tmp_path / "ldm"
    assert main(["train", "ldm-3d", "--data", str(volume_folder), "--codec", str(ae), "--out", str(ldm),
                 "--no-progress", "--set", "data.size=[16,16,16]", "--set", "model.cross_attn=false",
                 "--set", "model.scalar_channels=false"] + LDM_TINY) == 0
    out = tmp_path / "syn"
    assert main(["sample", str(ldm), "--n", "3", "--out", str(out), "--steps", "2", "--no-progress"]) == 0
    x, meta = io.read(out / "sample_000002.nii.gz")
    src_meta = io.read(next(volume_folder.glob("*.nii.gz")))[1]
    assert x.shape == (1, 16, 16, 16) and meta.format == "nifti"
    assert np.allclose(np.asarray(meta.affine)[:3, :3], np.asarray(src_meta.affine)[:3, :3])
    first = (out / "sample_000000.nii.gz").read_bytes()
    (out / "sample_000001.nii.gz").unlink()              # a crash left the set incomplete
    assert main(["sample", str(ldm), "--n", "3", "--out", str(out), "--steps", "2", "--no-progress"]) == 0
    assert (out / "sample_000001.nii.gz").is_file() and (out / "sample_000000.nii.gz").read_bytes() == first
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert [r["file"] for r in rows] == [f"sample_{k:06d}.nii.gz" for k in range(3)]
    with pytest.raises(SystemExit):
        main(["train", "ldm-3d", "--data", str(volume_folder), "--codec"])
    assert main(["train", "ldm-3d", "--data", str(volume_folder), "--codec", str(ldm), "--out",
                 str(tmp_path / "x"), "--set", "data.size=[16,16,16]"]) == 2      # not an autoencoder


def test_perceptual_term_uses_a_local_feature_file_and_reaches_the_decoder(tmp_path, mni, capsys):
    from neurodiff.nn.autoencoder import perceptual_loss

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    x = torch.rand(2, 1, 4, 8, 8)
    assert perceptual_loss(net, x, x) == 0
    y = x.clone().requires_grad_(True)
    loss = perceptual_loss(net, y, x + 0.2 * torch.randn_like(x))    # a volume: its slices through a 2D network
    loss.backward()
    assert loss > 0 and y.grad.abs().sum() > 0
    feats = tmp_path / "feats.pt"
    torch.jit.script(net).save(str(feats))
    data = tmp_path / "data"
    _covariate_folder(data, mni)
    ae = tmp_path / "ae"
    assert main(["train-ae", "ae-2d", "--data", str(data), "--out", str(ae), "--no-progress", "--set", "data.crop=[]",
                 "--set", "autoencoder.perceptual_weight=0.1", "--set",
                 f"autoencoder.perceptual_features={feats}"] + AE_TINY) == 0
    import json
    recs = [json.loads(line) for line in (ae / "metrics.jsonl").read_text().splitlines()]
    assert all(r["perceptual"] > 0 for r in recs)
    assert main(["train-ae", "ae-2d", "--data", str(data), "--out", str(tmp_path / "ae2"), "--no-progress",
                 "--set", "autoencoder.perceptual_weight=0.1"] + AE_TINY) == 2
    assert "autoencoder.perceptual_features" in capsys.readouterr().err
    assert main(["train-ae", "ae-2d", "--data", str(data), "--out", str(tmp_path / "ae3"), "--no-progress",
                 "--set", "autoencoder.perceptual_weight=0.1", "--set",
                 f"autoencoder.perceptual_features={tmp_path / 'none.pt'}"] + AE_TINY) == 2
    assert "none.pt: no such features file" in capsys.readouterr().err
