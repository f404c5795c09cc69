"""Rendering: prompt engine, style manager, batch processor and image backends."""
