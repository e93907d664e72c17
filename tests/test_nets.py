import pytest
import torch

from simgan.nets import (
    Discriminator,
    PatchProjector,
    Refiner,
    discriminator_preset,
    highpass_residual,
    position_planes,
    refiner_preset,
)


def test_refiner_keeps_gaze_shape_and_range():
    r = Refiner(**refiner_preset("gaze", "paper"))
    x = torch.rand(2, 1, 35, 55) * 2 - 1
    y = r(x)
    assert y.shape == (2, 1, 35, 55)  # H=35, W=55: not transposed
    assert y.min() >= -1 and y.max() <= 1  # tanh output


def test_paper_gaze_discriminator_patch_map_is_9x14():
    d = Discriminator(**discriminator_preset("gaze", "paper"))
    assert d(torch.zeros(3, 1, 35, 55)).shape == (3, 1, 9, 14)


def test_paper_hand_networks_sizes():
    r = Refiner(**refiner_preset("hand", "paper"))
    assert r.stem[0].kernel_size == (7, 7) and len(r.blocks) == 10
    d = Discriminator(**discriminator_preset("hand", "paper"))
    assert d(torch.zeros(1, 1, 224, 224)).shape == (1, 1, 7, 7)


def test_cpu_hand_discriminator_gives_8x8_patches_at_64px():
    d = Discriminator(**discriminator_preset("hand", "cpu"))
    assert d(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 8, 8)


def test_discriminator_is_nonlinear_and_logits_are_unbounded():
    torch.manual_seed(0)
    d = Discriminator()
    a, b = torch.randn(4, 1, 35, 55), torch.randn(4, 1, 35, 55)
    # a linear network would satisfy D(a+b) = D(a) + D(b) - D(0)
    lin = d(a) + d(b) - d(torch.zeros_like(a))
    assert not torch.allclose(d(a + b), lin, atol=1e-4)
    # logits take both signs: no ReLU (or sigmoid) on the output
    out = torch.cat([d(torch.randn(8, 1, 35, 55) * s) for s in (0.1, 1, 10)])
    d.head.bias.data.fill_(-out.mean().item())
    out = torch.cat([d(torch.randn(8, 1, 35, 55) * s) for s in (0.1, 1, 10)])
    assert (out < 0).any() and (out > 0).any()


def test_global_output_gives_one_logit_per_image():
    d = Discriminator(global_output=True)
    assert d(torch.zeros(5, 1, 35, 55)).shape == (5, 1, 1, 1)


@pytest.mark.parametrize("kwargs", [dict(kernel=4), dict(channels=0), dict(blocks=0)])
def test_refiner_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Refiner(**kwargs)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="gaze"):
        refiner_preset("face")
    with pytest.raises(ValueError, match="paper"):
        discriminator_preset("gaze", "huge")


def test_residual_refiner_with_zero_head_is_the_identity():
    r = Refiner(channels=4, blocks=1, residual=True, padding_mode="replicate")
    torch.nn.init.zeros_(r.head.weight)
    torch.nn.init.zeros_(r.head.bias)
    x = torch.rand(2, 1, 35, 55) * 1.8 - 0.9
    assert torch.allclose(r(x), x, atol=1e-5)
    # Saturated inputs too: a depth map's far background is exactly 1.0 (as in every real frame),
    # and a refiner that turns it into 0.995 hands the discriminator a free tell.
    x[:, :, :10] = 1.0
    x[:, :, -3:] = -1.0
    y = r(x)
    assert torch.equal(y[:, :, :10], x[:, :, :10]) and torch.equal(y[:, :, -3:], x[:, :, -3:])


def test_noise_refiner_takes_its_noise_beside_the_image():
    torch.manual_seed(0)
    r = Refiner(channels=4, blocks=1, residual=True, padding_mode="replicate", noise_channels=2)
    assert r.stem[0].in_channels == 3  # image + 2 noise channels in, one image out
    x = torch.rand(3, 1, 16, 16) * 1.8 - 0.9
    z1 = r.draw_noise(x, torch.Generator().manual_seed(0))
    z2 = r.draw_noise(x, torch.Generator().manual_seed(1))
    assert z1.shape == (3, 2, 16, 16)
    assert torch.equal(z1, r.draw_noise(x, torch.Generator().manual_seed(0)))  # a seed gives the same noise
    assert r(x, z1).shape == x.shape
    assert torch.equal(r(x, z1), r(x, z1))
    assert not torch.equal(r(x, z1), r(x, z2))
    # a zero head is still the identity, whatever the noise
    torch.nn.init.zeros_(r.head.weight)
    torch.nn.init.zeros_(r.head.bias)
    assert torch.allclose(r(x, z1), x, atol=1e-5)


def test_noise_of_the_wrong_shape_or_for_a_deterministic_refiner_is_refused():
    r = Refiner(channels=4, blocks=1, noise_channels=1)
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"noise: expected shape \(2, 1, 8, 8\)"):
        r(x, torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="noise_channels=0"):
        Refiner(channels=4, blocks=1)(x, torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="noise_channels"):
        Refiner(noise_channels=-1)
    assert Refiner(channels=4, blocks=1).draw_noise(x) is None


TWIN_KWARGS = dict(channels=4, blocks=2, residual=True, padding_mode="replicate")


def _plain_and(**option) -> tuple[Refiner, Refiner]:
    """A deterministic refiner and one with `option` on, from the same seed: the same weights."""
    torch.manual_seed(0)
    plain = Refiner(**TWIN_KWARGS)
    torch.manual_seed(0)
    return plain, Refiner(**TWIN_KWARGS, **option)


def test_block_noise_starts_as_the_deterministic_refiner_and_learns_how_much_noise_each_channel_takes():
    plain, noisy = _plain_and(block_noise=True)
    assert noisy.noise_planes == 2 and noisy.stem[0].in_channels == 1  # one plane per block, none at the input
    x = torch.rand(3, 1, 16, 16) * 1.8 - 0.9
    z = noisy.draw_noise(x, torch.Generator().manual_seed(0))
    assert z.shape == (3, 2, 16, 16)
    assert torch.equal(noisy(x, z), plain(x))  # zero scales: the same weights, the same function
    with torch.no_grad():
        noisy.blocks[1].noise.scale.fill_(0.5)
    assert not torch.equal(noisy(x, z), plain(x))
    assert torch.equal(noisy(x, z), noisy(x, z))
    with pytest.raises(ValueError, match=r"noise: expected shape \(3, 2, 16, 16\)"):
        noisy(x, z[:, :1])
    both = Refiner(**TWIN_KWARGS, noise_channels=1, block_noise=True)
    assert both.noise_planes == 3 and both(x, both.draw_noise(x)).shape == x.shape


def test_output_noise_is_white_noise_at_a_level_the_refiner_learns_around_a_noise_free_mean():
    plain, noisy = _plain_and(output_noise=True)
    assert noisy.noise_planes == 1 and noisy.stem[0].in_channels == 1  # a plane at the output only
    x = torch.rand(3, 1, 16, 16) * 1.8 - 0.9
    z = noisy.draw_noise(x, torch.Generator().manual_seed(0))
    out, mean = noisy(x, z, with_mean=True)
    assert torch.equal(mean, plain(x))  # the noise-free part is the deterministic refiner
    sigma = torch.nn.functional.softplus(torch.tensor(noisy.OUTPUT_NOISE_OFFSET))
    assert torch.allclose(out - mean, sigma * z, atol=1e-6)  # starts as faint white noise, nowhere clamped
    assert torch.equal(noisy(x, z), out) and not torch.equal(noisy(x, -z), out)
    with torch.no_grad():  # the level follows the image: a scale the features set per pixel
        noisy.noise_scale.weight.fill_(1.0)
    out2, mean2 = noisy(x, z, with_mean=True)
    assert torch.equal(mean2, mean)
    level = ((out2 - mean2) / z).flatten()
    assert level.min() >= 0 and level.std() > 1e-3
    with pytest.raises(ValueError, match=r"then in_channels with output_noise"):
        noisy(x, z[:, :0])
    both = Refiner(**TWIN_KWARGS, noise_channels=1, block_noise=True, output_noise=True)
    assert both.noise_planes == 4 and both(x, both.draw_noise(x)).shape == x.shape
    refined, mean = plain(x, with_mean=True)
    assert refined is mean  # no output noise: one tensor


def test_highpass_residual_is_zero_on_flat_and_linear_images_and_the_highpass_discriminator_sees_it():
    flat = torch.full((1, 1, 8, 8), 0.3)
    ramp = torch.linspace(-1, 1, 8).repeat(1, 1, 8, 1)
    assert torch.allclose(highpass_residual(flat), torch.zeros_like(flat), atol=1e-5)
    assert torch.allclose(highpass_residual(ramp)[..., 1:-1, 1:-1], torch.zeros(1, 1, 6, 6), atol=1e-5)
    assert highpass_residual(ramp + 0.1 * torch.randn(1, 1, 8, 8)).abs().mean() > 0.1  # texture passes
    torch.manual_seed(0)
    d = Discriminator(highpass=True)
    assert d.features[0].in_channels == 2
    x = torch.rand(2, 1, 35, 55) * 2 - 1
    assert d(x).shape == Discriminator()(x).shape == (2, 1, 9, 14)


def test_multiscale_discriminator_judges_each_coarser_scale_with_its_own_network():
    x = torch.rand(2, 1, 35, 55) * 2 - 1
    torch.manual_seed(0)
    single = Discriminator(highpass=True)
    torch.manual_seed(0)
    multi = Discriminator(highpass=True, scales=3)
    # scales=1 is the single-scale D: same first network, same initial weights, same state dict keys
    assert multi.scales == 3 and single.scales == 1
    assert set(single.state_dict()) == {k for k in multi.state_dict() if not k.startswith("coarser.")}
    out = multi(x)
    assert out.shape == (2, 3, 9, 14) and torch.equal(out[:, :1], single(x))
    # scale 1 sees the image average-pooled 2x: an edit inside one 2x2 block that keeps its mean is
    # invisible there (and at 4x), visible at full resolution
    edited = x.clone()
    edited[:, :, 10, 20] += 0.2
    edited[:, :, 11, 21] -= 0.2
    diff = (multi(edited) - out).abs().amax(dim=(0, 2, 3))
    assert diff[0] > 0 and diff[1] == 0 and diff[2] == 0
    # a coarse scale's patch covers twice the image: the left-most patches see columns 0-11 at
    # full resolution (a 23 px receptive field centred on column 0) and 0-23 at 2x, so a change
    # from column 16 on reaches their logits at the coarse scale only
    far = x.clone()
    far[:, :, :, 16:] = -x[:, :, :, 16:]
    diff = (multi(far) - out).abs()[..., :, 0].amax(dim=(0, 2))
    assert diff[0] == 0 and diff[1] > 0
    assert Discriminator(scales=2, global_output=True)(x).shape == (2, 2, 1, 1)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="Discriminator scales"):
            Discriminator(scales=bad)


def test_spectral_norm_discriminator_has_unit_spectral_norm_convolutions():
    torch.manual_seed(0)
    d = Discriminator(spectral_norm=True).train()
    x = torch.rand(4, 1, 35, 55) * 2 - 1
    for _ in range(30):  # power iterations, one per training forward
        d(x)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.05


def test_the_refiners_feature_maps_are_what_its_head_reads_and_encode_sees_the_image_without_noise():
    torch.manual_seed(0)
    r = Refiner(channels=4, blocks=2, residual=True, padding_mode="replicate", noise_channels=1, block_noise=True)
    x = torch.rand(3, 1, 10, 12) * 1.8 - 0.9
    z = r.draw_noise(x, torch.Generator().manual_seed(0))
    maps = r.features(x, z)
    assert [tuple(m.shape) for m in maps] == [(3, 4, 10, 12)] * 3 and r.feature_channels == [4, 4, 4]
    xc = x.clamp(-r.RESIDUAL_CLAMP, r.RESIDUAL_CLAMP)
    by_hand = (torch.tanh(r.head(maps[-1]) + torch.atanh(xc)) + (x - xc)).clamp(-1, 1)
    assert torch.equal(r(x, z), by_hand)
    with torch.no_grad():
        for block in r.blocks:
            block.noise.scale.fill_(1.0)
    encoded = r.encode(x)
    assert all(torch.equal(a, b) for a, b in zip(encoded, r.features(x, torch.zeros_like(z))))
    assert not torch.equal(encoded[-1], r.features(x, z)[-1])


def test_patch_projector_gives_unit_vectors_at_the_sampled_locations():
    torch.manual_seed(0)
    proj = PatchProjector([4, 6], dim=8)
    maps = [torch.randn(2, 4, 5, 7), torch.randn(2, 6, 5, 7)]
    where = [torch.tensor([0, 3, 34]), torch.tensor([1, 2])]
    out = proj(maps, where)
    assert [tuple(v.shape) for v in out] == [(2, 3, 8), (2, 2, 8)]
    assert all(torch.allclose(v.norm(dim=-1), torch.ones(v.shape[:2])) for v in out)
    # location 34 of a 5 x 7 map is row 4, column 6
    moved = [maps[0].clone(), maps[1]]
    moved[0][:, :, 4, 6] += 1.0
    after = proj(moved, where)[0]
    assert torch.equal(after[:, :2], out[0][:, :2]) and not torch.equal(after[:, 2], out[0][:, 2])
    with pytest.raises(ValueError, match="PatchProjector"):
        PatchProjector([], dim=8)


def test_position_planes_are_octave_sinusoids_of_column_and_row_from_the_top_left():
    planes = position_planes(6, 10, 2)  # periods 4 and 8: sin x, cos x, sin y, cos y each
    assert planes.shape == (8, 6, 10) and planes.dtype == torch.float32
    assert torch.allclose(planes[0, 3], torch.tensor([0.0, 1, 0, -1, 0, 1, 0, -1, 0, 1]), atol=1e-6)  # sin 2 pi x / 4
    assert torch.allclose(planes[3, :, 7], torch.tensor([1.0, 0, -1, 0, 1, 0]), atol=1e-6)  # cos 2 pi y / 4
    assert torch.equal(planes[4:, :, :8], position_planes(6, 8, 2)[4:])  # a pixel's code is its own, whatever W
    assert position_planes(4, 4, 0).shape == (0, 4, 4)


def test_a_refiner_with_position_input_can_draw_by_position_and_stays_deterministic():
    torch.manual_seed(0)
    r = Refiner(channels=4, blocks=1, residual=True, padding_mode="replicate", position_octaves=2)
    assert r.stem[0].in_channels == 1 + 8 and r.noise_planes == 0
    flat = torch.zeros(2, 1, 12, 12)
    out = r(flat)
    assert torch.equal(out, r(flat))  # no noise: the same output every time
    assert float(out[0].std()) > 0  # a flat image comes out patterned by position
    torch.manual_seed(0)
    blind = Refiner(channels=4, blocks=1, residual=True, padding_mode="replicate")
    inner = blind(flat)[0, 0, 2:-2, 2:-2]
    assert torch.equal(inner, inner.flatten()[0].expand_as(inner))  # without it, flat stays flat inside
    with pytest.raises(ValueError, match="position_octaves: expected >= 0"):
        Refiner(position_octaves=-1)
