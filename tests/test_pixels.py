"""Pixel observations (obs=rgb): the conv encoder, the random shift, the rgb env, the loss and a short pixel run."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from test_recipes import read_csv, train
from torch import nn
from torch.nn import functional as F

from tdmpc2_trl import _compat
from tdmpc2_trl.config.schema import ConfigError, ModelConfig
from tdmpc2_trl.envs.factory import make_env, task_info
from tdmpc2_trl.envs.render import DMC_CAMERAS
from tdmpc2_trl.learning.loss import TDMPC2Loss
from tdmpc2_trl.networks.pixels import PixelEncoder, RandomShift, pixel_obs_shape
from tdmpc2_trl.networks.world_model import WorldModel
from tdmpc2_trl.planning.planner import TDMPC2Planner
from tdmpc2_trl.run.summary import main as summary_main

OBS = pixel_obs_shape()  # (9, 64, 64)
pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")


def tiny_pixel_model(latent_dim: int = 16) -> WorldModel:
    cfg = ModelConfig(
        latent_dim=latent_dim,
        enc_dim=32,
        mlp_dim=32,
        num_enc_layers=2,
        num_mlp_layers=1,
        num_q=2,
        num_channels=8,
        horizon=3,
    )
    return WorldModel(cfg, OBS, action_dim=1)


def random_pixels(*batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (*batch, *OBS), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- encoder


def test_official_encoder_layers_and_latent_512():
    enc = PixelEncoder(OBS, num_channels=32, latent_dim=512)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (9, 32, 7, 2),
        (32, 32, 5, 2),
        (32, 32, 3, 2),
        (32, 32, 3, 1),
    ]
    assert enc.flat_dim == 512 and isinstance(enc.proj, nn.Identity)  # 32 channels x 4 x 4: no extra Linear
    assert sum(p.numel() for p in enc.parameters()) == 58_272


def test_encoder_output_shape_and_simnorm():
    enc = PixelEncoder(OBS, num_channels=8, latent_dim=16, simnorm_dim=8)
    assert isinstance(enc.proj, nn.Linear) and enc.proj.in_features == 8 * 4 * 4  # latent != flat: a Linear
    z = enc(random_pixels(2, 3))  # any leading dims
    assert z.shape == (2, 3, 16)
    groups = z.unflatten(-1, (-1, 8))
    assert (groups >= 0).all()
    torch.testing.assert_close(groups.sum(-1), torch.ones(2, 3, 2))


def test_encoder_scales_pixels_to_minus_half_half():
    enc = PixelEncoder(OBS, num_channels=8, latent_dim=16)
    pre = enc.convs[0]
    x = torch.tensor([0, 255], dtype=torch.uint8)
    torch.testing.assert_close(pre(x), torch.tensor([-0.5, 0.5]))
    torch.testing.assert_close(enc(random_pixels(2)), enc(random_pixels(2).float()))  # uint8 and float agree


def test_world_model_builds_the_pixel_encoder_and_the_summary_shows_it(capsys):
    wm = tiny_pixel_model()
    assert wm.pixels and wm.obs_shape == OBS and isinstance(wm.encoder.module, PixelEncoder)
    assert wm.encode(random_pixels(4)).shape == (4, 16)
    assert summary_main(["model=5m", "obs=rgb", "action_dim=1"]) == 0
    out = capsys.readouterr().out
    assert "obs shape (9, 64, 64)" in out and "Conv2d(9, 32, kernel_size=(7, 7), stride=(2, 2))" in out
    assert "Trainable Parameters: 58,272" in out


# ---------------------------------------------------------------- random shift


def crop(x: torch.Tensor, pad: int, sx: int, sy: int) -> torch.Tensor:
    """The ``[C, H, W]`` window at offset (sx, sy) of ``x`` padded by ``pad`` (edges replicated)."""
    h, w = x.shape[-2:]
    padded = F.pad(x.float().unsqueeze(0), (pad,) * 4, mode="replicate")[0]
    return padded[:, sy : sy + h, sx : sx + w]


def test_random_shift_is_a_pure_integer_shift():
    x = random_pixels(5)
    shift = torch.tensor([[0, 0], [3, 3], [6, 0], [1, 5], [6, 6]])
    out = RandomShift(pad=3)(x, shift=shift)
    assert out.shape == x.shape and out.dtype == torch.float32
    for n, (sx, sy) in enumerate(shift.tolist()):  # exact up to float rounding (<< one grey level)
        torch.testing.assert_close(out[n], crop(x[n], 3, sx, sy), atol=1e-2, rtol=0)
    torch.testing.assert_close(out[1], x[1].float(), atol=1e-2, rtol=0)  # the centred crop is the input


def test_random_shift_keeps_shape_and_draws_one_shift_per_image():
    torch.manual_seed(0)
    x = random_pixels(4, 3)  # [B, H, C, 64, 64]: every image gets its own shift
    out = RandomShift(pad=4)(x)
    assert out.shape == x.shape
    offsets = set()
    for img, aug in zip(x.reshape(-1, *OBS), out.reshape(-1, *OBS)):
        found = [
            (sx, sy)
            for sx in range(9)
            for sy in range(9)
            if torch.allclose(aug, crop(img, 4, sx, sy), atol=1e-2, rtol=0)
        ]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 1
    assert torch.equal(RandomShift(pad=0)(x), x.float())


# ---------------------------------------------------------------- env


def test_rgb_env_gives_stacked_uint8_frames():
    assert task_info("cartpole-swingup", "rgb").obs_shape == OBS
    assert DMC_CAMERAS == {"quadruped": 2}
    env = make_env("cartpole-swingup", seed=0, obs="rgb")
    assert env.observation_spec["observation"].shape == OBS
    assert env.observation_spec["observation"].dtype == torch.uint8
    rollout = env.rollout(3)
    obs, nxt = rollout["observation"], rollout["next", "observation"]
    assert obs.shape == (3, *OBS) and obs.dtype == torch.uint8 and "pixels" not in rollout.keys()
    assert torch.equal(obs[0, :3], obs[0, 6:])  # after a reset the first frame fills the stack
    assert torch.equal(nxt[:, :6], obs[:, 3:])  # each step shifts the stack by one frame
    assert not torch.equal(nxt[-1, 6:], obs[-1, 6:])  # and appends a new render
    env.close()


def test_rgb_needs_a_dmc_task():
    with pytest.raises(ConfigError, match="obs=rgb needs a DMControl task"):
        task_info("Pendulum-v1", "rgb")
    with pytest.raises(ConfigError, match="obs="):
        task_info("cartpole-swingup", "depth")


# ---------------------------------------------------------------- loss and planner


class Spy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return x.float()


def pixel_batch(B: int = 2, H: int = 3) -> TensorDict:
    nxt = TensorDict(
        observation=random_pixels(B, H, seed=1),
        reward=torch.randn(B, H, 1),
        terminated=torch.zeros(B, H, 1, dtype=torch.bool),
        batch_size=[B, H],
    )
    return TensorDict(observation=random_pixels(B, H), action=torch.rand(B, H, 1) * 2 - 1, next=nxt, batch_size=[B, H])


def test_loss_augments_pixel_batches_and_trains_the_conv_encoder():
    torch.manual_seed(0)
    spy = Spy()
    loss = TDMPC2Loss(tiny_pixel_model(), 0.9, augment=spy)
    out = loss.world_model_loss(pixel_batch())
    assert spy.shapes == [(2, *OBS), (2, 3, *OBS)]  # obs_0 and every next observation
    sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    conv = loss.world_model.encoder.module.convs[1]
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    # pad 0 is the identity: the same loss as no augmentation
    torch.manual_seed(1)
    a = loss.world_model_loss(pixel_batch())["loss_consistency"]
    loss.augment = RandomShift(pad=0)
    torch.manual_seed(1)
    torch.testing.assert_close(loss.world_model_loss(pixel_batch())["loss_consistency"], a)


def test_planner_acts_on_pixel_observations():
    wm = tiny_pixel_model()
    planner = TDMPC2Planner(wm, discount=0.9, horizon=3, num_samples=16, num_pi_trajs=2, num_elites=4, iterations=2)
    td = planner(TensorDict(observation=random_pixels(2), batch_size=[2]))
    assert td["action"].shape == (2, 1) and td["next", "planner_mean"].shape == (2, 3, 1)


# ---------------------------------------------------------------- a short pixel run


@pytest.mark.slow
def test_pixel_run_writes_run_directory(tmp_path):
    run_dir = train(
        tmp_path,
        "task=cartpole-swingup",
        "obs=rgb",
        "steps=250",
        "collector.seed_steps=200",
        "eval.freq=0",
        "eval.episodes=1",
        "checkpoint_freq=0",
    )
    assert [int(r["step"]) for r in read_csv(run_dir / "eval.csv")] == [250]
    assert 0 <= float(read_csv(run_dir / "eval.csv")[0]["episode_reward"]) <= 500
    state = torch.load(run_dir / "checkpoints" / "step_000000250.pt", weights_only=False)
    assert state["config"]["obs"] == "rgb"
    stored = _compat.saved_storage(state["replay_buffer"])
    for key in ("observation", ("next", "observation")):  # frames are stored as uint8
        assert stored[key].dtype == torch.uint8 and stored[key].shape == (250, 1, *OBS)
