"""End to end: a procedural object concept is a clean silhouette that `build_mesh` extrudes into a solid."""

from __future__ import annotations

import numpy as np
from PIL import Image

from echo_pipeline.media.mesh import build_mesh, render_preview
from echo_pipeline.render.backends.procedural import ProceduralBackend
from echo_pipeline.render.requests import RenderRequest

CONCEPT = "concept art of sword design, forged steel, game asset design, clean silhouette, neutral background"


def test_a_rendered_sword_concept_is_extruded_into_a_watertight_upright_blade():
    backend = ProceduralBackend(workers=1)
    concept, texture = (out.image for out in backend.render([
        RenderRequest(prompt=CONCEPT, seed=3, width=256, height=256),
        RenderRequest(prompt="seamless forged steel texture of sword design, tileable", seed=3, width=64, height=64,
                      tiling=True),
    ]))
    result = build_mesh(concept, texture, method="auto", resolution=48)
    assert result.method == "extrude"  # the silhouette is clean: a solid, not a relief plaque
    assert result.stats["watertight"] and result.mesh.is_volume
    size = np.ptp(result.mesh.vertices, axis=0)
    assert max(size[0], size[1]) > 4 * size[2]  # a blade: thin next to its length
    preview = np.asarray(render_preview(result, size=(96, 96)), dtype=np.float64)
    assert preview.std() > 5  # the object shows against the preview's backdrop


def test_a_collection_of_object_concepts_passes_the_projects_uniqueness_check():
    """Items of one kind on a plain backdrop look alike to a perceptual hash unless their poses,
    placement and light spread over the seeds (the framing point): 40 weapons, no near-duplicate."""
    import io
    import itertools

    from echo_pipeline.artifacts.storage import make_thumbnail
    from echo_pipeline.resonance.quality_assessor import PROJECT_DUPLICATE_DISTANCE, hamming, phash_hex

    prompt = "concept art of medieval fantasy weapons, forged steel, game asset design, clean silhouette"
    requests = [RenderRequest(prompt=prompt, seed=1000 + k, width=96, height=96) for k in range(40)]
    hashes = [phash_hex(Image.open(io.BytesIO(make_thumbnail(r.image))))
              for r in ProceduralBackend(workers=2).render(requests)]
    close = [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(hashes), 2)
             if hamming(a, b) <= PROJECT_DUPLICATE_DISTANCE]
    assert not close, close
