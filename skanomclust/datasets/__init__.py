"""Data sets: an embedded synthetic texture generator and a loader for image folders."""

from ._folder import load_texture_folder
from ._synthetic import make_synthetic_textures

__all__ = ["load_texture_folder", "make_synthetic_textures"]
