"""guide: generative identity unlearning for EG3D (GUIDE, Seo et al., CVPR 2024)."""
__version__ = "0.1.0"
