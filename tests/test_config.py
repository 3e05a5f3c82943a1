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
