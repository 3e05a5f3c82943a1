import pytest

from neurodiff import config
from neurodiff.errors import NeurodiffError


@pytest.mark.parametrize("name", config.list_presets())
def test_every_preset_loads_and_validates(name):
    cfg = config.load(name)
    assert cfg.name == name
    assert cfg.model.dims in (2, 3)


def test_required_presets_exist():
    assert {"tiny", "tiny3d", "mridiff", "zebrafish-depth", "demo"} <= set(config.list_presets())
    m = config.load("mridiff")
    assert (m.diffusion.precond, m.diffusion.vp.T, m.diffusion.loss, m.data.labels) == ("vp", 300, "huber", "folders")
    z = config.load("zebrafish-depth")
    assert z.data.depth_bins == 14 and z.data.size == [64, 64] and z.sample.guidance > 1


def test_overrides_parse_types():
    cfg = config.load("tiny", ["train.lr=1e-4", "model.channel_mult=[1,2,4]", "data.hflip=true", "name=x"])
    assert cfg.train.lr == 1e-4 and cfg.model.channel_mult == [1, 2, 4] and cfg.data.hflip is True
    assert cfg.name == "x"


@pytest.mark.parametrize("override,field", [
    ("train.lrr=1", "train.lrr"),
    ("train.lr=fast", "train.lr"),
    ("train.batch=0", "train.batch"),
    ("diffusion.precond=ddpm", "diffusion.precond"),
    ("model.attn_levels=[7]", "model.attn_levels"),
    ("diffusion.cond_drop_prob=1.5", "diffusion.cond_drop_prob"),
    ("model.dims=4", "model.dims"),
])
def test_bad_fields_name_the_field(override, field):
    with pytest.raises(NeurodiffError) as e:
        config.load("tiny", [override])
    assert field in str(e.value) and "\n" not in str(e.value)


def test_config_round_trips_through_yaml(tmp_path):
    cfg = config.load("zebrafish-depth", ["train.seed=7"])
    config.dump(cfg, tmp_path / "c.yaml")
    assert config.to_dict(config.load(tmp_path / "c.yaml")) == config.to_dict(cfg)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(NeurodiffError, match="tiny3d"):
        config.load("no-such-preset")


def test_config_is_data_not_code(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned > %s']\n" % (tmp_path / "pwned"))
    with pytest.raises(NeurodiffError):
        config.load(p)
    assert not (tmp_path / "pwned").exists()


def test_readme_lists_every_config_field():
    """The README's configuration reference (bench/config_reference.py) names every field with its default."""
    import dataclasses
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    ref = readme[readme.index("## Configuration reference"):readme.index("## Benchmarks and measurements")]
    for cls in (config.NormalizerConfig, config.DataConfig, config.ModelConfig, config.VPConfig,
                config.DiffusionConfig, config.TrainConfig, config.SampleConfig):
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.default_factory() if callable(f.default_factory) else None):
                continue   # a nested section, listed under its own title
            assert f"| `{f.name}` |" in ref, f"README config reference lacks {cls.__name__}.{f.name}"


def test_num_res_blocks_per_level_is_checked():
    cfg = config.load("tiny", ["model.num_res_blocks=[1, 2]"])
    assert cfg.model.num_res_blocks == [1, 2]
    with pytest.raises(NeurodiffError, match="model.num_res_blocks"):
        config.load("tiny", ["model.num_res_blocks=[1, 2, 2]"])   # tiny has 2 levels
    with pytest.raises(NeurodiffError, match="model.num_res_blocks"):
        config.load("tiny", ["model.num_res_blocks=0"])
