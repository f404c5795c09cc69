"""Media makers: pure functions that turn images and params into media files (video, audio analysis,
meshes, texture maps); the layer between render and artifacts (no store, no Dagster)."""
