"""neurodiff: diffusion models for brain and microscopy images, 2D and 3D."""

__version__ = "0.1.0"
