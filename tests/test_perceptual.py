# LPIPS-VGG wrapper: weights only from local files (never downloaded), the distance's basic properties, and agreement
# with the lpips package's own module given the same (seeded random) VGG16 weights.
from __future__ import annotations

import socket
import urllib.request
import warnings

import pytest
import torch
import torch.nn.functional as F

from guide_core.perceptual import VGG16_CONV_INDICES, VGG16_FILE, Perceptual, PerceptualNet
from tests.util import assert_close

# (in, out) channels of torchvision VGG16's 13 convolutions, in features order.
VGG16_CONV_CHANNELS = ((3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
                       (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512))


# A seeded random VGG16 state dict in torchvision's key layout (He-initialised convs, small biases, a stray
# classifier entry as in the real file).
def random_vgg16_state(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for index, (cin, cout) in zip(VGG16_CONV_INDICES, VGG16_CONV_CHANNELS):
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=generator) * (2 / (9 * cin)) ** 0.5
        state[f"features.{index}.bias"] = torch.randn(cout, generator=generator) * 0.01
    state["classifier.6.bias"] = torch.zeros(1000)
    return state


# Smooth seeded images in [-1,1] (a few low-frequency blobs, like a face crop rather than white noise).
def smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=generator) * 2 - 1
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.save(random_vgg16_state(), folder / VGG16_FILE)
    return folder


@pytest.fixture(scope="module")
def net(vgg_file):
    return Perceptual(weights_dir=vgg_file)


def test_identical_images_have_zero_distance(net):
    x = smooth_images(3, 64, seed=1)
    d = net(x, x.clone())
    assert d.shape == (3,)
    assert d.abs().max().item() < 1e-7, f"LPIPS(x, x) = {d.tolist()}"
    assert isinstance(net, PerceptualNet)


def test_distance_grows_with_noise_and_is_symmetric(net):
    x = smooth_images(2, 64, seed=2)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        distances = torch.stack([net(x, x + sigma * noise) for sigma in (0.02, 0.05, 0.1, 0.2, 0.4)])
        print("\nLPIPS vs noise sigma 0.02..0.4:", [[round(v, 4) for v in row] for row in distances.T.tolist()])
        assert (distances[1:] > distances[:-1]).all(), f"not increasing with noise: {distances.T.tolist()}"
        assert (distances > 0).all()
        y = x + 0.1 * noise
        assert_close(net(x, y), net(y, x), 1e-6, "d(x,y) vs d(y,x)")


def test_gradient_flows_into_both_inputs_not_the_weights(net):
    x = smooth_images(2, 64, seed=4).requires_grad_(True)
    y = smooth_images(2, 64, seed=5).requires_grad_(True)
    net(x, y).sum().backward()
    for name, t in (("x", x), ("y", y)):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.lpips.training


def test_matches_the_lpips_module_with_the_same_weights(net):
    # lpips's own construction with its packaged heads (pnet_rand: no download), VGG features copied in by index.
    import lpips
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    state = random_vgg16_state()
    with torch.no_grad():
        for number in range(1, 6):
            for name, module in getattr(reference.net, f"slice{number}").named_children():
                if isinstance(module, torch.nn.Conv2d):
                    module.weight.copy_(state[f"features.{name}.weight"])
                    module.bias.copy_(state[f"features.{name}.bias"])
        x, y = smooth_images(2, 64, seed=6), smooth_images(2, 64, seed=7)
        err = assert_close(net(x, y), reference(x, y).reshape(2), 1e-6, "Perceptual vs lpips.LPIPS")
    print(f"\nPerceptual vs lpips.LPIPS max |error| {err:.2e}")


def test_state_dict_argument_and_bad_state(vgg_file):
    x, y = smooth_images(1, 32, seed=8), smooth_images(1, 32, seed=9)
    from_dict = Perceptual(vgg_state_dict=random_vgg16_state())
    from_file = Perceptual(weights_dir=vgg_file)
    assert_close(from_dict(x, y), from_file(x, y), 0.0, "state_dict vs file")
    broken = {k: v for k, v in random_vgg16_state().items() if k != "features.28.weight"}
    with pytest.raises(ValueError, match=r"missing 1 keys: features\.28\.weight"):
        Perceptual(vgg_state_dict=broken)
    with pytest.raises(ValueError, match="equal shapes"):
        from_dict(x, y[..., :16])


def test_missing_weights_file_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        Perceptual(weights_dir=tmp_path)
    message = str(info.value)
    assert VGG16_FILE in message and str(tmp_path) in message
    assert "python -m guide_core weights fetch vgg16" in message


def test_no_network_access_at_load_or_call(vgg_file, monkeypatch):
    # Any attempt to reach the network (torch.hub, torchvision's downloader, urllib, raw sockets) fails the test.
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    # (guide_core.perceptual imports lpips lazily, inside the constructor, so building is also lpips's first use.)
    loaded = Perceptual(weights_dir=vgg_file)
    x = smooth_images(1, 32, seed=10)
    assert loaded(x, x).item() == 0.0
