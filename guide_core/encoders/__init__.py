"""Inversion encoders: photo -> EG3D W+ offset. GOAE (Yuan et al., ICCV 2023) is the one GUIDE uses."""
from .goae import (GOAEncoder, GOAEWeightsError, check_state_dict, load_goae, pil_bicubic_resize,
                   preprocess_for_goae)
from .swin_v2 import SwinFeatures, SwinTransformerV2, SwinV2Config

__all__ = ["GOAEncoder", "GOAEWeightsError", "SwinFeatures", "SwinTransformerV2", "SwinV2Config", "check_state_dict",
           "load_goae", "pil_bicubic_resize", "preprocess_for_goae"]
