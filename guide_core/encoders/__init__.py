"""Inversion encoders: photo -> EG3D W+ offset. GOAE (Yuan et al., ICCV 2023) is the one GUIDE uses."""
from .goae import (GOAEncoder, GOAEWeightsError, check_state_dict, load_goae, pil_bicubic_resize,
                   preprocess_for_goae)
from .swin_v2 import SwinFeatures, SwinTransformerV2, SwinV2Config
# pSp (Richardson et al., CVPR 2021), e4e (Tov et al., SIGGRAPH 2021): photo -> StyleGAN2 FFHQ w+ offset [N, 18, 512]
from .e4e import Encoder4Editing, load_e4e_encoder
from .psp import EncoderWeightsError, GradualStyleEncoder, load_psp_encoder

__all__ = ["GOAEncoder", "GOAEWeightsError", "SwinFeatures", "SwinTransformerV2", "SwinV2Config", "check_state_dict",
           "load_goae", "pil_bicubic_resize", "preprocess_for_goae"]

__all__ += ["Encoder4Editing", "EncoderWeightsError", "GradualStyleEncoder", "load_e4e_encoder", "load_psp_encoder"]
