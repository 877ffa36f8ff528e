"""Neural volume rendering of EG3D tri-planes (Chan et al., CVPR 2022, Sec. 4.1-4.2): camera rays, tri-plane feature
lookup, the small OSG decoder MLP, stratified + importance sampling along each ray, and MipNeRF-style compositing.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from guide_core.eg3d.networks import FullyConnectedLayer

# Axes of the three feature planes, exactly as the original defines them. Projecting a point onto plane i keeps the
# first two columns of coords @ inverse(axes[i]), i.e. (x, y), (x, z) and (z, x); the third is not (y, z) - a known
# quirk of the released models that must be kept for their weights to make sense.
PLANE_AXES = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                           [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                           [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], dtype=torch.float32)
# Coordinate indices each plane reads; indexing equals the matrix product exactly since the axes are permutations.
_PLANE_COORDS = tuple(tuple(int(torch.linalg.inv(axes)[:, j].argmax()) for j in range(2)) for axes in PLANE_AXES)


class RaySampler(nn.Module):
    """Rays through the pixel centres of a resolution x resolution image for OpenCV-convention cameras."""
    def forward(self, cam2world_matrix: torch.Tensor, intrinsics: torch.Tensor, resolution: int):
        n, m = cam2world_matrix.shape[0], resolution ** 2
        device = cam2world_matrix.device
        cam_locs_world = cam2world_matrix[:, :3, 3]
        fx, fy = intrinsics[:, 0, 0], intrinsics[:, 1, 1]
        cx, cy = intrinsics[:, 0, 2], intrinsics[:, 1, 2]
        sk = intrinsics[:, 0, 1]
        grid = torch.arange(resolution, dtype=cam2world_matrix.dtype, device=device)
        uv = torch.stack(torch.meshgrid(grid, grid, indexing="ij")) * (1.0 / resolution) + (0.5 / resolution)
        uv = uv.flip(0).reshape(2, -1).transpose(1, 0).unsqueeze(0).repeat(n, 1, 1)
        x_cam = uv[:, :, 0].view(n, -1)
        y_cam = uv[:, :, 1].view(n, -1)
        z_cam = torch.ones((n, m), device=device, dtype=cam2world_matrix.dtype)
        x_lift = (x_cam - cx.unsqueeze(-1) + cy.unsqueeze(-1) * sk.unsqueeze(-1) / fy.unsqueeze(-1)
                  - sk.unsqueeze(-1) * y_cam / fy.unsqueeze(-1)) / fx.unsqueeze(-1) * z_cam
        y_lift = (y_cam - cy.unsqueeze(-1)) / fy.unsqueeze(-1) * z_cam
        cam_rel_points = torch.stack((x_lift, y_lift, z_cam, torch.ones_like(z_cam)), dim=-1)
        world_rel_points = torch.bmm(cam2world_matrix, cam_rel_points.permute(0, 2, 1)).permute(0, 2, 1)[:, :, :3]
        ray_dirs = F.normalize(world_rel_points - cam_locs_world[:, None, :], dim=2)
        ray_origins = cam_locs_world.unsqueeze(1).repeat(1, ray_dirs.shape[1], 1)
        return ray_origins, ray_dirs


def sample_from_planes(plane_features: torch.Tensor, coordinates: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Bilinear lookup of every point in the three planes; returns [N, 3, M, C] (zeros outside the box_warp cube)."""
    return _grid_sample_planes(plane_features, coordinates, box_warp).permute(0, 1, 3, 2)


def _grid_sample_planes(plane_features: torch.Tensor, coordinates: torch.Tensor, box_warp: float) -> torch.Tensor:
    """grid_sample of all planes at once: [N, 3, C, M]."""
    n, n_planes, c, h, w = plane_features.shape
    m = coordinates.shape[1]
    coordinates = (2 / box_warp) * coordinates
    grid = torch.stack([coordinates[..., list(pair)] for pair in _PLANE_COORDS], dim=1)  # [N, 3, M, 2]
    grid = grid.reshape(n * n_planes, 1, m, 2).to(plane_features.dtype)
    out = F.grid_sample(plane_features.reshape(n * n_planes, c, h, w), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.reshape(n, n_planes, c, m)


def plane_feature_mean(plane_features: torch.Tensor, coordinates: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Mean of the three plane features per point, [N, M, C]: the OSG decoder's input. Averaging in the channels-first
    layout grid_sample returns, then transposing once, avoids a full copy of the 3x larger per-plane tensor.
    """
    return _grid_sample_planes(plane_features, coordinates, box_warp).mean(1).transpose(1, 2)


def ray_limits_box(rays_o: torch.Tensor, rays_d: torch.Tensor, box_side_length: float):
    """Ray/axis-aligned-box intersection for ray_start = ray_end = 'auto' (distance of entry and exit, -1/-2 on a miss).
    """
    o_shape = rays_o.shape
    rays_o = rays_o.detach().reshape(-1, 3)
    rays_d = rays_d.detach().reshape(-1, 3)
    half = box_side_length / 2
    bounds = torch.tensor([[-half] * 3, [half] * 3], dtype=rays_o.dtype, device=rays_o.device)
    is_valid = torch.ones(rays_o.shape[:-1], dtype=torch.bool, device=rays_o.device)
    invdir = 1 / rays_d
    sign = (invdir < 0).long()
    tmin = (bounds.index_select(0, sign[..., 0])[..., 0] - rays_o[..., 0]) * invdir[..., 0]
    tmax = (bounds.index_select(0, 1 - sign[..., 0])[..., 0] - rays_o[..., 0]) * invdir[..., 0]
    tymin = (bounds.index_select(0, sign[..., 1])[..., 1] - rays_o[..., 1]) * invdir[..., 1]
    tymax = (bounds.index_select(0, 1 - sign[..., 1])[..., 1] - rays_o[..., 1]) * invdir[..., 1]
    is_valid[torch.logical_or(tmin > tymax, tymin > tmax)] = False
    tmin, tmax = torch.max(tmin, tymin), torch.min(tmax, tymax)
    tzmin = (bounds.index_select(0, sign[..., 2])[..., 2] - rays_o[..., 2]) * invdir[..., 2]
    tzmax = (bounds.index_select(0, 1 - sign[..., 2])[..., 2] - rays_o[..., 2]) * invdir[..., 2]
    is_valid[torch.logical_or(tmin > tzmax, tzmin > tmax)] = False
    tmin, tmax = torch.max(tmin, tzmin), torch.min(tmax, tzmax)
    tmin[~is_valid] = -1
    tmax[~is_valid] = -2
    return tmin.reshape(*o_shape[:-1], 1), tmax.reshape(*o_shape[:-1], 1)


class OSGDecoder(nn.Module):
    """Small MLP turning the plane-averaged feature into density + 32 features whose first 3 are RGB (EG3D Sec. 4.1)."""
    def __init__(self, n_features: int, options: dict):
        super().__init__()
        self.hidden_dim = 64
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, self.hidden_dim, lr_multiplier=options["decoder_lr_mul"]),
            nn.Softplus(),
            FullyConnectedLayer(self.hidden_dim, 1 + options["decoder_output_dim"],
                                lr_multiplier=options["decoder_lr_mul"]))

    def forward(self, sampled_features: torch.Tensor,
                ray_directions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """sampled_features [N, 3, M, C]; the decoder is view-independent, ray_directions is accepted and unused."""
        return self.decode(sampled_features.mean(1))

    def decode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode plane-averaged features [N, M, C]."""
        n, m, c = x.shape
        x = self.net(x.reshape(n * m, c)).view(n, m, -1)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001  # MipNeRF's widened sigmoid reaches 0 and 1
        return {"rgb": rgb, "sigma": x[..., 0:1]}


def ray_march(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, rendering_options: dict,
              clip_depth: bool = True):
    """Midpoint-rule volume rendering (MipNeRF-style); returns per-ray colour in [-1, 1], depth and sample weights.
    The original clips depth to the extreme sample depths of the batch; clip_depth=False leaves that to the caller.
    """
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    if rendering_options["clamp_mode"] != "softplus":
        raise ValueError(f"only clamp_mode 'softplus' is supported, got {rendering_options['clamp_mode']!r}")
    densities_mid = F.softplus(densities_mid - 1)  # the -1 shift is EG3D's initialisation choice
    alpha = 1 - torch.exp(-densities_mid * deltas)
    alpha_shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2)
    weights = alpha * torch.cumprod(alpha_shifted, -2)[:, :, :-1]
    composite_rgb = torch.sum(weights * colors_mid, -2)
    weight_total = weights.sum(2)
    composite_depth = torch.sum(weights * depths_mid, -2) / weight_total
    composite_depth = torch.nan_to_num(composite_depth, float("inf"))
    if clip_depth:
        composite_depth = torch.clamp(composite_depth, torch.min(depths), torch.max(depths))
    if rendering_options.get("white_back", False):
        composite_rgb = composite_rgb + 1 - weight_total
    return composite_rgb * 2 - 1, composite_depth, weights


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n_importance: int, det: bool = False,
               eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF sampling of a piecewise-constant pdf over bins (NeRF's hierarchical sampling); u fixed when det."""
    n_rays, n_bins = weights.shape
    weights = weights + eps
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)
    if det:
        u = torch.linspace(0, 1, n_importance, device=bins.device, dtype=bins.dtype).expand(n_rays, n_importance)
    else:
        u = torch.rand(n_rays, n_importance, device=bins.device, dtype=bins.dtype)
    u = u.contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp_min(inds - 1, 0)
    above = torch.clamp_max(inds, n_bins)
    inds_sampled = torch.stack([below, above], -1).view(n_rays, 2 * n_importance)
    cdf_g = torch.gather(cdf, 1, inds_sampled).view(n_rays, n_importance, 2)
    bins_g = torch.gather(bins, 1, inds_sampled).view(n_rays, n_importance, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)  # empty bins are never chosen; any value works
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


class ImportanceRenderer(nn.Module):
    # Sample points per chunk of rays: bounds peak inference memory without changing any per-ray arithmetic.
    """Two-pass renderer: stratified coarse samples, then importance samples where the coarse weights are high.
    `deterministic` swaps both random draws for fixed values (half-bin offsets, evenly spaced u), see the fixture
    README.
    """
    chunk_points = 1 << 21

    def forward(self, planes: torch.Tensor, decoder: nn.Module, ray_origins: torch.Tensor,
                ray_directions: torch.Tensor, rendering_options: dict, deterministic: bool = False,
                compiled: bool = False):
        n, m, _ = ray_origins.shape
        opts = rendering_options
        ray_start, ray_end = opts["ray_start"], opts["ray_end"]
        if ray_start == ray_end == "auto":
            ray_start, ray_end = ray_limits_box(ray_origins, ray_directions, box_side_length=opts["box_warp"])
            is_ray_valid = ray_end > ray_start
            if torch.any(is_ray_valid).item():
                ray_start[~is_ray_valid] = ray_start[is_ray_valid].min()
                ray_end[~is_ray_valid] = ray_start[is_ray_valid].max()  # sic: the original uses ray_start here
        samples = opts["depth_resolution"] + max(opts["depth_resolution_importance"], 0)
        step = max(1, self.chunk_points // max(1, n * samples))
        rgbs, depths, weight_sums, lows, highs = [], [], [], [], []
        render_rays = functools.partial(compiled_render_rays(), self) if compiled else self._render_rays
        for s in range(0, m, step):
            part = slice(s, min(m, s + step))
            start = ray_start[:, part] if isinstance(ray_start, torch.Tensor) else ray_start
            end = ray_end[:, part] if isinstance(ray_end, torch.Tensor) else ray_end
            out = render_rays(planes, decoder, ray_origins[:, part], ray_directions[:, part], start, end, opts,
                              deterministic)
            rgbs.append(out[0])
            depths.append(out[1])
            weight_sums.append(out[2])
            lows.append(out[3])
            highs.append(out[4])
        # Depth is clipped to the extreme sample depths over the whole batch, as in the original single pass.
        low, high = torch.stack(lows).min(), torch.stack(highs).max()
        depth = torch.clamp(torch.cat(depths, 1), low, high)
        return torch.cat(rgbs, 1), depth, torch.cat(weight_sums, 1)

    def _render_rays(self, planes, decoder, ray_origins, ray_directions, ray_start, ray_end, opts, deterministic):
        depths_coarse = self.sample_stratified(ray_origins, ray_start, ray_end, opts["depth_resolution"],
                                               opts.get("disparity_space_sampling", False), deterministic)
        batch, num_rays, samples_per_ray, _ = depths_coarse.shape
        coords = (ray_origins.unsqueeze(-2) + depths_coarse * ray_directions.unsqueeze(-2)).reshape(batch, -1, 3)
        out = self.run_model(planes, decoder, coords, None, opts)  # EG3D's decoder ignores view directions
        colors = out["rgb"].reshape(batch, num_rays, samples_per_ray, out["rgb"].shape[-1])
        densities = out["sigma"].reshape(batch, num_rays, samples_per_ray, 1)
        depths = depths_coarse
        n_importance = opts["depth_resolution_importance"]
        if n_importance > 0:
            _, _, weights = ray_march(colors, densities, depths_coarse, opts)
            depths_fine = self.sample_importance(depths_coarse, weights, n_importance, deterministic)
            coords = (ray_origins.unsqueeze(-2) + depths_fine * ray_directions.unsqueeze(-2)).reshape(batch, -1, 3)
            out = self.run_model(planes, decoder, coords, None, opts)
            colors_fine = out["rgb"].reshape(batch, num_rays, n_importance, out["rgb"].shape[-1])
            densities_fine = out["sigma"].reshape(batch, num_rays, n_importance, 1)
            depths, colors, densities = self.unify_samples(depths_coarse, colors, densities,
                                                           depths_fine, colors_fine, densities_fine)
        low, high = torch.min(depths), torch.max(depths)
        # Depth clipping needs the extremes of the whole batch, so the caller does it after the last chunk.
        rgb, depth, weights = ray_march(colors, densities, depths, opts, clip_depth=False)
        return rgb, depth, weights.sum(2), low, high

    def run_model(self, planes, decoder, sample_coordinates, sample_directions, options) -> dict[str, torch.Tensor]:
        """Features, colour and density at arbitrary points (also used for shape extraction)."""
        if hasattr(decoder, "decode"):
            out = decoder.decode(plane_feature_mean(planes, sample_coordinates, box_warp=options["box_warp"]))
        else:
            out = decoder(sample_from_planes(planes, sample_coordinates, box_warp=options["box_warp"]),
                          sample_directions)
        if options.get("density_noise", 0) > 0:
            out["sigma"] = out["sigma"] + torch.randn_like(out["sigma"]) * options["density_noise"]
        return out

    @staticmethod
    def unify_samples(depths1, colors1, densities1, depths2, colors2, densities2):
        all_depths = torch.cat([depths1, depths2], dim=-2)
        all_colors = torch.cat([colors1, colors2], dim=-2)
        all_densities = torch.cat([densities1, densities2], dim=-2)
        _, indices = torch.sort(all_depths, dim=-2)
        all_depths = torch.gather(all_depths, -2, indices)
        all_colors = torch.gather(all_colors, -2, indices.expand(-1, -1, -1, all_colors.shape[-1]))
        all_densities = torch.gather(all_densities, -2, indices.expand(-1, -1, -1, 1))
        return all_depths, all_colors, all_densities

    @staticmethod
    def sample_stratified(ray_origins, ray_start, ray_end, depth_resolution: int,
                          disparity_space_sampling: bool = False, deterministic: bool = False) -> torch.Tensor:
        """Evenly spaced depths jittered by a random fraction of a bin (half a bin when deterministic)."""
        n, m, _ = ray_origins.shape
        device, dtype = ray_origins.device, ray_origins.dtype

        def jitter(like: torch.Tensor) -> torch.Tensor | float:
            return 0.5 if deterministic else torch.rand_like(like)

        if disparity_space_sampling:
            depths = torch.linspace(0, 1, depth_resolution, device=device, dtype=dtype)
            depths = depths.reshape(1, 1, depth_resolution, 1).repeat(n, m, 1, 1)
            depths = depths + jitter(depths) * (1 / (depth_resolution - 1))
            return 1.0 / (1.0 / ray_start * (1.0 - depths) + 1.0 / ray_end * depths)
        if isinstance(ray_start, torch.Tensor):
            steps = torch.arange(depth_resolution, dtype=dtype, device=device) / (depth_resolution - 1)
            depths = (ray_start[None] + steps.reshape(-1, 1, 1, 1) * (ray_end - ray_start)[None]).permute(1, 2, 0, 3)
            delta = (ray_end - ray_start) / (depth_resolution - 1)
            return depths + jitter(depths) * delta[..., None]
        depths = torch.linspace(ray_start, ray_end, depth_resolution, device=device, dtype=dtype)
        depths = depths.reshape(1, 1, depth_resolution, 1)
        depths = depths.repeat(n, m, 1, 1)
        delta = (ray_end - ray_start) / (depth_resolution - 1)
        return depths + jitter(depths) * delta

    @staticmethod
    def sample_importance(z_vals: torch.Tensor, weights: torch.Tensor, n_importance: int,
                          deterministic: bool = False) -> torch.Tensor:
        """Depths drawn from the smoothed coarse weights (max-pool then average-pool, plus a floor of 0.01)."""
        with torch.no_grad():
            batch, num_rays, samples_per_ray, _ = z_vals.shape
            z_vals = z_vals.reshape(batch * num_rays, samples_per_ray)
            weights = weights.reshape(batch * num_rays, -1)
            weights = F.max_pool1d(weights.unsqueeze(1), 2, 1, padding=1)
            weights = F.avg_pool1d(weights, 2, 1).squeeze(1) + 0.01
            z_vals_mid = 0.5 * (z_vals[:, :-1] + z_vals[:, 1:])
            fine = sample_pdf(z_vals_mid, weights[:, 1:-1], n_importance, det=deterministic)
        return fine.detach().reshape(batch, num_rays, n_importance, 1)


@functools.lru_cache(maxsize=1)
def compiled_render_rays():
    """ImportanceRenderer._render_rays through torch.compile, built once per process and shared by every renderer (the
    method reads nothing from the instance). Fusing the per-sample elementwise work (plane mean, decoder activations,
    compositing) makes the renderer about 1.5x faster on a CPU; the first call of each shape compiles (tens of seconds).
    Random ops fall back to ATen, so the stratified jitter draws the same numbers from torch's global stream as eager.
    """
    return torch.compile(ImportanceRenderer._render_rays, dynamic=False, options={"fallback_random": True})
