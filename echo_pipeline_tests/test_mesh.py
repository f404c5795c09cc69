"""3D models from a concept image (media/mesh.py) and the Shap-E image-to-3D path (media/shap_e.py)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from echo_pipeline.errors import BackendUnavailableError, InvalidInputError, NotFoundError
from echo_pipeline.media import mesh as M

trimesh = pytest.importorskip("trimesh")


def sword(size: int = 128) -> Image.Image:
    """A sword-like silhouette (pale blade, dark guard and grip, gold pommel) on a plain grey backdrop."""
    img = Image.new("RGB", (size, size), (196, 200, 206))
    d = ImageDraw.Draw(img)
    s = size / 256
    d.polygon([(128 * s, 14 * s), (140 * s, 40 * s), (138 * s, 170 * s), (118 * s, 170 * s), (116 * s, 40 * s)],
              fill=(150, 160, 175))
    d.rectangle([84 * s, 168 * s, 172 * s, 182 * s], fill=(120, 90, 50))
    d.rectangle([122 * s, 182 * s, 134 * s, 228 * s], fill=(70, 45, 30))
    d.ellipse([118 * s, 224 * s, 138 * s, 244 * s], fill=(180, 150, 60))
    return img


def steel(size: int = 64) -> Image.Image:
    """A seamless brushed-steel-like texture (periodic sinusoids plus periodic noise)."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:size, 0:size] / size
    spectrum = np.fft.fft2(rng.normal(size=(size, size)))
    f = np.fft.fftfreq(size)
    spectrum *= np.exp(-(f[:, None] ** 2 * 400 + f[None, :] ** 2 * 30))  # streaks along x
    noise = np.real(np.fft.ifft2(spectrum))
    noise = (noise - noise.min()) / (np.ptp(noise) + 1e-9)
    value = 0.55 + 0.25 * noise + 0.05 * np.sin(2 * np.pi * (3 * x + 2 * y))
    rgb = np.stack([value * 0.96, value, value * 1.04], -1)
    return Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")


def welded(mesh) -> trimesh.Trimesh:
    """The geometry with coincident vertices merged (UV seams ignored)."""
    m = trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, process=False)
    m.merge_vertices(merge_tex=True, merge_norm=True)
    return m


@pytest.fixture(scope="module")
def sword_result() -> M.MeshResult:
    return M.build_mesh(sword(), steel(), resolution=48)


def test_clean_silhouette_is_extruded_into_a_closed_solid(sword_result):
    r = sword_result
    assert r.method == "extrude"
    assert r.stats["silhouette"]["clean"] is True
    assert r.stats["watertight"] is True
    solid = welded(r.mesh)
    assert solid.is_watertight and solid.is_winding_consistent
    assert solid.volume > 0  # outward normals
    assert r.stats["triangles"] == len(r.mesh.faces) and r.stats["vertices"] == len(r.mesh.vertices)
    lo, hi = np.array(r.stats["bounds"])
    size = hi - lo
    assert size.max() == pytest.approx(1.0, abs=0.03)  # long side is one unit, centred
    assert np.allclose((lo + hi) / 2, 0, atol=1e-6)
    assert size[1] > 1.8 * size[0]  # the sword stands upright (image Y is model Y)
    assert 0.01 < size[2] <= 0.15 + 1e-6  # thinner than `depth`
    # the blade (upper part) is present: the silhouette was not cut to the darker guard and grip
    assert r.mesh.vertices[:, 1].max() > 0.45


def test_extrude_follows_the_silhouette(sword_result):
    """The narrow blade comes out thinner than `depth`; the guard is wider than the blade."""
    v = sword_result.mesh.vertices
    blade = v[v[:, 1] > 0.2]
    guard = v[np.abs(v[:, 1] - (-0.12)) < 0.03]
    assert np.ptp(blade[:, 0]) < 0.12
    assert np.ptp(guard[:, 0]) > 0.3
    assert np.ptp(blade[:, 2]) < 0.1


def test_heightfield_is_a_closed_plaque():
    r = M.build_mesh(sword(), steel(), method="heightfield", resolution=40, depth=0.2)
    assert r.method == "heightfield"
    assert r.stats["watertight"] is True
    solid = welded(r.mesh)
    assert solid.is_watertight and solid.is_winding_consistent and solid.volume > 0
    lo, hi = np.array(r.stats["bounds"])
    assert hi[0] - lo[0] == pytest.approx(1.0) and hi[1] - lo[1] == pytest.approx(1.0)  # square image
    assert hi[2] - lo[2] <= M._PLINTH + 0.2 + 1e-9
    back = np.isclose(r.mesh.vertices[:, 2], lo[2])
    assert back.sum() >= 4 * 40  # a flat back


def test_generative_art_and_noise_still_give_valid_meshes():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8), "RGB")
    r = M.build_mesh(noise, steel(), resolution=32)
    assert r.method == "heightfield"  # no clean silhouette in noise
    assert r.stats["watertight"] is True
    assert np.isfinite(r.mesh.vertices).all()
    uv = np.asarray(r.mesh.visual.uv)
    assert uv.shape == (len(r.mesh.vertices), 2) and uv.min() >= 0 and uv.max() <= 1
    forced = M.build_mesh(noise, None, method="extrude", resolution=32)
    assert forced.method == "extrude" and forced.stats["watertight"] is True


def test_triangle_budget_holds_at_the_largest_resolution():
    r = M.build_mesh(Image.linear_gradient("L").resize((64, 64)), None, method="heightfield", resolution=256)
    assert r.stats["triangles"] <= M.TRIANGLE_BUDGET
    assert r.stats["resolution"] < 256  # coarsened to fit


def test_glb_round_trip_keeps_geometry_uvs_and_the_embedded_texture(sword_result):
    tex = steel()
    data = M.export_glb(sword_result)
    assert data[:4] == b"glTF"
    loaded = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh")
    assert len(loaded.faces) == len(sword_result.mesh.faces)
    assert len(loaded.vertices) == len(sword_result.mesh.vertices)
    assert np.allclose(loaded.vertices, sword_result.mesh.vertices, atol=1e-5)
    uv = np.asarray(loaded.visual.uv)
    assert uv.shape == (len(loaded.vertices), 2)
    assert uv.min() >= 0 and uv.max() <= 1 and np.ptp(uv, axis=0).min() > 0.1
    image = loaded.visual.material.baseColorTexture
    assert image.size == tex.size
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(tex))
    assert welded(loaded).is_watertight


def test_glb_bytes_are_deterministic():
    a = M.export_glb(M.build_mesh(sword(96), steel(), resolution=24))
    b = M.export_glb(M.build_mesh(sword(96), steel(), resolution=24))
    assert a == b


def test_obj_and_mtl_load_back_with_the_texture(sword_result, tmp_path: Path):
    files = M.export_obj(sword_result)
    assert set(files) == {"model.obj", "model.mtl", "texture.png"}
    assert b"mtllib model.mtl" in files["model.obj"]
    assert b"map_Kd texture.png" in files["model.mtl"]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    loaded = trimesh.load(tmp_path / "model.obj", force="mesh")
    assert len(loaded.faces) == len(sword_result.mesh.faces)
    uv = np.asarray(loaded.visual.uv)
    assert uv.min() >= 0 and uv.max() <= 1
    image = loaded.visual.material.image
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(steel()))


def test_preview_shows_the_object_and_is_deterministic(sword_result):
    img = M.render_preview(sword_result, size=(128, 96))
    assert img.mode == "RGB" and img.size == (128, 96)
    px = np.asarray(img).astype(np.float64)
    bg = np.round(np.clip(M._background(128, 96), 0, 1) ** (1 / 2.2) * 255)
    differs = np.abs(px - bg).max(-1) > 24
    # the object covers a sizeable, centred part of the frame (not background only, not all object)
    assert 0.04 < differs.mean() < 0.6
    rows, cols = np.nonzero(differs)
    assert abs(rows.mean() - 48) < 20 and abs(cols.mean() - 64) < 20
    assert np.array_equal(px, np.asarray(M.render_preview(sword_result, size=(128, 96))))


def _quads(order: tuple[int, int]) -> M.MeshResult:
    """A red square in front of a larger blue one (vertex colours), faces listed in `order`."""
    near = np.array([[-0.25, -0.25, 0.2], [0.25, -0.25, 0.2], [0.25, 0.25, 0.2], [-0.25, 0.25, 0.2]])
    far = np.array([[-0.5, -0.5, -0.2], [0.5, -0.5, -0.2], [0.5, 0.5, -0.2], [-0.5, 0.5, -0.2]])
    quad = np.array([[0, 1, 2], [0, 2, 3]])
    parts = [(near, (220, 30, 30)), (far, (30, 30, 220))]
    parts = [parts[i] for i in order]
    vertices = np.concatenate([p for p, _ in parts])
    faces = np.concatenate([quad, quad + 4])
    colours = np.concatenate([np.tile([*c, 255], (4, 1)) for _, c in parts]).astype(np.uint8)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colours, process=False)
    return M.MeshResult(mesh=mesh, method="test", texture=None)


def test_preview_z_buffer_keeps_the_nearest_surface():
    for order in ((0, 1), (1, 0)):
        img = np.asarray(M.render_preview(_quads(order), size=(64, 64), azimuth=0, elevation=0)).astype(int)
        centre, corner = img[32, 32], img[6, 6]
        assert centre[0] > centre[2] + 40  # the red square in front hides the blue one
        assert corner[2] > corner[0] + 40  # the blue one shows around it
    a = M.render_preview(_quads((0, 1)), size=(64, 64), azimuth=0, elevation=0)
    b = M.render_preview(_quads((1, 0)), size=(64, 64), azimuth=0, elevation=0)
    assert np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max() <= 1  # face order does not matter


def test_no_texture_projects_the_concept():
    """The concept becomes the texture, the UVs its pixel places; its backdrop is padded with edge colours."""
    concept = sword(128)
    r = M.build_mesh(concept, None, resolution=32)
    tex, src = np.asarray(r.texture).astype(int), np.asarray(concept).astype(int)
    assert tex.shape == src.shape
    assert np.array_equal(tex[100, 64], src[100, 64])  # the grip, inside the silhouette, is kept
    assert np.abs(tex[4, 4] - [196, 200, 206]).max() > 20  # the backdrop is not
    uv = np.asarray(r.mesh.visual.uv)
    grip = (np.abs(r.mesh.vertices[:, 0]) < 0.03) & (np.abs(r.mesh.vertices[:, 1] + 0.33) < 0.05)
    assert grip.sum() >= 4
    u, v = uv[grip].mean(0)
    assert abs(u * 128 - 64) < 3 and abs((1 - v) * 128 - 103) < 8  # where the grip is in the concept
    wide = Image.new("RGB", (128, 64), (40, 40, 40))
    plaque = M.build_mesh(wide, None, method="heightfield", resolution=16)
    assert np.array_equal(np.asarray(plaque.texture), np.asarray(wide))
    face = plaque.mesh.vertices[:, 2] > plaque.mesh.vertices[:, 2].min() + 1e-6
    face_uv = np.asarray(plaque.mesh.visual.uv)[face]
    assert np.allclose(face_uv.min(0), 0) and np.allclose(face_uv.max(0), 1)  # the whole concept on the face


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concept": "not an image"}, "PIL image"),
        ({"concept": Image.new("RGB", (8, 8))}, "at least 16"),
        ({"texture": Image.new("RGB", (2, 2))}, "at least 4"),
        ({"method": "voxels"}, "not one of"),
        ({"resolution": 4}, "outside"),
        ({"resolution": 32.5}, "integer"),
        ({"depth": 0.0}, "outside"),
        ({"depth": math.nan}, "number"),
        ({"concept": Image.new("RGB", (64, 64), (9, 9, 9)), "method": "extrude"}, "no foreground"),
    ],
)
def test_bad_input_is_an_invalid_input_error(kwargs, message):
    args = {"concept": sword(64), "texture": None, **kwargs}
    concept, texture = args.pop("concept"), args.pop("texture")
    with pytest.raises(InvalidInputError, match=message):
        M.build_mesh(concept, texture, **args)


def test_bad_preview_size_is_an_invalid_input_error(sword_result):
    with pytest.raises(InvalidInputError, match="preview size"):
        M.render_preview(sword_result, size=(8, 8))
    with pytest.raises(InvalidInputError, match="preview size"):
        M.render_preview(sword_result, size="512")  # type: ignore[arg-type]


# --- Shap-E -------------------------------------------------------------------------------------------------


def test_shap_e_without_a_model_says_what_is_missing(tmp_path: Path, monkeypatch):
    from echo_pipeline.media.shap_e import shap_e_mesh

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(BackendUnavailableError, match="no Shap-E model is configured"):
        shap_e_mesh(sword(64), "")
    with pytest.raises(NotFoundError, match="does not exist"):
        shap_e_mesh(sword(64), str(tmp_path / "missing-model"))
    with pytest.raises(BackendUnavailableError, match="not in the local Hugging Face cache"):
        shap_e_mesh(sword(64), "openai/shap-e-img2img")
    with pytest.raises(InvalidInputError, match="steps"):
        shap_e_mesh(sword(64), "openai/shap-e-img2img", steps=0)


def marching_cubes_tables() -> tuple[np.ndarray, np.ndarray]:
    """Shap-E's MeshDecoder lookup tables (`cases` (256, 5, 3) edge triples, `masks` (256, 5)), derived here.

    The real checkpoint ships them as buffers; a random pipeline has zeros (no triangles). Corners are
    numbered x + 2y + 4z (bit set: SDF > 0, inside) and edges as diffusers' `_create_flat_edge_indices`.
    Each cube face pairs its sign changes so that inside corners stay apart (both cubes sharing a face
    decide alike, so surfaces close); the pieces chain into loops, fanned into outward-facing triangles.
    """
    corners = np.array([[c & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=np.float64)
    edges = ([(2 * y + 4 * z, 2 * y + 4 * z + 1) for z in (0, 1) for y in (0, 1)]
             + [(x + 4 * z, x + 4 * z + 2) for z in (0, 1) for x in (0, 1)]
             + [(x + 2 * y, x + 2 * y + 4) for y in (0, 1) for x in (0, 1)])
    edge_of = {frozenset(e): i for i, e in enumerate(edges)}
    rings = []  # each face's corners, counter-clockwise seen from outside the cube
    for axis in range(3):
        for side in (0, 1):
            members = [c for c in range(8) if corners[c, axis] == side]
            normal = np.zeros(3)
            normal[axis] = 1 if side else -1
            u = np.zeros(3)
            u[(axis + 1) % 3] = 1
            v = np.cross(normal, u)
            rel = corners[members] - corners[members].mean(0)
            rings.append([members[i] for i in np.argsort(np.arctan2(rel @ v, rel @ u))])
    cases = np.zeros((256, 5, 3), dtype=np.int64)
    masks = np.zeros((256, 5), dtype=bool)
    for case in range(256):
        inside = [bool((case >> c) & 1) for c in range(8)]
        following: dict[int, int] = {}
        for ring in rings:
            cross = [(edge_of[frozenset((ring[k], ring[(k + 1) % 4]))], inside[ring[(k + 1) % 4]])
                     for k in range(4) if inside[ring[k]] != inside[ring[(k + 1) % 4]]]
            while cross and not cross[0][1]:  # start at a crossing into the inside
                cross = cross[1:] + cross[:1]
            for j in range(0, len(cross), 2):
                following[cross[j + 1][0]] = cross[j][0]
        tris, seen = [], set()
        for start in sorted(following):
            if start in seen:
                continue
            loop = [start]
            while following[loop[-1]] != start:
                loop.append(following[loop[-1]])
            seen.update(loop)
            tris += [(loop[i + 1], loop[i], loop[0]) for i in range(1, len(loop) - 1)]
        assert len(tris) <= 5
        for i, tri in enumerate(tris):
            cases[case, i], masks[case, i] = tri, True
    return cases, masks


def build_tiny_shap_e(folder: Path) -> Path:
    """A random ShapEImg2ImgPipeline a few hundred kB large, saved with save_pretrained.

    Its latent-to-MLP projection is scaled down and the SDF output offset so that the decoded field
    crosses zero inside the volume (random weights alone give a field without a surface); the latent
    still perturbs the MLP, so the seed changes the mesh.
    """
    import torch
    from diffusers import HeunDiscreteScheduler, PriorTransformer, ShapEImg2ImgPipeline
    from diffusers.pipelines.shap_e import ShapERenderer
    from diffusers.pipelines.shap_e.renderer import volume_query_points
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, image_size=32, projection_dim=32, intermediate_size=37,
                                               num_attention_heads=4, num_channels=3, num_hidden_layers=2,
                                               patch_size=8))
    processor = CLIPImageProcessor(crop_size=32, size=32, do_center_crop=True, do_normalize=True, do_resize=True,
                                   image_mean=[0.48145466, 0.4578275, 0.40821073],
                                   image_std=[0.26862954, 0.26130258, 0.27577711], resample=3)
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=16, embedding_dim=32, num_embeddings=32,
                             embedding_proj_dim=32, time_embed_dim=128, num_layers=1, clip_embed_dim=64,
                             additional_embeddings=0, time_embed_act_fn="gelu", norm_in_type="layer",
                             embedding_proj_norm_type="layer", encoder_hid_proj_type=None, added_emb_type=None)
    renderer = ShapERenderer(param_shapes=((8, 93), (8, 8), (8, 8), (8, 8)), d_latent=32, d_hidden=8, n_output=12,
                             background=(0.1, 0.1, 0.1))
    scheduler = HeunDiscreteScheduler(beta_schedule="exp", num_train_timesteps=1024, prediction_type="sample",
                                      use_karras_sigmas=True, clip_sample=True, clip_sample_range=1.0)
    with torch.no_grad():
        cases, masks = marching_cubes_tables()
        renderer.mesh_decoder.cases.copy_(torch.from_numpy(cases))
        renderer.mesh_decoder.masks.copy_(torch.from_numpy(masks))
        for proj in renderer.params_proj.projections.values():
            proj.norm.weight.mul_(0.05)  # the latent's share of the MLP weights (LayerNorm-scaled)
        params = renderer.params_proj(torch.zeros(1, 32, 32))
        for name, param in renderer.mlp.state_dict().items():
            if f"nerstf.{name}" in params:
                param.copy_(params[f"nerstf.{name}"].squeeze(0))
        points = volume_query_points(renderer.volume, 24)[None]
        sdf = renderer.mlp(position=points, direction=None, ts=None, nerf_level="fine",
                           rendering_mode="stf").signed_distance
        middle = float(torch.atanh(sdf.median().clamp(-0.999, 0.999)))
        renderer.mlp.mlp[-1].bias[0] -= middle
    pipe = ShapEImg2ImgPipeline(prior=prior, image_encoder=encoder, image_processor=processor, scheduler=scheduler,
                                shap_e_renderer=renderer)
    pipe.save_pretrained(str(folder))
    return folder


@pytest.mark.torch
@pytest.mark.slow(seconds=10)
def test_shap_e_tiny_pipeline_makes_a_coloured_mesh(tmp_path: Path, monkeypatch):
    from echo_pipeline.media.shap_e import shap_e_mesh

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = build_tiny_shap_e(tmp_path / "tiny-shap-e")
    concept = sword(64)
    r = shap_e_mesh(concept, str(folder), steps=2, seed=1, device="cpu", grid_size=32)
    assert r.method == "shap_e" and r.texture is None
    assert r.stats["triangles"] > 100 and r.stats["vertices"] > 50
    assert r.stats["watertight"] is bool(r.mesh.is_watertight)
    assert r.mesh.is_winding_consistent and r.mesh.volume > 0  # oriented outward
    lo, hi = np.array(r.stats["bounds"])
    assert (hi - lo).max() == pytest.approx(1.0)
    colours = np.asarray(r.mesh.visual.vertex_colors)
    assert colours.shape == (len(r.mesh.vertices), 4) and np.ptp(colours[:, :3]) >= 0
    again = shap_e_mesh(concept, str(folder), steps=2, seed=1, device="cpu", grid_size=32)
    assert np.array_equal(r.mesh.vertices, again.mesh.vertices)  # same seed, same mesh
    loaded = trimesh.load(io.BytesIO(M.export_glb(r)), file_type="glb", force="mesh")
    assert len(loaded.faces) == len(r.mesh.faces)
    files = M.export_obj(r)
    assert set(files) == {"model.obj", "model.mtl"}
    preview = np.asarray(M.render_preview(r, size=(64, 64)))
    assert preview.std() > 5
